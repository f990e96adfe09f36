"""The review daemon itself (docs/daemon.md): `python -m bot.daemon` runs main().

    serve(directory, idle_timeout) -> exit code

One listening unix socket in a private directory, a thread per connection, and
reviews run one at a time in the main thread (bot.daemon_job). It takes the lock
file first (one daemon per directory), imports the pipeline and loads the rules
while it already answers, and exits when idle for the timeout, on `stop` or a
signal (after the review it may be running), or as soon as a client shows it is
stale: another interpreter, bot package or hash seed, edited code (the module
fingerprint taken before anything else was imported) or edited rules. The line
protocol, the constants and the client are in bot.daemon.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from typing import TYPE_CHECKING, Any

from bot.daemon import (
    FAULT_PAUSE_ENV,
    HANDSHAKE_TIMEOUT,
    LOCK_NAME,
    LOCK_WAIT,
    LOG_MAX_BYTES,
    LOG_NAME,
    QUEUE_MAX,
    SUN_PATH_MAX,
    TURN_WAIT,
    Lines,
    ask,
    decode,
    identity,
    idle_timeout_from_env,
    peer_uid,
    send,
    socket_dir,
    socket_path,
)
from bot.daemon_job import Cancelled, Job, run_review, well_formed
from bot.private import private_dir

if TYPE_CHECKING:
    import socket
    import threading
    from collections.abc import Sequence
    from types import FrameType


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
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()
        self.stop_reason: str | None = None
        self.closing = threading.Event()
        self.warming_up = True  # until _warm_up() is done: clients queue meanwhile
        self.main_ident = threading.get_ident()
        self.running: Job | None = None
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

    def _refuse(self, job: Job, answer: str) -> None:
        with job.lock:
            if job.state != "queued":
                return
            job.state = "abandoned"
        with contextlib.suppress(OSError):
            send(job.conn, {"status": answer})
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
        if job is not None and job.in_review and job.state == "cancelled":
            raise Cancelled

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
        job: Job | None = None
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            if peer_uid(conn) != os.getuid():
                return
            lines = Lines(conn)
            raw, fds = lines.read_raw(maxfds=4)
            if raw is None:
                return
            request = decode(raw)
            op = request.get("op")
            if op == "status":
                send(conn, self.status())
                return
            if op == "stop":
                send(conn, {"status": "stopping", "pid": self.pid})
                self.request_stop("stop")
                return
            verdict = self._verdict(request, fds)
            if verdict is not None:
                send(conn, {"status": verdict})
                if verdict == "stale":
                    self.log("stale: code, rules or interpreter changed; exiting")
                    self.request_stop("stale")
                return
            job = Job(conn, lines, request, fds)
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
        if request.get("op") != "review" or not well_formed(request) or len(fds) != 4:
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

    def _watch(self, job: Job) -> None:
        """While the review runs, a client that goes away (Ctrl-C, killed) cancels it."""
        try:
            data = job.conn.recv(16)
        except OSError:
            data = b""
        del data  # any byte or the end of the stream: the client is done with us
        self._cancel(job)

    def _cancel(self, job: Job) -> None:
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

    def _run(self, job: Job) -> None:
        with job.lock:
            if job.state != "queued":
                return
            job.state = "started"
        job.started.set()
        go = None
        try:
            send(job.conn, {"status": "ready"})
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
            code = run_review(job, self.saved_fds, self.log)
        finally:
            self.running = None
            self.served += 1
        with contextlib.suppress(OSError):
            send(job.conn, {"exit_code": code})
        try:
            import socket

            job.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fault_pause(self, job: Job) -> None:
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


def serve(directory: str | None = None, idle_timeout: float | None = None) -> int:
    """Run a daemon for `directory` (default: socket_dir()) in this process until it
    has been idle for `idle_timeout` seconds (default BOT_DAEMON_IDLE_TIMEOUT or 900),
    is stopped, or finds itself stale. 0 also when another daemon already serves."""
    from bot.cache import code_fingerprint

    # before the review pipeline is imported (only bot.daemon*, bot.private and
    # bot.cache are): code edited after this point makes the daemon stale, never
    # silently served
    fingerprint = code_fingerprint()
    directory = os.path.abspath(directory or socket_dir())
    timeout = idle_timeout if idle_timeout and idle_timeout > 0 else idle_timeout_from_env()

    def early_log(message: str) -> None:
        print(f"bot daemon[{os.getpid()}]: {message}", file=sys.stderr, flush=True)

    if len(os.fsencode(socket_path(directory))) > SUN_PATH_MAX:
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


def main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bot.daemon", description="the warm review daemon (docs/daemon.md)"
    )
    parser.add_argument("--socket-dir", metavar="DIR", help="default: see docs/daemon.md")
    parser.add_argument("--idle-timeout", type=float, metavar="SECONDS")
    args = parser.parse_args(list(argv))
    return serve(args.socket_dir, args.idle_timeout)
