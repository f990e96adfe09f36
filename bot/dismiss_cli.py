"""`bot dismiss`: say a finding is not a bug, list what was said, undo it.

    bot dismiss SERIES TARGET [--reason TEXT] [--everywhere] [--by NAME]
    bot dismiss --list [--json]
    bot dismiss --undo ID
    bot dismiss --counts [--json]
    bot dismiss --service --list [--json] | --undo ID | --counts [--json]

SERIES is a series key or any Message-ID of a series `bot review` reviewed
here, or a mail file or mbox holding it; TARGET a fingerprint (full or short,
from the review) or a rule ID. The store is bot.dismiss.default_store_path();
with --service it is the service's (RedisStore, `{p}:dismiss:` keys), in the
Redis `bot outbox list` uses: BOT_BROKER_URL, else the one this user's running
`bot serve` recorded, else redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from bot.errors import EXIT_OK, FetchError, UsageError

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.dismiss import Dismissal, DismissalStore, FileStore, SeriesIdentity
    from bot.model import Review
    from bot.report.common import Dismissed


def add_dismiss_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dismiss",
        help="mark a finding as not a bug, for every version of a series",
        description=(
            "Dismiss a finding (by fingerprint) or a rule (by ID) for a series and all "
            "its versions, or with --everywhere for any series. Later reviews show it as "
            "dismissed and do not count it."
        ),
    )
    p.add_argument("series", nargs="?", metavar="SERIES", help="series key, Message-ID or mbox")
    p.add_argument("target", nargs="?", metavar="FINGERPRINT|RULE", help="what to dismiss")
    p.add_argument("--reason", default="", metavar="TEXT", help="why it is not a bug")
    p.add_argument("--everywhere", action="store_true", help="in any series (fingerprints only)")
    p.add_argument("--by", default=None, metavar="NAME", help="who dismisses (default: $USER)")
    p.add_argument("--list", action="store_true", help="list the dismissals")
    p.add_argument("--undo", type=int, metavar="ID", help="remove dismissal ID")
    p.add_argument("--counts", action="store_true", help="per rule: findings raised, dismissed")
    p.add_argument("--json", action="store_true", help="--list/--counts as JSON")
    p.add_argument(
        "--service",
        action="store_true",
        help="the service's dismissals (its Redis) instead of the local store",
    )


def store() -> FileStore:
    """The local store (bot.dismiss.default_store_path())."""
    from bot.dismiss import FileStore, default_store_path

    path = default_store_path()
    if path is None:
        raise UsageError("no dismissal store: BOT_CACHE_DIR or BOT_DISMISS_FILE is set but empty")
    return FileStore(path)


def service_store() -> DismissalStore:
    """The service's store: a RedisStore under the service's prefix, in the Redis
    `bot outbox list` finds (BOT_BROKER_URL, else the `bot serve` record)."""
    from bot.service_cli import use_recorded_broker

    use_recorded_broker()  # before workers/ is imported: it reads BOT_BROKER_URL once
    from workers.dismissals import store_for
    from workers.state import State

    return store_for(State.from_url())


def broker_shown() -> str:
    """The Redis in use, without its password."""
    from workers.state import broker_url

    scheme, sep, rest = broker_url().partition("://")
    return scheme + sep + rest.rpartition("@")[2]


def run_dismiss(args: argparse.Namespace, settings: Settings) -> int:
    modes = sum(bool(x) for x in (args.list, args.undo is not None, args.counts))
    if modes > 1 or (modes and (args.series or args.target)):
        raise UsageError("bot dismiss: give SERIES TARGET, or one of --list, --undo, --counts")
    if not args.service:
        return _run(args, settings, store())
    import redis

    try:
        return _run(args, settings, service_store())
    except redis.AuthenticationError as exc:  # a ConnectionError: first
        raise FetchError(f"Redis refused the password ({broker_shown()})") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        detail = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
        raise FetchError(
            f"Redis unreachable ({broker_shown()}): {detail}: start the service "
            "(bot serve) or set BOT_BROKER_URL"
        ) from exc
    except redis.RedisError as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise FetchError(f"Redis error ({broker_shown()}): {detail}") from exc


def _run(args: argparse.Namespace, settings: Settings, s: DismissalStore) -> int:
    where = "the service" if args.service else "this machine"
    if args.list:
        _print_list(s.dismissals(), as_json=args.json)
    elif args.undo is not None:
        gone = s.undo(args.undo)
        if gone is None:
            again = "bot dismiss --service --list" if args.service else "bot dismiss --list"
            raise UsageError(f"no dismissal #{args.undo} in {where}'s store ({again})")
        print(f"undone: #{gone.id} {gone.target} ({gone.series.key})")
    elif args.counts:
        from bot.dismiss import rule_counts

        counts = rule_counts(s)
        if args.json:
            doc = {r: {"raised": c.raised, "dismissed": c.dismissed} for r, c in counts.items()}
            print(json.dumps(doc, indent=2))
        else:
            for c in counts.values():
                print(f"{c.rule:<22} raised {c.raised:>4}  dismissed {c.dismissed:>4}")
    else:
        if not args.series or not args.target:
            raise UsageError("bot dismiss: give SERIES and a FINGERPRINT or RULE ID")
        series, raised = _series(s, args.series, settings, where)
        target = _target(args.target, raised)
        by = args.by or os.environ.get("USER") or getpass.getuser()
        d = s.add(target, series, reason=args.reason, by=by, everywhere=args.everywhere)
        scope = "every series" if d.everywhere else f"every version of {series.key}"
        print(f"dismissed #{d.id}: {d.target} in {scope}")
    return EXIT_OK


def _series(
    s: DismissalStore, ref: str, settings: Settings, where: str
) -> tuple[SeriesIdentity, dict[str, str] | None]:
    """The series REF names and the fingerprints its review raised (None: not
    recorded, so a target cannot be checked)."""
    record = s.find_series(ref)
    if record is not None:
        return record.series, dict(record.raised)
    if os.path.exists(ref):
        from bot import assemble, ingest
        from bot.dismiss import identity_of

        messages = ingest.load([ref], settings)
        series, versions, _ = assemble.select(assemble.assemble(messages, settings))
        return identity_of(series, versions), None
    raise UsageError(f"no review of {ref!r} recorded on {where}: review it first, or give its mbox")


def _target(text: str, raised: dict[str, str] | None) -> str:
    from bot.dismiss import normalise_target
    from bot.report.fingerprint import looks_like_fingerprint

    target = normalise_target(text)
    if raised is None:
        return target
    if looks_like_fingerprint(target):
        full = [fp for fp in raised if fp.startswith(target)]
        if len(full) != 1:
            known = ", ".join(f"{fp[:10]} ({rule})" for fp, rule in sorted(raised.items()))
            raise UsageError(
                f"fingerprint {target} is not one this series raised"
                + (f"; it raised: {known}" if known else "; it raised nothing")
            )
        return full[0]
    if target not in raised.values():
        rules = ", ".join(sorted(set(raised.values()))) or "none"
        raise UsageError(f"rule {target} raised nothing in this series (rules raised: {rules})")
    return target


def _print_list(found: list[Dismissal], *, as_json: bool) -> None:
    from bot.dismiss import dismissal_json

    if as_json:
        print(json.dumps([dismissal_json(d) for d in found], indent=2, ensure_ascii=False))
        return
    if not found:
        print("no dismissals")
    for d in found:
        scope = "everywhere" if d.everywhere else d.series.key
        reason = f": {d.reason}" if d.reason else ""
        print(f"#{d.id} {d.target} {scope} by {d.by} at {d.at}{reason}")


def review_dismissals(review: Review, *, write: bool = True) -> tuple[Dismissed, str | None]:
    """The dismissals covering this review's findings, after recording the
    review in the store (unless `write` is False: `--no-cache` reads an
    existing store and creates or changes nothing); a store that cannot be
    used is a warning, never a failed review."""
    from bot.dismiss import default_store_path, dismissed_in, record
    from bot.errors import BotError

    path = default_store_path()
    if path is None or (not write and not path.is_file()):
        return {}, None
    s = store()
    try:
        if write:
            record(s, review)
        return dismissed_in(s, review), None
    except (BotError, OSError) as exc:
        detail = exc.one_line() if isinstance(exc, BotError) else str(exc)
        return {}, f"dismissals not applied: {detail}"


def warn(note: str | None) -> None:
    if note:
        print(f"bot: warning: {note}", file=sys.stderr)
