"""`bot simulate`: run the lifecycle simulator on C files directly.

For people writing rules or scenario data and for debugging: name the entry
functions that run concurrently, and the simulator prints every violation it
finds with its shortest counterexample, one column per CPU or worker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.errors import EXIT_FINDINGS, EXIT_OK, InputError, UsageError

if TYPE_CHECKING:
    from bot.analyze.simulate import SimResult, SimViolation

SIMULATE_EPILOG = """\
examples:
  bot simulate mm/foo.c --entry foo_release --teardown foo_css_offline
  bot simulate mm/foo.c      # actors by role: *release*/*free*/*put* names, ops slots
  bot simulate a.c b.h --entry put_path --entry shrink_path --no-reduction

exit codes:
  0  no violation found (within the bounds; reaching one is printed)
  1  at least one violation found
  2  bad usage, or a file that cannot be read
  3  internal error
"""


def add_simulate_parser(subparsers: Any) -> None:
    """Register `bot simulate` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "simulate",
        help="run the lifecycle simulator on C files",
        description="Run entry functions of C files as concurrent actors and report "
        "use-after-free, double free, refcount underflow, work on freed objects and leaks.",
        epilog=SIMULATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE.c", help="C source or header files")
    p.add_argument(
        "--entry",
        action="append",
        default=[],
        metavar="FN",
        help="an actor's entry function (repeatable); without any, actors are found by "
        "role as in a review (release/shrink names, ops slots)",
    )
    p.add_argument(
        "--teardown",
        action="append",
        default=[],
        metavar="FN",
        help="an owner-teardown actor (repeatable)",
    )
    p.add_argument(
        "--tree",
        metavar="DIR",
        help="kernel tree to follow calls into (files next to FILE, headers)",
    )
    p.add_argument("--max-states", type=int, metavar="N", help="state bound (default: settings)")
    p.add_argument("--max-seconds", type=float, metavar="S", help="time bound (default: settings)")
    p.add_argument("--max-threads", type=int, metavar="N", help="thread bound (default: settings)")
    p.add_argument(
        "--no-reduction",
        action="store_true",
        help="explore every order (no partial-order reduction)",
    )
    p.add_argument(
        "--format", choices=["text", "json"], default="text", help="output format (default: text)"
    )


def _read(path: str, settings: Settings) -> str:
    p = Path(path)
    try:
        if p.stat().st_size > settings.max_input_bytes:
            raise InputError(f"larger than {settings.max_input_bytes} bytes", source=path)
        return p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=path) from exc


def _key(path: str, tree: str | None) -> str:
    """A file inside --tree is known by its path in the tree, so the simulator
    finds its neighbours and the headers it includes there."""
    if tree:
        full = Path(path).resolve()
        root = Path(tree).resolve()
        if full.is_relative_to(root):
            return str(full.relative_to(root))
    return path


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Run `bot simulate`; returns the exit code (1 when a violation is found)."""
    changes: dict[str, object] = {}
    for opt, key in (
        ("max_states", "sim_max_states"),
        ("max_seconds", "sim_max_seconds"),
        ("max_threads", "sim_max_threads"),
    ):
        value = getattr(args, opt)
        if value is not None:
            if value <= 0:
                raise UsageError(f"--{opt.replace('_', '-')} must be positive")
            changes[key] = value
    if changes:
        settings = settings.with_(**changes)
    if args.tree and not Path(args.tree).is_dir():
        raise UsageError(f"--tree {args.tree}: not a directory")
    # Imported here: `bot --help` and `bot review` build this parser, and the
    # simulator's modules cost tens of milliseconds to import.
    from bot.analyze.simulate import simulate_source

    files = {_key(path, args.tree): _read(path, settings) for path in args.files}
    result = simulate_source(
        files,
        args.entry,
        settings,
        teardown=args.teardown,
        reduction=not args.no_reduction,
        tree_root=args.tree,
        auto=True,
    )
    text = _json(result) if args.format == "json" else _text(result)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_FINDINGS if result.found else EXIT_OK


def _text(r: SimResult) -> str:
    from bot.analyze.simulate import format_trace

    lines = [
        f"actors: {', '.join(r.actors) or 'none'}",
        f"tracked: {', '.join('struct ' + t for t in r.tracked) or 'nothing'}",
        f"explored {r.states} states, {r.transitions} transitions in {r.seconds:.3f} s"
        + ("" if r.complete else " (incomplete: a bound was reached)"),
    ]
    lines += [f"note: {n}" for n in r.notes]
    shown = _distinct(r)
    if not shown:
        lines.append("no violation found")
    elif len(shown) < len(r.violations):
        lines.append(f"{len(r.violations)} routes; {len(shown)} distinct traces shown")
    for i, v in enumerate(shown, 1):
        lines += ["", f"[{i}] SIM-{v.kind}: {v.detail}", format_trace(v.trace)]
    return "\n".join(lines)


def _distinct(r: SimResult) -> list[SimViolation]:
    """Routes whose shortest traces read the same are printed once."""
    seen: set[tuple[object, ...]] = set()
    out: list[SimViolation] = []
    for v in r.violations:
        look = (v.kind, tuple((s.actor, s.text, s.line) for s in v.trace.steps))
        if look not in seen:
            seen.add(look)
            out.append(v)
    return out


def _json(r: SimResult) -> str:
    doc = {
        "actors": list(r.actors),
        "tracked": list(r.tracked),
        "states": r.states,
        "transitions": r.transitions,
        "complete": r.complete,
        "notes": list(r.notes),
        "violations": [
            {
                "rule_id": f"SIM-{v.kind}",
                "object": v.obj,
                "detail": v.detail,
                "summary": v.trace.summary,
                "actors": dict(v.trace.actor_roles),
                "steps": [
                    {
                        "actor": s.actor,
                        "text": s.text,
                        "function": s.function,
                        "file": s.file,
                        "line": s.line,
                    }
                    for s in v.trace.steps
                ],
            }
            for v in r.violations
        ],
    }
    return json.dumps(doc, indent=2)
