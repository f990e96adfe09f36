"""`bot rules list|explain ID|validate|test`: the rules, their docs and their examples.

list       one line per rule: ID, symbol, severity, confidence, name
explain    everything a rule says about itself (rationale, matchers, examples)
validate   rules/rule.schema.json and rules/api/schema.json over every file; exit 1
           on any problem
test       every rule's bad*/good*/todo-*.patch through the real pipeline (diff-only,
           or on rules/<ID>/tree/ when the rule ships one); exit 1 when a bad example
           is not flagged by its rule or a good one is flagged by any rule
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bot.config import Settings
from bot.errors import EXIT_FINDINGS, EXIT_OK, UsageError
from bot.model import Status

# The engine (and jsonschema, yaml) is imported by the functions that use it:
# `bot --help` and `bot review` build this parser, and should not pay for it.
if TYPE_CHECKING:
    from bot.analyze.engine import Rule

_P = TypeVar("_P", bound=argparse.ArgumentParser)


def add_rules_parser(subparsers: argparse._SubParsersAction[_P]) -> None:
    """Add `rules` and its sub-commands to the `bot` parser (any ArgumentParser
    subclass, e.g. the CLI's parser that raises UsageError instead of exiting)."""
    rules = subparsers.add_parser(
        "rules",
        help="list, explain, validate and test the lifecycle rules",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="one line per rule")
    explain = sub.add_parser("explain", help="what a rule finds and why")
    explain.add_argument("rule_id", metavar="ID", help="rule ID (MMLC001) or symbol")
    sub.add_parser(
        "validate", help="check every rule.yaml and rules/api/*.yaml (exit 1 on problems)"
    )
    test = sub.add_parser("test", help="run every rule's example patches through the pipeline")
    test.add_argument("ids", nargs="*", metavar="ID", help="only these rules (default: all)")


@dataclass(frozen=True)
class ExampleResult:
    """How one example patch fared."""

    rule: str
    example: str  # file name: bad.patch, good.patch, todo-*.patch
    kind: str  # "bad" | "good" | "todo"
    flagged_by: tuple[str, ...]  # rule IDs with an introduced finding
    ok: bool
    note: str


def _kind(path: Path) -> str:
    name = path.name
    if name.startswith("bad"):
        return "bad"
    if name.startswith("good"):
        return "good"
    return "todo"


def run_example(rule: Rule, path: Path, settings: Settings) -> ExampleResult:
    """Review one example patch through the real pipeline with every rule enabled
    and the simulator off, and judge it against its kind."""
    from bot.pipeline import review_inputs

    tree = rule.folder / "tree"
    review = review_inputs(
        [str(path)],
        settings.with_(simulate=False, enabled_rules=(), disabled_rules=()),
        tree=str(tree) if tree.is_dir() else None,
    )
    failed = [c.check for c in review.checks if not c.ok]
    flagged = tuple(sorted({f.rule_id for f in review.findings if f.status is Status.INTRODUCED}))
    kind = _kind(path)
    if failed:
        return ExampleResult(rule.id, path.name, kind, flagged, False, f"check failed: {failed}")
    if kind == "bad":
        ok = rule.id in flagged
        note = "flagged" if ok else f"NOT flagged by {rule.id}"
    elif kind == "good":
        ok = not flagged
        note = "quiet" if ok else f"flagged by {', '.join(flagged)}"
    else:
        ok = True  # a known miss is recorded, not a failure
        note = "now caught: rename to bad-*.patch" if rule.id in flagged else "known miss"
    return ExampleResult(rule.id, path.name, kind, flagged, ok, note)


def run_examples(settings: Settings, ids: tuple[str, ...] = ()) -> list[ExampleResult]:
    """Every example of the selected rules (all when `ids` is empty)."""
    from bot.analyze.engine import load_rules

    rules = _select(load_rules(settings.rules_dir), ids)
    results: list[ExampleResult] = []
    for rule in rules:
        for path in sorted(rule.folder.glob("*.patch")):
            results.append(run_example(rule, path, settings))
    return results


def _select(rules: list[Rule], ids: tuple[str, ...]) -> list[Rule]:
    if not ids:
        return rules
    by = {r.id: r for r in rules} | {r.symbol: r for r in rules}
    missing = [i for i in ids if i not in by]
    if missing:
        raise UsageError(f"unknown rule {missing[0]!r} (see `bot rules list`)")
    chosen = {by[i].id: by[i] for i in ids}
    return list(chosen.values())


def _list(settings: Settings) -> int:
    from bot.analyze.engine import load_rules

    rules = load_rules(settings.rules_dir)
    width = max((len(r.symbol) for r in rules), default=10)
    for r in rules:
        print(f"{r.id}  {r.symbol:<{width}}  {r.severity:<7}  {r.confidence:<6}  {r.name}")
    return EXIT_OK


def _wrap(text: str, indent: str = "  ") -> str:
    return textwrap.fill(
        " ".join(text.split()), width=78, initial_indent=indent, subsequent_indent=indent
    )


def _explain(settings: Settings, rule_id: str) -> int:
    from bot.analyze.engine import load_rules
    from bot.analyze.rules_match import MATCHERS

    rule = _select(load_rules(settings.rules_dir), (rule_id,))[0]
    out = [
        f"{rule.id} {rule.symbol}: {rule.name}",
        f"severity {rule.severity}, confidence {rule.confidence}",
        "",
        "Why:",
        _wrap(rule.rationale),
        "",
        "Matchers:",
    ]
    for name in rule.matchers:
        m = MATCHERS[name]
        out.append(f"  {name} ({m.kind}):")
        out.append(_wrap(m.doc, "    "))
    out += ["", "Message:", _wrap(rule.message), "", "Question:", _wrap(rule.question)]
    examples = sorted(p.name for p in rule.folder.glob("*.patch"))
    out += ["", "Examples: " + ", ".join(examples) + f" (in {rule.folder})"]
    out += ["", "References:", *(f"  {ref}" for ref in rule.references)]
    print("\n".join(out))
    return EXIT_OK


def _validate(settings: Settings) -> int:
    from bot.analyze.api import load_vocabulary, validate_api_dir
    from bot.analyze.engine import load_rules, validate_rules

    problems = validate_api_dir(settings.rules_dir / "api") + validate_rules(settings.rules_dir)
    if problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)")
        return EXIT_FINDINGS
    rules = load_rules(settings.rules_dir)
    vocab = load_vocabulary(settings.rules_dir)
    print(
        f"ok: {len(rules)} rules, {len(vocab.families)} API families, {len(vocab.names)} API names"
    )
    return EXIT_OK


def _test(settings: Settings, ids: tuple[str, ...]) -> int:
    results = run_examples(settings, ids)
    print(f"{'rule':<8} {'example':<28} {'kind':<5} {'result':<5} note")
    for r in results:
        print(f"{r.rule:<8} {r.example:<28} {r.kind:<5} {'ok' if r.ok else 'FAIL':<5} {r.note}")
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)}/{len(results)} examples behave as labelled")
    return EXIT_FINDINGS if bad else EXIT_OK


def run_rules(args: argparse.Namespace, settings: Settings) -> int:
    """Run `bot rules ...`; returns the exit code."""
    cmd = args.rules_command
    if cmd == "list":
        return _list(settings)
    if cmd == "explain":
        return _explain(settings, args.rule_id)
    if cmd == "validate":
        return _validate(settings)
    if cmd == "test":
        return _test(settings, tuple(args.ids))
    raise UsageError(f"unknown rules action {cmd!r}")


__all__ = ["ExampleResult", "add_rules_parser", "run_example", "run_examples", "run_rules"]
