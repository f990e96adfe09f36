"""`bot daemon start|stop|status`: the warm review process (docs/daemon.md).

start     start it in the background (unless one is running) and wait until it
          answers; --foreground serves in this process; --idle-timeout SECONDS
stop      ask it to exit (after the review it may be running) and wait until it has
status    pid, socket, uptime, reviews served, memory; exit 1 when none is running

`bot review --daemon` (or BOT_DAEMON=1) starts one by itself when there is none.
"""

from __future__ import annotations

import argparse
import time
from typing import TypeVar

from bot.config import Settings
from bot.daemon import ask, lock_holder, socket_dir, socket_path, start_daemon
from bot.daemon_server import serve
from bot.errors import EXIT_OK, UsageError
from bot.private import private_dir

_P = TypeVar("_P", bound=argparse.ArgumentParser)

# How long `start` waits for a new daemon to answer, and `stop` for it to exit
# (it finishes the review it is running first).
START_WAIT = 30.0
STOP_WAIT = 60.0


def add_daemon_parser(subparsers: argparse._SubParsersAction[_P]) -> None:
    """Add `daemon` and its sub-commands to the `bot` parser."""
    daemon = subparsers.add_parser(
        "daemon",
        help="start, stop or query the warm process `bot review --daemon` uses",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = daemon.add_subparsers(dest="daemon_command", metavar="ACTION")
    sub.required = True
    start = sub.add_parser("start", help="start it (in the background unless --foreground)")
    start.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="exit after this long without a review (default: BOT_DAEMON_IDLE_TIMEOUT or 900)",
    )
    start.add_argument(
        "--foreground", action="store_true", help="serve in this process until it exits"
    )
    sub.add_parser("stop", help="stop it (after the review it may be running)")
    sub.add_parser("status", help="pid, socket, uptime, reviews served (exit 1: not running)")


def run_daemon(args: argparse.Namespace, settings: Settings) -> int:
    """Run `bot daemon ACTION`."""
    del settings  # the daemon reads the settings of each review's own environment
    directory = socket_dir()
    if args.daemon_command == "status":
        return _status(directory)
    if args.daemon_command == "stop":
        return _stop(directory)
    return _start(directory, args.idle_timeout, foreground=args.foreground)


def _status(directory: str) -> int:
    info = ask(directory, "status")
    if info is None:
        print(f"bot daemon: not running (socket {socket_path(directory)})")
        return 1
    rss = info.get("rss_kb")
    lines = [
        f"pid: {info.get('pid')}",
        f"socket: {info.get('socket')}",
        f"uptime: {float(info.get('uptime', 0)):.1f} s",
        f"reviews served: {info.get('served')}",
        f"busy: {'yes' if info.get('busy') else 'no'} ({info.get('queued', 0)} waiting)",
        f"warming up: {'yes' if info.get('warming_up') else 'no'}",
        f"idle timeout: {float(info.get('idle_timeout', 0)):g} s",
        f"rss: {int(rss) / 1024:.1f} MB" if isinstance(rss, int) else "rss: unknown",
        f"python: {info.get('python')}",
        f"package: {info.get('package')}",
    ]
    print("bot daemon: running")
    for line in lines:
        print(f"  {line}")
    return EXIT_OK


def _stop(directory: str) -> int:
    """Ask the daemon to exit and wait until its lock is free (it has exited). A
    daemon that holds the lock but does not answer is starting (not listening yet)
    or already exiting: ask again until it answers or has gone."""
    pid = lock_holder(directory)
    if pid is None:
        print(f"bot daemon: not running (socket {socket_path(directory)})")
        return EXIT_OK
    deadline = time.monotonic() + STOP_WAIT
    asked = False
    while (holder := lock_holder(directory)) is not None:
        pid = holder
        if not asked:
            asked = ask(directory, "stop", timeout=1.0) is not None
        if time.monotonic() > deadline:
            print(f"bot daemon: pid {pid} has not exited yet (still reviewing?)")
            return 1
        time.sleep(0.05)
    print(f"bot daemon: stopped (pid {pid})")
    return EXIT_OK


def _start(directory: str, idle_timeout: float | None, *, foreground: bool) -> int:
    if idle_timeout is not None and idle_timeout <= 0:
        raise UsageError("--idle-timeout must be positive")
    if not private_dir(directory):
        raise UsageError(
            f"{directory}: not a private directory of this user (mode 0700, yours); "
            "the daemon refuses to use it"
        )
    info = ask(directory, "status")
    if info is not None:
        print(f"bot daemon: already running (pid {info.get('pid')}, socket {info.get('socket')})")
        return EXIT_OK
    if foreground:
        return serve(directory, idle_timeout)
    if start_daemon(directory, idle_timeout) is None:
        raise UsageError(f"{directory}: cannot start the daemon")
    deadline = time.monotonic() + START_WAIT
    while (info := ask(directory, "status")) is None:
        if time.monotonic() > deadline:
            log = f"{directory}/daemon.log"
            print(f"bot daemon: did not answer within {START_WAIT:g} s (see {log})")
            return 1
        time.sleep(0.05)
    print(f"bot daemon: started (pid {info.get('pid')}, socket {info.get('socket')})")
    return EXIT_OK
