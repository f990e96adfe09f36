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

This module is the client and what both sides share: where the socket is, what
identifies a bot, the line protocol, `ask`, starting a daemon and who holds its
lock. It imports only os, sys, socket and json: it runs before bot.cli imports
anything heavy. The daemon side is bot.daemon_server (the socket, the queue, the
life cycle, staleness) and bot.daemon_job (one review run as its client); it
imports the review pipeline once and keeps it warm until it has been idle for
BOT_DAEMON_IDLE_TIMEOUT seconds (default 900). `python -m bot.daemon` runs it.
"""

from __future__ import annotations

import os
import sys

from bot.private import default_cache_dir, private_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (client start-up)
if TYPE_CHECKING:
    import socket
    import subprocess
    from typing import Any

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
SUN_PATH_MAX = 107  # bytes of a unix socket path (108 with the NUL)
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


class Lines:
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
        return None if line is None else decode(line)


def decode(line: bytes) -> dict[str, Any]:
    import json

    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def send(sock: socket.socket, obj: dict[str, object]) -> None:
    import json

    sock.sendall(json.dumps(obj).encode() + b"\n")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    import socket
    import struct

    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def connect(path: str, timeout: float) -> socket.socket:
    """A connected socket to a daemon of this user; OSError otherwise
    (FileNotFoundError / ConnectionRefusedError: there is none)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        if peer_uid(sock) != os.getuid():
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
        sock = connect(path, timeout)
    except OSError:
        return None
    try:
        send(sock, {"op": op})
        return Lines(sock).read()
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
    if len(os.fsencode(path)) > SUN_PATH_MAX or not private_dir(directory):
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
        sock = connect(path, CONNECT_TIMEOUT)
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
            lines = Lines(sock)
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


if __name__ == "__main__":
    # the daemon itself (what start_daemon runs); bot.daemon_server imports this
    # module as `bot.daemon`, not as a second copy named __main__
    from bot.daemon_server import main

    sys.exit(main(sys.argv[1:]))
