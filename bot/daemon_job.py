"""One client's review in the daemon (docs/daemon.md): the job, the shape its
request must have, and bot.cli.main run as if in the client.

    Job                  a client's connection, request and file descriptors
    well_formed(request) every field a review request must carry, of its type
    run_review(job, ...) bot.cli.main(argv) with the client's fds on 0/1/2, its cwd,
                         environment, umask, argv[0] and stdio encodings; all
                         restored after

bot.daemon_server queues jobs and runs them one at a time in its main thread; a
client that goes away while its review runs is cancelled there (Cancelled is
raised in the review by a signal).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from bot.daemon import EXIT_INTERNAL, EXIT_INTERRUPTED, Lines

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Sequence
    from typing import TextIO


class Cancelled(BaseException):
    """Raised in the review (main) thread when its client has gone: not an
    Exception, so bot.cli.main does not turn it into an exit code."""


class Job:
    """One client's review: its connection, request and file descriptors."""

    def __init__(self, conn: socket.socket, lines: Lines, request: dict[str, Any], fds: list[int]):
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
        # while bot.cli.main runs: only then may the cancel signal raise Cancelled
        self.in_review = False

    def close_fds(self) -> None:
        with self.lock:
            fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def well_formed(request: dict[str, Any]) -> bool:
    """Whether a review request carries every field, each of its type and range."""
    argv, env, stdio = request.get("argv"), request.get("env"), request.get("stdio")
    umask = request.get("umask")
    return (
        isinstance(argv, list)
        and all(isinstance(a, str) for a in argv)
        and isinstance(request.get("argv0"), str)
        and isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        # os.umask raises on more than a C int holds: before the review's error
        # handling (the daemon died of it); any real umask is 0-0o777
        and isinstance(umask, int)
        and 0 <= umask <= 0o777
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


def run_review(job: Job, saved_fds: Sequence[int], log: Callable[[str], None]) -> int:
    """bot.cli.main(argv) as if it ran in the client: its fds on 0/1/2, its
    cwd, environment, umask, argv[0] and stdio encodings; all restored after
    (`saved_fds`: the daemon's own fds 0-2). The job must be running."""
    import bot.cli

    request = job.request
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)
    saved_argv = sys.argv
    saved_env = dict(os.environ)
    saved_umask = os.umask(int(request["umask"]))
    streams: list[TextIO] = []
    code = EXIT_INTERNAL
    try:
        if not _take_client_fds(job):
            return EXIT_INTERRUPTED  # the client went before the review began
        streams = _std_streams(request["stdio"])
        _set_environ(request["env"])
        sys.stdin, sys.stdout, sys.stderr = streams
        sys.argv = [request["argv0"], *request["argv"]]
        try:
            try:
                job.in_review = True
                # a cancel from before in_review was set sent a signal that did
                # nothing; one from after it raises in the review
                with job.lock:
                    cancelled = job.state == "cancelled"
                if cancelled:
                    raise Cancelled
                code = _call(bot.cli.main, request["argv"])
            finally:
                job.in_review = False
        except Cancelled:
            job.in_review = False
            code = EXIT_INTERRUPTED
    except Exception as exc:  # setting up the client's process state failed
        log(f"review: {type(exc).__name__}: {exc}")
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
            os.dup2(saved_fds[target], target)
        os.chdir("/")
        _set_environ(saved_env)
        os.umask(saved_umask)
        with job.lock:
            if job.state == "finishing":
                job.state = "done"
    return code


def _take_client_fds(job: Job) -> bool:
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
