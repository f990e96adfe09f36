"""`bot serve` and `bot mirror ...`: run the service, or feed it from a mirror by hand.

    bot serve [--host H] [--port P] [--concurrency N] [--no-worker] [--no-beat]
        webhook + worker (all queues) + beat on this machine. Without BOT_BROKER_URL it
        starts its own redis-server (data in --data-dir), so one command is enough to try;
        with it, it uses that Redis, and workers may run elsewhere (--no-worker):
        `celery -A workers worker -Q analyze`.
    bot mirror poll [--list NAME]
        store what is new in each list's mirror (after the cursor) and queue assembly
    bot mirror backfill --since DATE [--list NAME] [--mirror URL|DIR]
        walk each list's mirror from DATE, with a progress bar; already-seen mail is skipped
    bot outbox list [--all] | retry ID
        what was not delivered cleanly, and why; send uncertain parts again
    bot series retry SCOPE KEY
        review a failed series (or push range, scope push:<repo>) again

The lists come from the service config (BOT_SERVICE_CONFIG, see docs/service.md). The
Redis these commands use is BOT_BROKER_URL, else the one a running `bot serve` of this
user recorded (its address and password, in a file only this user can read), else
redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import FetchError, UsageError


def add_service_parsers(subparsers: Any) -> None:
    """Add `serve`, `mirror` and `outbox` to the CLI's subparsers."""
    serve = subparsers.add_parser(
        "serve",
        help="run webhook, worker and beat on this machine",
        description="Run the review service: webhook, one worker for every queue, and beat. "
        "Without BOT_BROKER_URL a private redis-server is started.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="webhook address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="webhook port (default 8080)")
    serve.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    serve.add_argument("--data-dir", metavar="DIR", help="mirrors, repos, embedded Redis data")
    serve.add_argument("--no-beat", action="store_true", help="do not run the beat scheduler")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker (with BOT_BROKER_URL, when workers run elsewhere)",
    )

    mirror = subparsers.add_parser(
        "mirror",
        help="feed the service from a public-inbox mirror",
        description="Read public-inbox v2 mirrors into the service's Redis state.",
    )
    msub = mirror.add_subparsers(dest="mirror_command", metavar="ACTION")
    msub.required = True
    poll = msub.add_parser("poll", help="store what is new after each list's cursor")
    poll.add_argument("--list", dest="lists", action="append", default=[], metavar="NAME")
    poll.add_argument("--mirror", metavar="URL|DIR", help="mirror to read (default: config)")
    back = msub.add_parser("backfill", help="walk a mirror from a date, with a progress bar")
    back.add_argument("--since", required=True, metavar="DATE", help="YYYY-MM-DD or ISO 8601")
    back.add_argument("--list", dest="lists", action="append", default=[], metavar="NAME")
    back.add_argument("--mirror", metavar="URL|DIR", help="mirror to read (default: config)")
    back.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    outbox = subparsers.add_parser(
        "outbox",
        help="look at stored reviews waiting to be sent, or release an uncertain one",
        description="The outbox holds every stored review's deliveries (see docs/service.md).",
    )
    osub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    osub.required = True
    olist = osub.add_parser(
        "list", help="entries not delivered cleanly (pending, uncertain, failed)"
    )
    olist.add_argument("--all", action="store_true", help="every entry, delivered ones too")
    retry = osub.add_parser(
        "retry",
        help="send the uncertain parts of an entry again (after checking they never arrived)",
    )
    retry.add_argument("outbox_id", metavar="ID")

    series = subparsers.add_parser(
        "series",
        help="act on one series the service knows",
        description="Series in the service's Redis (see docs/service.md).",
    )
    ssub = series.add_subparsers(dest="series_command", metavar="ACTION")
    ssub.required = True
    sretry = ssub.add_parser("retry", help="review a failed series (a timeout, say) again")
    sretry.add_argument("scope", metavar="SCOPE", help="list name, or push:<repo>")
    sretry.add_argument("key", metavar="KEY", help="series key, or BEFORE..AFTER for a push")


def run_service(args: argparse.Namespace, settings: Settings) -> int:
    """Run `serve` or `mirror poll|backfill`; returns the exit code."""
    del settings  # the workers load Settings themselves, the same way the CLI does
    if args.command == "serve":
        return serve(args)
    use_recorded_broker()
    import redis
    from kombu.exceptions import OperationalError

    try:
        if args.command == "series":
            return series_command(args)
        if args.command == "mirror":
            since = parse_since(args.since) if args.mirror_command == "backfill" else None
            return mirror_walk(
                args.lists,
                since=since,
                mirror_override=args.mirror,
                quiet=getattr(args, "quiet", False),
            )
        if args.command == "outbox":
            return outbox_command(args)
    except redis.AuthenticationError as exc:  # a ConnectionError: first
        raise FetchError(f"Redis refused the password ({_where()})") from exc
    except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
        raise FetchError(f"Redis unreachable ({_where()}): {exc}") from exc
    raise UsageError(f"unknown service command {args.command!r}")


def _where() -> str:
    """The broker in use, without its password."""
    url = os.environ.get("BOT_BROKER_URL", "redis://127.0.0.1:6379/0")
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2]


def outbox_command(args: argparse.Namespace) -> int:
    """`bot outbox list` prints one line per entry; `bot outbox retry ID` re-queues it."""
    from workers.state import State

    state = State.from_url()
    if args.outbox_command == "list":
        for kind, info in state.failing_targets().items():
            since = datetime.fromtimestamp(float(info.get("since") or 0), UTC)
            print(f"target {kind} failing since {since:%Y-%m-%d %H:%M:%S}Z: {info.get('error')}")
        for outbox_id in state.outbox_ids():
            item = state.outbox_item(outbox_id)
            if item.get("status") == "done" and not args.all:
                continue
            print(outbox_line(outbox_id, item))
            notes = {int(k[5:]): v for k, v in item.items() if k.startswith("note:")}
            for n, note in sorted(notes.items()):
                print(f"  {n}: {note}")
        return 0
    released = state.release_uncertain(args.outbox_id)
    if released is None:
        raise UsageError(f"no outbox entry {args.outbox_id!r}")
    from workers.tasks import publish_outbox

    publish_outbox.apply_async((args.outbox_id,))
    print(
        f"{args.outbox_id}: {released} uncertain part(s) released; delivery queued", file=sys.stderr
    )
    return 0


def outbox_line(outbox_id: str, item: dict[str, str]) -> str:
    """`ID STATUS SCOPE KEY N=STATE...`: each part tried so far; `retrying` for a part
    whose last attempt failed with nothing sent (its note says why)."""
    parts = {int(k[5:]): v.split(":", 1)[0] for k, v in item.items() if k.startswith("part:")}
    for k in item:
        if k.startswith("note:"):
            parts.setdefault(int(k[5:]), "retrying")
    shown = " ".join(f"{n}={v}" for n, v in sorted(parts.items()))
    status, scope, key = item.get("status", "?"), item.get("scope", ""), item.get("key", "")
    return f"{outbox_id} {status} {scope} {key} {shown}"


def series_command(args: argparse.Namespace) -> int:
    """`bot series retry SCOPE KEY`: a failed series goes back to complete and is queued."""
    from workers.state import State

    state = State.from_url()
    if not state.reopen(args.scope, args.key):
        got = state.series(args.scope, args.key).get("state")
        raise UsageError(f"series {args.key!r} of {args.scope!r} is {got or 'unknown'}, not failed")
    if args.scope.startswith("push:"):
        from workers.tasks import review_push

        before, _sep, after = args.key.partition("..")
        ref = state.series(args.scope, args.key).get("ref", "")
        review_push.apply_async((args.scope.removeprefix("push:"), before, after, ref))
    else:
        from workers.tasks import review_series

        review_series.apply_async((args.scope, args.key, False))
    print(f"{args.scope} {args.key}: queued for review again", file=sys.stderr)
    return 0


def parse_since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--since {text!r}: not a date (use YYYY-MM-DD)") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- mirror


@contextmanager
def _progress(total: int, quiet: bool, label: str) -> Iterator[Callable[[int], None]]:
    if quiet or total == 0:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def mirror_walk(
    names: list[str],
    *,
    since: datetime | None,
    mirror_override: str | None = None,
    quiet: bool = False,
) -> int:
    """Poll (since None) or backfill each named list (default: every configured one)."""
    from bot.ingest.mirror import PublicInboxMirror
    from workers.config import load_service_config
    from workers.dismissals import take_replies
    from workers.intake import ingest_mirror
    from workers.state import State, StoredMessage
    from workers.tasks import assemble_thread

    cfg = load_service_config()
    lists = [cfg.list(n) for n in names] if names else [x for x in cfg.lists if x.mirror]
    if not lists:
        raise UsageError(
            "no list to read: name one with --list, or configure lists (docs/service.md)"
        )
    state = State.from_url()
    for lst in lists:
        source = mirror_override or lst.mirror
        if not source:
            raise UsageError(f"list {lst.name!r} has no mirror configured (use --mirror)")
        mirror = PublicInboxMirror(source, cfg.data_dir / "mirrors" / lst.name)
        mirror.sync()
        start = {} if since is not None else state.cursors(lst.name)
        total = mirror.pending(start, since=since)

        def enqueue(scope: str, roots: list[str]) -> None:
            assemble_thread.apply_async((scope, roots))

        def replies(batch: list[StoredMessage], name: str = lst.name) -> object:
            # as poll_mirror does: `bot: not-a-bug` replies from trusted senders or the
            # author dismiss findings, each reply once (`{p}:replied:{list}`)
            return take_replies(state, name, batch, cfg.list(name).trusted)

        with _progress(total, quiet or not sys.stderr.isatty(), lst.name) as advance:
            stats = ingest_mirror(
                state,
                lst.name,
                mirror,
                enqueue,
                batch_size=cfg.batch_size,
                since=since,
                ignore_cursor=since is not None,
                progress=advance,
                on_batch=replies,
            )
        print(
            f"{lst.name}: {stats.walked} commit(s) read, {stats.stored} new message(s), "
            f"{stats.duplicates} already seen, {stats.threads} thread(s) queued",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------- serve


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_record_path() -> Path:
    """Where `bot serve` records its embedded Redis for the CLI of the same user:
    $XDG_STATE_HOME/mmlc-bot/serve-broker.json (default ~/.local/state/...)."""
    from bot.private import APP_NAME

    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / APP_NAME / "serve-broker.json"


def write_broker_record(url: str, data_dir: Path) -> Path:
    """Record the embedded Redis (address and password) in a file only this user can
    read, in a directory only this user can write; replaced atomically."""
    from bot.private import private_dir

    path = broker_record_path()
    if not private_dir(path.parent):
        raise UsageError(f"{path.parent}: not a private directory of this user; cannot record")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        json.dump({"url": url, "pid": os.getpid(), "data_dir": str(data_dir)}, out)
    os.replace(tmp, path)
    return path


def read_broker_record() -> str | None:
    """The broker URL a running `bot serve` of this user recorded; None when there is
    none, its serve is gone, or the file is not private to this user."""
    from bot.private import owned_private

    path = broker_record_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        if not owned_private(st) or st.st_mode & 0o077:
            print(f"bot: ignoring {path}: readable or writable by others", file=sys.stderr)
            return None
        try:
            record = json.load(f)
            url, pid = str(record["url"]), int(record["pid"])
        except (ValueError, KeyError, TypeError):
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # that serve stopped without removing it (killed)
    except PermissionError:
        pass
    return url


def use_recorded_broker() -> None:
    """Without BOT_BROKER_URL, talk to the Redis of this user's running `bot serve`
    (set before anything from workers/ is imported, which reads it once)."""
    if "BOT_BROKER_URL" not in os.environ:
        url = read_broker_record()
        if url:
            os.environ["BOT_BROKER_URL"] = url


def _remove_broker_record() -> None:
    path = broker_record_path()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if int(record.get("pid", 0)) == os.getpid():
            path.unlink()
    except (OSError, ValueError, TypeError, AttributeError):
        pass


def start_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private redis-server: append-only file in `data_dir` (mode 0700), on
    loopback, with a random password (in its config file, mode 0600: never on a command
    line other users can read) and a unix socket in the same directory. Returns the
    process and the URL with the password."""
    from bot.private import private_dir

    binary = shutil.which("redis-server")
    if binary is None:
        raise UsageError(
            "redis-server not found: install it (apt install redis-server) or set BOT_BROKER_URL"
        )
    if not private_dir(data_dir):
        raise UsageError(f"{data_dir}: not a private directory of this user (mode 0700)")
    os.chmod(data_dir, 0o700)  # the append-only file holds every review and the password
    port = port or free_port()
    secret = secrets.token_urlsafe(32)
    conf = data_dir / "redis.conf"
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{data_dir}"',
        "appendonly yes",
        "appendfsync always",
        'save ""',
        "protected-mode yes",
        f"requirepass {secret}",
        f'unixsocket "{data_dir / "redis.sock"}"',
        "unixsocketperm 700",
    ]
    with contextlib.suppress(FileNotFoundError):
        conf.unlink()
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"redis://:{secret}@127.0.0.1:{port}/0"
    wait_for_port("127.0.0.1", port, proc)
    return proc, url


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UsageError(f"process exited before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise UsageError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def serve(args: argparse.Namespace) -> int:
    """Start everything, wait, and stop everything on Ctrl-C or SIGTERM."""
    data = Path(
        args.data_dir or os.environ.get("BOT_DATA_DIR") or tempfile.mkdtemp(prefix="bot-serve-")
    )
    env = dict(os.environ, BOT_DATA_DIR=str(data))
    procs: list[subprocess.Popen[bytes]] = []
    recorded = False
    try:
        if "BOT_BROKER_URL" not in os.environ:
            redis_proc, url = start_redis(data / "redis")
            procs.append(redis_proc)
            env["BOT_BROKER_URL"] = url
            record = write_broker_record(url, data)
            recorded = True
            shown = url.replace(url[url.index("//") + 2 : url.index("@") + 1], "")
            print(
                f"bot serve: embedded Redis at {shown} (password required; the CLI finds "
                f"it in {record})",
                file=sys.stderr,
            )
        py = sys.executable
        worker = [
            py, "-m", "celery", "-A", "workers", "worker",
            "-Q", "ingest,analyze,publish", f"--concurrency={args.concurrency}",
            "--loglevel=INFO", "-n", f"bot-serve-{os.getpid()}@%h",
        ]  # fmt: skip
        if not args.no_worker:
            procs.append(subprocess.Popen(worker, env=env))
        if not args.no_beat:
            beat = [py, "-m", "celery", "-A", "workers", "beat", "--loglevel=INFO",
                    "-s", str(data / "celerybeat-schedule")]  # fmt: skip
            procs.append(subprocess.Popen(beat, env=env))
        from workers.config import load_service_config
        from workers.httpguard import uvicorn_args

        # bounded: a request head and body each within a deadline, keep-alive,
        # connections at once and the head's size capped (workers.httpguard)
        web = [py, "-m", "uvicorn", "--factory", "workers.webhook:app_from_env",
               "--host", args.host, "--port", str(args.port),
               *uvicorn_args(load_service_config())]  # fmt: skip
        procs.append(subprocess.Popen(web, env=env))
        print(
            f"bot serve: webhook on http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr
        )

        stop = False

        def on_signal(_sig: int, _frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        while not stop:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                code = dead[0].returncode
                print(f"bot serve: child {dead[0].pid} exited ({code}); stopping", file=sys.stderr)
                return 3
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if recorded:
            _remove_broker_record()
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


__all__ = [
    "add_service_parsers",
    "broker_record_path",
    "mirror_walk",
    "parse_since",
    "read_broker_record",
    "run_service",
    "start_redis",
    "use_recorded_broker",
]
