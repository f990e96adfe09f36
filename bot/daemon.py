"""An opt-in warm process for `bot review` (docs/daemon.md).

A fresh `bot review` pays for interpreter start-up, imports, tree-sitter, regex
compiles and rule loading before it reviews anything; a process that has done all
that reviews the seed series several times faster. `bot review --daemon` (or
BOT_DAEMON=1) hands the request to such a process, the way dmypy or eslint_d do:

    client: bot.cli.main -> review_via_daemon       daemon: serve()
    connect <socket dir>/daemon.sock      ------>   accept; SO_PEERCRED: same uid?
    one JSON line {op, argv, env, umask, identity, stdio}
      + fds stdin, stdout, stderr, cwd (SCM_RIGHTS)
                                                    same python, code and rules?
                                          <------   {"status": "ready"}  (its turn)
    "go"                                  ------>   bot.cli.main(argv) with the client's
                                                    fds on 0/1/2, its cwd, environment,
                                                    umask and stdio encodings
                                          <------   {"exit_code": N}
    exit N

The review writes straight to the client's terminal or pipe, so its bytes, isatty()
and the progress line are those of an in-process run. Anything short of "ready"
("stale", "busy", "refused", no socket, a connection that breaks) and the client
reviews in-process exactly as without --daemon, after starting a new daemon in the
background when there was none or it was stale. Once "go" is sent the daemon may
have written, so a review is never run twice.

The client side (review_via_daemon and what it calls) imports only os, sys, stat,
socket and json: it runs before bot.cli imports anything heavy. The daemon side
(serve) imports the review pipeline once and keeps it warm until it has been idle
for BOT_DAEMON_IDLE_TIMEOUT seconds (default 900).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys

from bot.private import default_cache_dir, private_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (client start-up)
if TYPE_CHECKING:
    import socket
    import subprocess
    import threading
    from collections.abc import Callable, Sequence
    from types import FrameType
    from typing import Any, TextIO

RUNTIME_NAME = "mmlc-bot"  # $XDG_RUNTIME_DIR/<this>/daemon.sock
SOCKET_NAME = "daemon.sock"
LOCK_NAME = "daemon.lock"  # flock()ed by the live daemon; holds its pid
LOG_NAME = "daemon.log"  # the daemon's own stdout/stderr (never a review's)
IDLE_TIMEOUT_ENV = "BOT_DAEMON_IDLE_TIMEOUT"
FAULT_PAUSE_ENV = "BOT_FAULT_PAUSE"  # test-only pause points; never set in production
DEFAULT_IDLE_TIMEOUT = 900.0  # seconds without a review before the daemon exits
QUEUE_MAX = 4  # clients waiting for their turn; one more is told "busy"
TURN_WAIT = 10.0  # seconds a queued client waits for its turn before "busy"
CONNECT_TIMEOUT = 2.0  # client: connect and hand over the request
READY_TIMEOUT = TURN_WAIT + 5.0  # client: no answer by then -> review in-process
HANDSHAKE_TIMEOUT = 5.0  # daemon: reading a request, waiting for "go"
LOCK_WAIT = 10.0  # a new daemon waits this long for an exiting one to let go
LOG_MAX_BYTES = 1024 * 1024  # the log is emptied at start-up when larger
EXIT_INTERNAL = 3  # bot.errors.EXIT_INTERNAL, without importing it here
EXIT_INTERRUPTED = 130
_SUN_PATH_MAX = 107  # bytes of a unix socket path (108 with the NUL)
_MAX_LINE = 8 * 1024 * 1024


# --------------------------------------------------------------------- where


def socket_dir() -> str:
    """$XDG_RUNTIME_DIR/mmlc-bot, else the cache directory (BOT_CACHE_DIR, else
    bot.private.default_cache_dir(), which imports nothing heavy)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.abspath(os.path.join(runtime, RUNTIME_NAME))
    cache = os.environ.get("BOT_CACHE_DIR")
    if cache:
        return os.path.abspath(cache)
    return os.path.abspath(default_cache_dir())


def socket_path(directory: str) -> str:
    return os.path.join(directory, SOCKET_NAME)


def _package_dir() -> str:
    return os.path.dirname(os.path.realpath(__file__))


def identity() -> dict[str, str]:
    """What a daemon must share with a client to review for it: the interpreter
    (resolved, so `bot` and `python -m bot` of one venv agree; sys.prefix tells
    venvs of one interpreter apart), the bot package it imports, and the hash
    seed when the client fixed one."""
    return {
        "executable": os.path.realpath(sys.executable),
        "prefix": sys.prefix,
        "version": sys.version,
        "package": _package_dir(),
        "hashseed": os.environ.get("PYTHONHASHSEED", ""),
    }


def idle_timeout_from_env() -> float:
    """BOT_DAEMON_IDLE_TIMEOUT in seconds (default 900); a bad value is the default."""
    raw = os.environ.get(IDLE_TIMEOUT_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_IDLE_TIMEOUT
    return value if value > 0 else DEFAULT_IDLE_TIMEOUT


# ------------------------------------------------------------------ protocol


class _Lines:
    """Newline-terminated JSON objects read from a socket (the first read may carry
    file descriptors)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def read_raw(self, maxfds: int = 0) -> tuple[bytes | None, list[int]]:
        """One line without its newline (None at end of stream), and the fds that
        came with the first chunk when maxfds > 0."""
        import socket

        fds: list[int] = []
        while b"\n" not in self.buf:
            if maxfds and not fds:
                flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
                chunk, got, _, _ = socket.recv_fds(self.sock, 65536, maxfds, flags)
                fds.extend(got)
            else:
                chunk = self.sock.recv(65536)
            if not chunk:
                return None, fds
            self.buf += chunk
            if len(self.buf) > _MAX_LINE:
                raise ValueError("request too long")
        line, _, self.buf = self.buf.partition(b"\n")
        return line, fds

    def read(self) -> dict[str, Any] | None:
        """The next object, or None at end of stream; ValueError when it is not one."""
        line, _ = self.read_raw()
        return None if line is None else _decode(line)


def _decode(line: bytes) -> dict[str, Any]:
    import json

    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _send(sock: socket.socket, obj: dict[str, object]) -> None:
    import json

    sock.sendall(json.dumps(obj).encode() + b"\n")


def _peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    import socket
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _connect(path: str, timeout: float) -> socket.socket:
    """A connected socket to a daemon of this user; OSError otherwise
    (FileNotFoundError / ConnectionRefusedError: there is none)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        if _peer_uid(sock) != os.getuid():
            raise PermissionError(f"{path}: served by another user")
    except BaseException:
        sock.close()
        raise
    return sock


def ask(directory: str, op: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The daemon's answer to a one-line request ("status", "stop"), or None when
    no daemon answers at `directory`."""
    path = socket_path(directory)
    try:
        sock = _connect(path, timeout)
    except OSError:
        return None
    try:
        _send(sock, {"op": op})
        return _Lines(sock).read()
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


# -------------------------------------------------------------------- client


def review_via_daemon(argv: list[str]) -> int | None:
    """Have the daemon run `bot <argv>` (a review); its exit code, or None when this
    process must run it itself (no usable daemon: nothing was written)."""
    try:
        return _review_via_daemon(argv)
    except KeyboardInterrupt:
        # the socket is closed by now: the daemon drops the review (docs/daemon.md)
        print("bot: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _stdio() -> list[dict[str, object]] | None:
    """Encoding and buffering of this process's sys.stdin/stdout/stderr, which must
    be the real fds 0, 1 and 2 (not a capture object: its output would be lost)."""
    spec: list[dict[str, object]] = []
    for fd, stream in enumerate((sys.stdin, sys.stdout, sys.stderr)):
        try:
            if stream is None or stream.fileno() != fd:
                return None
        except (OSError, ValueError):
            return None
        spec.append(
            {
                "encoding": stream.encoding,
                "errors": stream.errors,
                "line_buffering": bool(getattr(stream, "line_buffering", False)),
                "write_through": bool(getattr(stream, "write_through", False)),
            }
        )
    return spec


def _review_via_daemon(argv: list[str]) -> int | None:
    directory = socket_dir()
    path = socket_path(directory)
    if len(os.fsencode(path)) > _SUN_PATH_MAX or not private_dir(directory):
        return None
    stdio = _stdio()
    if stdio is None:
        return None
    umask = os.umask(0o077)
    os.umask(umask)
    import json
    import socket

    request = {
        "op": "review",
        "argv": list(argv),
        "argv0": sys.argv[0] if sys.argv else "bot",
        "env": dict(os.environ),
        "umask": umask,
        "identity": identity(),
        "stdio": stdio,
    }
    payload = json.dumps(request).encode("utf-8", "surrogateescape") + b"\n"
    try:
        sock = _connect(path, CONNECT_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):
        start_daemon(directory)
        return None
    except OSError:
        return None
    try:
        cwd = os.open(".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
    except OSError:
        sock.close()
        return None
    try:
        try:
            sent = socket.send_fds(sock, [payload], [0, 1, 2, cwd])
            if sent < len(payload):
                sock.sendall(payload[sent:])
            sock.settimeout(READY_TIMEOUT)
            lines = _Lines(sock)
            reply = lines.read()
        except (OSError, ValueError):
            return None
        status = reply.get("status") if reply else None
        if status != "ready":
            if status == "stale":
                start_daemon(directory)
            return None
        try:
            sock.sendall(b"go\n")
        except OSError:
            return None
        # From here on the daemon may have written: never review a second time.
        sock.settimeout(None)
        try:
            final = lines.read()
        except (OSError, ValueError):
            final = None
        code = final.get("exit_code") if final else None
        if not isinstance(code, int) or isinstance(code, bool):
            print(
                "bot: internal error: the review daemon stopped during the review "
                f"(its log: {os.path.join(directory, LOG_NAME)})",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        return code
    finally:
        sock.close()
        os.close(cwd)


_SPAWNED: list[subprocess.Popen[bytes]] = []


def start_daemon(directory: str, idle_timeout: float | None = None) -> int | None:
    """Start a daemon for `directory` in the background (a new session, stdio on
    its log file), importing the same bot package as this process; its pid, or
    None when it could not be started. A daemon that finds another one serving
    exits at once, so starting one too many is harmless."""
    import subprocess

    try:
        log = os.open(
            os.path.join(directory, LOG_NAME),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
            0o600,
        )
    except OSError:
        return None
    env = dict(os.environ)
    root = os.path.dirname(_package_dir())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "bot.daemon", "--socket-dir", directory]
    if idle_timeout is not None:
        cmd += ["--idle-timeout", repr(idle_timeout)]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            env=env,
            start_new_session=True,
        )
    except OSError:
        return None
    finally:
        os.close(log)
    _SPAWNED.append(proc)  # not reaped here: it outlives this process
    return proc.pid


# -------------------------------------------------------------------- daemon


class _Cancelled(BaseException):
    """Raised in the review (main) thread when its client has gone: not an
    Exception, so bot.cli.main does not turn it into an exit code."""


class _Job:
    """One client's review: its connection, request and file descriptors."""

    def __init__(self, conn: socket.socket, lines: _Lines, request: dict[str, Any], fds: list[int]):
        import threading

        self.conn = conn
        self.lines = lines
        self.request = request
        self.fds = fds
        # queued -> started -> running -> finishing -> done; or abandoned (busy),
        # dropped (no "go"), cancelled (the client went away while it ran)
        self.state = "queued"
        self.lock = threading.Lock()
        self.started = threading.Event()  # the main thread took it
        self.decided = threading.Event()  # running, or dropped

    def close_fds(self) -> None:
        with self.lock:
            fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def rules_stamp(rules_dir: str) -> str:
    """Path, size and mtime of every file under the rules directory: some rule data
    is kept in memory for the life of a process, so an edit makes the daemon stale."""
    from pathlib import Path

    from bot.cache import stamp_files

    return stamp_files(p for p in Path(rules_dir).rglob("*") if p.is_file())


class Server:
    """The daemon: one listening socket, reviews run one at a time in the main thread."""

    def __init__(
        self, directory: str, idle_timeout: float, code_fingerprint: str, lock_fd: int
    ) -> None:
        import queue
        import threading
        import time

        from bot.config import Settings

        self.directory = directory
        self.path = socket_path(directory)
        self.idle_timeout = idle_timeout
        self.code_fingerprint = code_fingerprint
        self.rules_dir = str(Settings().rules_dir)
        self.rules = rules_stamp(self.rules_dir)
        self.identity = identity()
        self.lock_fd = lock_fd
        self.pid = os.getpid()
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.last_active = self.started
        self.served = 0
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.lock = threading.Lock()
        self.stop_reason: str | None = None
        self.closing = threading.Event()
        self.in_review = False
        self.warming_up = True  # until _warm_up() is done: clients queue meanwhile
        self.main_ident = threading.get_ident()
        self.running: _Job | None = None
        # the daemon's own fds 0-2 (/dev/null, the log): a review borrows 0-2
        self.saved_fds = [os.dup(0), os.dup(1), os.dup(2)]
        self.log_file = os.fdopen(os.dup(2), "a", buffering=1, encoding="utf-8", errors="replace")
        self.listener: socket.socket | None = None
        self.accepter: threading.Thread | None = None
        # test-only pause points (workers/faults.py has the workers'); read now, as a
        # review replaces os.environ with its client's
        self.fault_points = {
            p.strip() for p in os.environ.get(FAULT_PAUSE_ENV, "").split(",") if p.strip()
        }
        self.fault_seconds = float(os.environ.get(FAULT_PAUSE_ENV + "_SECONDS", "600") or 600)

    # ---- logging and status

    def log(self, message: str) -> None:
        import time

        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with contextlib.suppress(OSError, ValueError):
            self.log_file.write(f"{stamp} bot daemon[{self.pid}]: {message}\n")

    def status(self) -> dict[str, object]:
        import time

        return {
            "status": "running",
            "pid": self.pid,
            "socket": self.path,
            "uptime": round(time.monotonic() - self.started, 3),
            "served": self.served,
            "queued": self.jobs.qsize(),
            "busy": self.running is not None,
            "warming_up": self.warming_up,
            "idle_timeout": self.idle_timeout,
            "rss_kb": rss_kb(),
            "python": sys.executable,
            "package": self.identity["package"],
        }

    def request_stop(self, reason: str) -> None:
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        self.close_listener()

    # ---- life cycle

    def run(self) -> int:
        import signal
        import socket
        import threading

        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        listener.settimeout(0.5)
        self.listener = listener
        signal.signal(signal.SIGUSR1, self._on_cancel)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        self.log(f"serving {self.path} (idle timeout {self.idle_timeout:g} s)")
        self.accepter = threading.Thread(target=self._accept_loop, name="accept", daemon=True)
        self.accepter.start()
        self._warm_up()
        self.warming_up = False
        try:
            self._loop()
        finally:
            self.close_listener()
            self._drain()
            self.log(f"exiting ({self.stop_reason}); {self.served} review(s) served")
        return 0

    def _warm_up(self) -> None:
        """Import what a review uses and load the rules, so the first client does not
        pay for it either."""
        try:
            import bot.analyze.cfunc
            import bot.analyze.simulate
            import bot.apply
            import bot.assemble
            import bot.cli
            import bot.ingest
            import bot.pipeline
            import bot.report
            from bot import cache
            from bot.config import load_settings
            from bot.pipeline import load_checks

            settings = load_settings()
            cache.configure(settings.cache_dir)
            load_checks(settings)
            cache.flush()
            bot.cli.build_parser()
        except Exception as exc:  # a broken rule file: every review reports it itself
            self.log(f"warm-up: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        import queue
        import time

        while True:
            if self.stop_reason is not None:
                return
            remaining = self.idle_timeout - (time.monotonic() - self.last_active)
            if remaining <= 0 and self.jobs.empty():
                self.request_stop("idle")
                return
            try:
                job = self.jobs.get(timeout=max(0.01, min(remaining, 0.5)))
            except queue.Empty:
                continue
            try:
                self._run(job)
            finally:
                self.last_active = time.monotonic()

    def close_listener(self) -> None:
        """Stop accepting: the socket path goes first, so a new client finds no
        daemon (and starts one, which waits for this one's lock)."""
        import socket

        with self.lock:
            if self.closing.is_set():
                return
            self.closing.set()
        # the path is ours: no other daemon binds it while we hold the lock
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)

    def _drain(self) -> None:
        """Tell every client still queued to review in-process."""
        import queue

        if self.accepter is not None:
            self.accepter.join(timeout=2.0)
        if self.listener is not None:
            self.listener.close()
        answer = "stale" if self.stop_reason == "stale" else "busy"
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            self._refuse(job, answer)

    def _refuse(self, job: _Job, answer: str) -> None:
        with job.lock:
            if job.state != "queued":
                return
            job.state = "abandoned"
        with contextlib.suppress(OSError):
            _send(job.conn, {"status": answer})
        job.close_fds()
        job.started.set()
        job.decided.set()

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # the main loop sees it within half a second, after the review it may be running
        if self.stop_reason is None:
            self.stop_reason = "signal"

    def _on_cancel(self, signum: int, frame: FrameType | None) -> None:
        # no job.lock here: the main thread may hold it when the signal arrives
        job = self.running
        if self.in_review and job is not None and job.state == "cancelled":
            raise _Cancelled

    # ---- connections (one thread each)

    def _accept_loop(self) -> None:
        import threading

        listener = self.listener
        assert listener is not None
        while not self.closing.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.closing.is_set():
                    return
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        job: _Job | None = None
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            if _peer_uid(conn) != os.getuid():
                return
            lines = _Lines(conn)
            raw, fds = lines.read_raw(maxfds=4)
            if raw is None:
                return
            request = _decode(raw)
            op = request.get("op")
            if op == "status":
                _send(conn, self.status())
                return
            if op == "stop":
                _send(conn, {"status": "stopping", "pid": self.pid})
                self.request_stop("stop")
                return
            verdict = self._verdict(request, fds)
            if verdict is not None:
                _send(conn, {"status": verdict})
                if verdict == "stale":
                    self.log("stale: code, rules or interpreter changed; exiting")
                    self.request_stop("stale")
                return
            job = _Job(conn, lines, request, fds)
            fds = []
            with self.lock:
                full = self.stop_reason is not None or self.jobs.qsize() >= QUEUE_MAX
                if not full:
                    self.jobs.put(job)
            if full:
                self._refuse(job, "busy")
                return
            if not job.started.wait(TURN_WAIT):
                self._refuse(job, "busy")
            job.decided.wait()
            if job.state in ("running", "finishing", "done", "cancelled"):
                self._watch(job)
        except (OSError, ValueError) as exc:
            self.log(f"connection: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug here must not stop the daemon
            self.log(f"connection: unexpected {type(exc).__name__}: {exc}")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if job is not None:
                job.close_fds()
            conn.close()

    def _verdict(self, request: dict[str, Any], fds: list[int]) -> str | None:
        """None when this daemon can serve the request, else what to answer."""
        if request.get("op") != "review" or not _well_formed(request) or len(fds) != 4:
            return "refused"
        argv = request["argv"]
        if not argv or argv[0] != "review":
            return "refused"  # only reviews; anything else runs in its own process
        if self.stop_reason is not None:
            return "stale" if self.stop_reason == "stale" else "busy"
        theirs = request["identity"]
        ours = self.identity
        seed = theirs.get("hashseed", "")
        if (
            theirs.get("executable") != ours["executable"]
            or theirs.get("prefix") != ours["prefix"]
            or theirs.get("version") != ours["version"]
            or theirs.get("package") != ours["package"]
            or (seed not in ("", "random") and seed != ours["hashseed"])
        ):
            return "stale"
        from bot.cache import code_fingerprint

        if code_fingerprint.__wrapped__() != self.code_fingerprint:
            return "stale"
        if rules_stamp(self.rules_dir) != self.rules:
            return "stale"
        return None

    def _watch(self, job: _Job) -> None:
        """While the review runs, a client that goes away (Ctrl-C, killed) cancels it."""
        try:
            data = job.conn.recv(16)
        except OSError:
            data = b""
        del data  # any byte or the end of the stream: the client is done with us
        self._cancel(job)

    def _cancel(self, job: _Job) -> None:
        import signal

        with job.lock:
            if job.state != "running":
                return
            job.state = "cancelled"
            # nothing more reaches the user's terminal; then stop the review
            devnull = os.open(os.devnull, os.O_RDWR)
            try:
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
            finally:
                os.close(devnull)
            self.log("client went away: review cancelled")
            signal.pthread_kill(self.main_ident, signal.SIGUSR1)

    # ---- the review (main thread)

    def _run(self, job: _Job) -> None:
        with job.lock:
            if job.state != "queued":
                return
            job.state = "started"
        job.started.set()
        go = None
        try:
            _send(job.conn, {"status": "ready"})
            go, _ = job.lines.read_raw()
        except (OSError, ValueError):
            go = None
        if go != b"go":
            with job.lock:
                job.state = "dropped"
            job.close_fds()
            job.decided.set()
            return
        job.conn.settimeout(None)
        with job.lock:
            job.state = "running"
        self.running = job
        job.decided.set()
        try:
            self._fault_pause(job)
            code = self._review(job)
        finally:
            self.running = None
            self.served += 1
        with contextlib.suppress(OSError):
            _send(job.conn, {"exit_code": code})
        try:
            import socket

            job.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _review(self, job: _Job) -> int:
        """bot.cli.main(argv) as if it ran in the client: its fds on 0/1/2, its
        cwd, environment, umask, argv[0] and stdio encodings; all restored after."""
        import bot.cli

        request = job.request
        saved_streams = (sys.stdin, sys.stdout, sys.stderr)
        saved_argv = sys.argv
        saved_env = dict(os.environ)
        saved_umask = os.umask(int(request["umask"]))
        streams: list[TextIO] = []
        code = EXIT_INTERNAL
        try:
            if not self._take_client_fds(job):
                return EXIT_INTERRUPTED  # the client went before the review began
            streams = _std_streams(request["stdio"])
            _set_environ(request["env"])
            sys.stdin, sys.stdout, sys.stderr = streams
            sys.argv = [request["argv0"], *request["argv"]]
            try:
                try:
                    self.in_review = True
                    # a cancel from before in_review was set sent a signal that did
                    # nothing; one from after it raises in the review
                    with job.lock:
                        cancelled = job.state == "cancelled"
                    if cancelled:
                        raise _Cancelled
                    code = _call(bot.cli.main, request["argv"])
                finally:
                    self.in_review = False
            except _Cancelled:
                self.in_review = False
                code = EXIT_INTERRUPTED
        except Exception as exc:  # setting up the client's process state failed
            self.log(f"review: {type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                os.write(2, f"bot: internal error: review daemon: {exc}\n".encode())
        finally:
            with job.lock:
                if job.state == "running":
                    job.state = "finishing"
            for stream in streams:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()  # flushes to the client's fd while it is still on 0-2
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            sys.argv = saved_argv
            for target in (0, 1, 2):
                os.dup2(self.saved_fds[target], target)
            os.chdir("/")
            _set_environ(saved_env)
            os.umask(saved_umask)
            with job.lock:
                if job.state == "finishing":
                    job.state = "done"
        return code

    def _fault_pause(self, job: _Job) -> None:
        """Test-only: with BOT_FAULT_PAUSE=daemon:before-review in the daemon's
        environment, a review that has started (status says busy) waits here, before
        it takes the client's fds, until its client has gone (or for
        BOT_FAULT_PAUSE_SECONDS, default 600): the window in which a Ctrl-C must
        still drop it. Unset, as always in production, it returns at once."""
        import time

        if "daemon:before-review" not in self.fault_points:
            return
        self.log("fault pause: daemon:before-review")
        deadline = time.monotonic() + self.fault_seconds
        while job.state == "running" and time.monotonic() < deadline:
            time.sleep(0.02)

    def _take_client_fds(self, job: _Job) -> bool:
        """Put the client's fds on 0-2 and chdir to its cwd; False (and nothing
        changed) when the client has gone already.

        The fds change hands under the job's lock: the connection thread cancels
        under it too (pointing 0-2 at /dev/null) and closes the job's fds once
        the client has gone, so a cancel can never be undone by putting the client's
        terminal back on 0-2 (a review would then wait on a stdin nobody reads any
        more, holding the client's pipes open), nor can a closed fd, or another
        file that took its number, be used here."""
        with job.lock:
            if job.state != "running":
                return False
            fds, job.fds = job.fds, []
            try:
                for target in (0, 1, 2):
                    os.dup2(fds[target], target)
            except BaseException:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                raise
        try:
            os.fchdir(fds[3])
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return True


def _well_formed(request: dict[str, Any]) -> bool:
    argv, env, stdio = request.get("argv"), request.get("env"), request.get("stdio")
    return (
        isinstance(argv, list)
        and all(isinstance(a, str) for a in argv)
        and isinstance(request.get("argv0"), str)
        and isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        and isinstance(request.get("umask"), int)
        and isinstance(request.get("identity"), dict)
        and isinstance(stdio, list)
        and len(stdio) == 3
        and all(
            isinstance(s, dict)
            and isinstance(s.get("encoding"), str)
            and isinstance(s.get("errors"), str)
            for s in stdio
        )
    )


def _std_streams(spec: Sequence[dict[str, Any]]) -> list[TextIO]:
    """sys.stdin/stdout/stderr on fds 0-2 as CPython makes them (newline "\\n"),
    with the client's encodings and buffering."""
    import io

    streams: list[TextIO] = []
    for fd, s in enumerate(spec):
        raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
        buffer = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        streams.append(
            io.TextIOWrapper(
                buffer,
                encoding=s["encoding"],
                errors=s["errors"],
                newline="\n",
                line_buffering=bool(s.get("line_buffering")),
                write_through=bool(s.get("write_through")),
            )
        )
    return streams


def _set_environ(env: dict[str, str]) -> None:
    """Make os.environ exactly `env` (what subprocesses, git and rich see)."""
    if os.environ == env:
        return
    tz = os.environ.get("TZ")
    os.environ.clear()
    os.environ.update(env)
    if os.environ.get("TZ") != tz:
        import time

        time.tzset()
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None  # type: ignore[attr-defined]  # re-read TMPDIR


def _call(main: Callable[..., int], argv: list[str]) -> int:
    """main(argv) as the `bot` script runs it: SystemExit (argparse --help) is an
    exit code, as the interpreter would make it."""
    try:
        return main(argv, via_daemon=False)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1


def rss_kb() -> int | None:
    """This process's resident set size in kB (VmRSS), None when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _acquire_lock(directory: str) -> int | None:
    """The daemon lock, flock()ed, with this pid written in it; None when another
    daemon holds it and serves (or does not let go within LOCK_WAIT)."""
    import fcntl
    import time

    path = os.path.join(directory, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        if ask(directory, "status", timeout=1.0) is not None or time.monotonic() > deadline:
            os.close(fd)  # another daemon serves: nothing to do
            return None
        time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(directory: str) -> int | None:
    """The pid in the lock file when a live daemon holds the lock, else None."""
    import fcntl

    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            data = os.read(fd, 64)
            try:
                return int(data.split()[0])
            except (ValueError, IndexError):
                return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def serve(directory: str | None = None, idle_timeout: float | None = None) -> int:
    """Run a daemon for `directory` (default: socket_dir()) in this process until it
    has been idle for `idle_timeout` seconds (default BOT_DAEMON_IDLE_TIMEOUT or 900),
    is stopped, or finds itself stale. 0 also when another daemon already serves."""
    from bot.cache import code_fingerprint

    # before any other bot module is imported: code edited after this point makes
    # the daemon stale, never silently served
    fingerprint = code_fingerprint()
    directory = os.path.abspath(directory or socket_dir())
    timeout = idle_timeout if idle_timeout and idle_timeout > 0 else idle_timeout_from_env()

    def early_log(message: str) -> None:
        print(f"bot daemon[{os.getpid()}]: {message}", file=sys.stderr, flush=True)

    if len(os.fsencode(socket_path(directory))) > _SUN_PATH_MAX:
        early_log(f"{socket_path(directory)}: path too long for a unix socket")
        return 2
    if not private_dir(directory):
        early_log(f"{directory}: not a private directory of this user; not serving")
        return 2
    lock_fd = _acquire_lock(directory)
    if lock_fd is None:
        return 0
    _trim_log(directory)
    # lock_fd stays open until the process exits: a released lock means this
    # daemon is gone (what `bot daemon stop` waits for), not merely on its way out
    return Server(directory, timeout, fingerprint, lock_fd).run()


def _trim_log(directory: str) -> None:
    path = os.path.join(directory, LOG_NAME)
    try:
        if os.stat(path).st_size > LOG_MAX_BYTES:
            os.truncate(path, 0)
    except OSError:
        pass


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bot.daemon", description="the warm review daemon (docs/daemon.md)"
    )
    parser.add_argument("--socket-dir", metavar="DIR", help="default: see docs/daemon.md")
    parser.add_argument("--idle-timeout", type=float, metavar="SECONDS")
    args = parser.parse_args(list(argv))
    return serve(args.socket_dir, args.idle_timeout)


if __name__ == "__main__":
    # run the module as `bot.daemon`, not as a second copy named __main__
    from bot.daemon import _main as _daemon_main

    sys.exit(_daemon_main(sys.argv[1:]))
