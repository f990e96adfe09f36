"""`bot`: the command line. The only place that calls sys.exit.

Every BotError becomes one line on stderr and its documented exit code; any other
exception is an internal error (exit 3), with the traceback only when BOT_DEBUG=1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bot import __version__
from bot.errors import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    BotError,
    UsageError,
)

# bot.config (dataclasses, inspect), threading, traceback and typing are imported where
# they are used: `bot review --daemon` hands the request over before it needs them.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy knows the name
if TYPE_CHECKING:
    from pathlib import Path

    from bot.config import Settings
    from bot.model import Review

EXIT_CODES_HELP = """\
exit codes:
  0  reviewed; the series introduces no lifecycle finding
  1  reviewed; the series introduces at least one finding
  2  bad usage, or input that cannot be read or is refused (one line on stderr)
  3  internal error (a bug in the bot; BOT_DEBUG=1 shows the traceback)
"""

REVIEW_EPILOG = (
    """\
inputs (one or more):
  PATH            an mbox, a .eml, a directory of .eml files, a maildir, a directory
                  of `git format-patch` or quilt patches, or a single .patch file
  -               read an mbox or a patch from stdin
  MESSAGE-ID      fetch the thread from the public-inbox base URL (--lore-base)
  LORE-URL        https://lore.kernel.org/<list>/<msgid>/...
  A..B            with --repo PATH: each commit of the range is one patch

"""
    + EXIT_CODES_HELP
)


# Seconds of work before the progress line appears on a terminal: a fast review
# prints nothing but its result.
PROGRESS_DELAY = 0.3


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns sys.exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with only="review", just `bot review` (what a
    review needs: the other subcommands import their modules to build)."""
    parser = _Parser(
        prog="bot",
        description="Review Linux mm patch series for object-lifecycle bugs.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    review = sub.add_parser(
        "review",
        help="review a patch series",
        description="Review a patch series: assemble, apply, analyse, report.",
        epilog=REVIEW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    review.add_argument("inputs", nargs="+", metavar="SERIES", help="what to review (see below)")
    review.add_argument(
        "--tree", metavar="PATH", help="kernel tree (git repo or plain directory) to apply to"
    )
    review.add_argument("--repo", metavar="PATH", help="git repo for an A..B revision range input")
    review.add_argument(
        "--guess-base",
        action="store_true",
        help="apply on the newest commit of --tree's HEAD (last 1000) whose blobs match the "
        "patches' index lines, like b4 am --guess-base",
    )
    review.add_argument(
        "--version",
        dest="series_version",
        type=int,
        metavar="N",
        help="review version N (default: newest)",
    )
    review.add_argument(
        "--series",
        dest="series_key",
        metavar="KEY",
        help="review the series whose cover or any patch has this Message-ID",
    )
    review.add_argument(
        "--format",
        default="text",
        choices=["text", "email", "json", "sarif", "b4"],
        help="output format (default: text)",
    )
    review.add_argument(
        "-o", "--output", metavar="FILE", help="write the review to FILE instead of stdout"
    )
    review.add_argument(
        "--rule", action="append", default=[], metavar="ID", help="run only this rule (repeatable)"
    )
    review.add_argument(
        "--disable-rule",
        action="append",
        default=[],
        metavar="ID",
        help="skip this rule (repeatable)",
    )
    review.add_argument(
        "--no-simulate", action="store_true", help="do not run the lifecycle simulator"
    )
    review.add_argument(
        "--lore-base",
        metavar="URL",
        help="public-inbox base URL for Message-IDs (default: settings)",
    )
    review.add_argument(
        "--max-input-size", type=int, metavar="BYTES", help="refuse inputs larger than this"
    )
    review.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="colour in text output"
    )
    review.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    review.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the on-disk cache of rules and parses (docs/configuration.md)",
    )
    review.add_argument(
        "--daemon",
        action="store_true",
        help="hand the review to a warm background process, started on first use (docs/daemon.md)",
    )

    if only == "review":
        return parser

    from bot.daemon_cli import add_daemon_parser
    from bot.dismiss_cli import add_dismiss_parser
    from bot.rules_cli import add_rules_parser
    from bot.service_cli import add_service_parsers
    from bot.simulate_cli import add_simulate_parser

    add_rules_parser(sub)
    add_simulate_parser(sub)
    add_service_parsers(sub)
    add_daemon_parser(sub)
    add_dismiss_parser(sub)
    return parser


@contextmanager
def _progress(enabled: bool) -> Iterator[object]:
    """A transient status line on stderr, only on a terminal, and only once work
    has taken long enough to be worth showing (no flicker on a fast review): a
    timer starts it after PROGRESS_DELAY seconds, whatever stage is running."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    import threading

    from rich.console import Console

    console = Console(stderr=True)
    status = console.status("reading input")
    lock = threading.Lock()
    state = {"shown": False, "done": False}

    def show() -> None:
        with lock:
            if not state["done"]:
                status.start()
                state["shown"] = True

    timer = threading.Timer(PROGRESS_DELAY, show)
    timer.daemon = True
    timer.start()

    def update(text: str) -> None:
        status.update(text)

    try:
        yield update
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["shown"]:
                status.stop()


def _settings_for_review(args: argparse.Namespace, settings: Settings) -> Settings:
    changes: dict[str, object] = {}
    if args.rule:
        changes["enabled_rules"] = tuple(args.rule)
    if args.disable_rule:
        changes["disabled_rules"] = tuple(args.disable_rule)
    if args.no_simulate:
        changes["simulate"] = False
    if args.no_cache:
        changes["cache_dir"] = None
    if args.lore_base:
        changes["lore_base_url"] = args.lore_base.rstrip("/")
    if args.max_input_size is not None:
        if args.max_input_size <= 0:
            raise UsageError("--max-input-size must be positive")
        changes["max_input_bytes"] = args.max_input_size
    return settings.with_(**changes) if changes else settings


def run_review(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from bot.pipeline import review_inputs
    from bot.report import render

    settings = _settings_for_review(args, settings)
    if args.tree and not Path(args.tree).is_dir():
        raise UsageError(f"--tree {args.tree}: not a directory")
    if args.repo and not Path(args.repo).is_dir():
        raise UsageError(f"--repo {args.repo}: not a directory")
    if args.output:
        _check_output(Path(args.output))
    if args.guess_base and not args.tree:
        raise UsageError("--guess-base needs --tree PATH (a git tree)")
    with _progress(not args.quiet) as progress:
        if args.guess_base:
            review = _review_guessing_base(args, settings, progress)
        else:
            review = review_inputs(
                args.inputs,
                settings,
                tree=args.tree,
                version=args.series_version,
                repo=args.repo,
                series_key=args.series_key,
                stdin=sys.stdin.buffer,
                progress=progress if callable(progress) else None,
            )
    out_tty = args.output is None and sys.stdout.isatty()
    color = args.color == "always" or (
        args.color == "auto"
        and out_tty
        and args.format == "text"
        and not os.environ.get("NO_COLOR")  # https://no-color.org
    )
    from bot.dismiss_cli import review_dismissals, warn
    from bot.report.common import introduced

    # findings dismissed earlier (bot dismiss) are shown as such and not counted
    dismissed, trouble = review_dismissals(review, write=not args.no_cache)
    warn(trouble)
    text = render(review, args.format, color=color, dismissed=dismissed)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"-o {args.output}: cannot write: {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    return EXIT_FINDINGS if introduced(review, dismissed) else EXIT_OK


def _review_guessing_base(args: argparse.Namespace, settings: Settings, progress: object) -> Review:
    """review_inputs with the base guessed from the patches' index lines
    (bot/apply/guess_base.py); the review's notes say which base and why."""
    import dataclasses

    from bot import assemble, ingest
    from bot.apply.guess_base import guess_base, with_base
    from bot.errors import InputError
    from bot.pipeline import review_series

    report = progress if callable(progress) else None
    messages = ingest.load(list(args.inputs), settings, stdin=sys.stdin.buffer, progress=report)
    series_set = assemble.assemble(messages, settings)
    series, versions, others = assemble.select(
        series_set, version=args.series_version, key=args.series_key
    )
    if not series.patches:
        raise InputError(f"nothing to review: none of the patches of '{series.name}' is here")
    guess = guess_base(args.tree, series)
    if guess.commit is not None:
        series = with_base(series, guess.commit)
    review = review_series(
        series,
        versions,
        settings,
        tree=args.tree,
        others=others,
        notes=series_set.notes,
        progress=report,
    )
    # the apply stage says "named by the series": the guess named it
    notes = [n for n in review.notes if not n.startswith("applied on base-commit")]
    return dataclasses.replace(review, notes=(guess.note, *notes))


def _check_output(path: Path) -> None:
    """-o FILE is checked before the review runs: a review is not thrown away
    because its file cannot be written."""
    parent = path.parent
    if path.is_dir():
        raise UsageError(f"-o {path}: is a directory")
    if not parent.is_dir():
        raise UsageError(f"-o {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"-o {path}: not writable")


def _check_rules_dir(settings: Settings) -> None:
    """The rules folder must be there before a command that reads it runs."""
    rules = settings.rules_dir
    if not (rules / "scenarios").is_dir():
        raise UsageError(
            f"rules folder not found at {rules}: reinstall the package (it ships rules/ as "
            "bot/rules) or set BOT_RULES_DIR to a copy of the bot's rules/ folder"
        )


def _service_error(exc: Exception) -> BotError | None:
    """The one line for a service command's expected failure (Redis unreachable)."""
    import redis.exceptions

    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return UsageError(f"cannot reach Redis ({detail}): start it or set BOT_BROKER_URL")
    return None


def dispatch(argv: Sequence[str], settings: Settings) -> int:
    # `bot review ...` parses with the review parser alone: the same options, usage
    # and errors, without building (importing) the other subcommands.
    only = "review" if argv and argv[0] == "review" else None
    args = build_parser(only).parse_args(list(argv))
    if args.command in ("review", "rules", "simulate"):
        _check_rules_dir(settings)
    if args.command == "review":
        return run_review(args, settings)
    if args.command == "rules":
        from bot.rules_cli import run_rules

        return run_rules(args, settings)
    if args.command == "simulate":
        from bot.simulate_cli import run_simulate

        return run_simulate(args, settings)
    if args.command == "daemon":
        from bot.daemon_cli import run_daemon

        return run_daemon(args, settings)
    if args.command == "dismiss":
        from bot.dismiss_cli import run_dismiss

        return run_dismiss(args, settings)
    from bot.service_cli import run_service

    port = getattr(args, "port", None)
    if isinstance(port, int) and not 0 < port < 65536:
        raise UsageError(f"--port {port}: not a port number (1-65535)")
    try:
        return run_service(args, settings)
    except Exception as exc:
        mapped = _service_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _daemon_wanted(argv: Sequence[str]) -> bool:
    """`bot review --daemon ...`, or `bot review ...` with BOT_DAEMON=1 (docs/daemon.md)."""
    if not argv or argv[0] != "review":
        return False
    head = argv[: list(argv).index("--")] if "--" in argv else argv
    return "--daemon" in head or os.environ.get("BOT_DAEMON", "") == "1"


def main(argv: Sequence[str] | None = None, *, via_daemon: bool = True) -> int:
    """Entry point of the `bot` console script. With `--daemon` (or BOT_DAEMON=1) a
    review is first offered to the warm daemon (bot.daemon), which calls this with
    via_daemon=False; when none can serve it, it runs here as always."""
    argv = sys.argv[1:] if argv is None else argv
    if via_daemon and _daemon_wanted(argv):
        from bot.daemon import review_via_daemon

        served = review_via_daemon(list(argv))
        if served is not None:
            return served
    try:
        from bot.config import load_settings

        code = dispatch(argv, load_settings())
    except BotError as exc:
        print(f"bot: error: {exc.one_line()}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("bot: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # stdout closed early (`bot review ... | head`): not an error of ours
        code = EXIT_OK
    except Exception as exc:  # the last line of defence: no tracebacks
        if os.environ.get("BOT_DEBUG"):
            import traceback

            traceback.print_exc()
        detail = " ".join(str(exc).split())
        print(
            f"bot: internal error: {type(exc).__name__}: {detail} (BOT_DEBUG=1 for details)",
            file=sys.stderr,
        )
        code = EXIT_INTERNAL
    return code


def run() -> None:
    """The `bot` command (console script and `python -m bot`): main(), then the
    process ends. After a review it ends without tearing the interpreter down:
    the exit handlers run (the on-disk cache's last entries are written) and
    stdout and stderr are flushed, but the parses and memos a review leaves
    are not freed one by one (~0.1 s of a cold review). Other commands (the
    services among them) end as Python ends."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] != ["review"]:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe: what was written is all the reader took
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


__all__ = ["EXIT_USAGE", "build_parser", "main", "run"]
