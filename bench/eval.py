"""Evaluation: recall and false positives on the eval-dev kernel fixes.

Each eval-dev case (corpus/eval-dev/<id>, built into --trees by
scripts/prepare-eval-trees.sh) is reviewed with the real `bot review` command:

  bug direction (positives):  bot review <id>.bug.patch --tree <id> --format json
                              expected: at least one finding with status "introduced"
  fix direction (every case): bot review <id>.fix.patch --tree <id>.pre-fix --format json
                              expected: no introduced finding

and again without --tree (the diff-only variant: what the bot says from the diff's
own context). It prints a per-case table, recall on positives, the false-positive
rate (negatives flagged, plus positives flagged in the fix direction), both overall
and per rule / simulator finding id, and the health of every check.

    .venv/bin/python bench/eval.py [--trees DIR] [--corpus DIR] [--case ID]...
                                   [--variant tree|diff-only] [--jobs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_EVAL_TREES,
    Skip,
    bot_command,
    child_env,
    corpus_dir,
    machine_note,
    run_main,
)

NAME = "eval"
VARIANTS = ("tree", "diff-only")
# bot review exit codes: 0 nothing introduced, 1 something introduced; 2 and 3 are
# errors (refused input, internal error) and are reported as such, never scored as
# a clean review.
EXIT_CLEAN, EXIT_FINDINGS = 0, 1
INTRODUCED = "introduced"


@dataclass(frozen=True)
class Case:
    """One eval-dev case, from its meta.json."""

    id: str
    kind: str  # "positive" or "negative"
    bug_class: str
    tree: str  # "6.1" or "6.12"
    functions: tuple[str, ...]  # the functions the fix touches

    @property
    def positive(self) -> bool:
        return self.kind == "positive"


@dataclass(frozen=True)
class Hit:
    """One introduced finding, reduced to what the scoring needs."""

    rule_id: str
    function: str
    file: str
    line: int | None
    simulator: bool


@dataclass
class Run:
    """One `bot review` invocation and what came out of it."""

    case: str
    kind: str
    bug_class: str
    direction: str  # "bug" or "fix"
    variant: str  # "tree" or "diff-only"
    command: list[str]
    seconds: float = 0.0
    exit_code: int | None = None
    error: str = ""
    introduced: list[Hit] = field(default_factory=list)
    other_status: dict[str, int] = field(default_factory=dict)
    applied: str = ""  # how the patch applied, e.g. "git-am-3way ok"
    failed_checks: list[str] = field(default_factory=list)
    check_notes: list[str] = field(default_factory=list)
    localized: bool = False  # an introduced finding names a function the fix touches
    schema_error: str = ""  # the JSON does not match docs/review.schema.json

    @property
    def expected_flag(self) -> bool:
        return self.direction == "bug"

    @property
    def flagged(self) -> bool:
        return bool(self.introduced)

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.expected_flag:
            return "hit" if self.flagged else "MISS"
        return "FP" if self.flagged else "quiet"


def load_cases(corpus: Path, only: Sequence[str]) -> list[Case]:
    """Every eval-dev case (or those named in `only`), sorted positives first."""
    root = corpus / "eval-dev"
    if not root.is_dir():
        raise Skip(f"{root} not found (the corpus has no eval-dev cases)")
    cases: list[Case] = []
    for meta_path in sorted(root.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        cases.append(
            Case(
                id=str(meta["id"]),
                kind=str(meta["kind"]),
                bug_class=str(meta.get("bug_class") or "-"),
                tree=str(meta.get("tree") or "?"),
                functions=tuple(str(f) for f in meta.get("functions") or ()),
            )
        )
    known = {c.id for c in cases}
    unknown = [c for c in only if c not in known]
    if unknown:
        raise Skip(
            f"no such eval-dev case: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    if only:
        cases = [c for c in cases if c.id in only]
    return sorted(cases, key=lambda c: (not c.positive, c.id))


def plan_runs(
    cases: Iterable[Case], trees: Path, variants: Sequence[str], corpus: Path | None = None
) -> list[Run]:
    """The bot invocations to make: bug direction for positives, fix direction for
    all, once per variant. A case whose trees are not prepared raises Skip, except
    diff-only alone, which then reviews the corpus' own bug.patch and fix.patch."""
    runs: list[Run] = []
    for case in cases:
        bug_patch = trees / f"{case.id}.bug.patch"
        fix_patch = trees / f"{case.id}.fix.patch"
        post_fix = trees / case.id
        pre_fix = trees / f"{case.id}.pre-fix"
        missing = [p for p in (bug_patch, fix_patch, post_fix, pre_fix) if not p.exists()]
        if missing and corpus is not None and tuple(variants) == ("diff-only",):
            bug_patch = corpus / "eval-dev" / case.id / "bug.patch"
            fix_patch = corpus / "eval-dev" / case.id / "fix.patch"
            missing = []
        if missing:
            raise Skip(
                f"case {case.id} is not prepared in {trees} (missing {missing[0].name}); "
                f"run scripts/prepare-eval-trees.sh {trees}"
            )
        directions = [("bug", bug_patch, post_fix)] if case.positive else []
        directions.append(("fix", fix_patch, pre_fix))
        for variant in variants:
            for direction, patch, tree in directions:
                cmd = [*bot_command(), "review", str(patch), "--format", "json", "-q"]
                if variant == "tree":
                    cmd += ["--tree", str(tree)]
                runs.append(
                    Run(case.id, case.kind, case.bug_class, direction, variant, command=cmd)
                )
    return runs


def execute(run: Run, case: Case, timeout: float) -> Run:
    """Run the bot for `run` and fill in what it said."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            run.command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        run.seconds = time.perf_counter() - start
        run.error = f"timed out after {timeout:.0f} s"
        return run
    run.seconds = time.perf_counter() - start
    run.exit_code = proc.returncode
    if proc.returncode not in (EXIT_CLEAN, EXIT_FINDINGS):
        last = (proc.stderr.strip().splitlines() or ["no stderr"])[-1]
        run.error = f"exit {proc.returncode}: {last}"
        return run
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        run.error = f"output is not JSON ({exc.msg} at line {exc.lineno})"
        return run
    if not isinstance(doc, dict):
        run.error = "output JSON is not an object"
        return run
    score_document(run, doc, case)
    run.schema_error = schema_problem(doc)
    # The exit code and the findings must agree (docs/cli.md): a mismatch is a bug
    # worth seeing in the table rather than silently trusting one of the two.
    if (proc.returncode == EXIT_FINDINGS) != run.flagged:
        run.error = (
            f"exit {proc.returncode} but {len(run.introduced)} introduced finding(s) in the JSON"
        )
    return run


SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "review.schema.json"


def schema_problem(doc: dict[str, Any]) -> str:
    """One line on how `doc` breaks docs/review.schema.json; "" when it conforms
    (or when there is no schema to check against). Reported, not scored: the
    findings are still read from a document that breaks its schema."""
    if not SCHEMA.is_file():
        return ""
    import jsonschema

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(doc)
    )
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {' '.join(error.message.split())[:160]}"


def score_document(run: Run, doc: dict[str, Any], case: Case) -> None:
    """Read findings, apply results and check outcomes out of one JSON review."""
    statuses: Counter[str] = Counter()
    for f in doc.get("findings") or []:
        status = str(f.get("status", ""))
        if status != INTRODUCED:
            statuses[status] += 1
            continue
        rule_id = str(f.get("rule_id") or "?")
        run.introduced.append(
            Hit(
                rule_id=rule_id,
                function=str(f.get("function") or ""),
                file=str(f.get("file") or ""),
                line=f.get("line") if isinstance(f.get("line"), int) else None,
                simulator=rule_id.upper().startswith("SIM") or bool(f.get("trace")),
            )
        )
    run.other_status = dict(statuses)
    run.localized = any(names_function(case.functions, h.function) for h in run.introduced)
    applied: list[str] = []
    for p in doc.get("patches") or []:
        a = p.get("applied") if isinstance(p, dict) else None
        if isinstance(a, dict):
            method = str(a.get("method") or "?")
            applied.append(f"{method} {'ok' if a.get('ok') else 'FAILED'}")
    run.applied = ", ".join(applied)
    for c in doc.get("checks") or []:
        if not isinstance(c, dict):
            continue
        name = str(c.get("check") or "?")
        if c.get("ok") is False:
            run.failed_checks.append(f"{name}: {c.get('error') or 'failed'}")
        run.check_notes.extend(f"{name}: {n}" for n in c.get("notes") or [])


def names_function(expected: Iterable[str], found: str) -> bool:
    """Whether `found` is one of the `expected` function names. meta.json names a
    syscall by its macro (SYSCALL_DEFINE1) while the bot names it sys_<name>."""
    return any(
        found == e or (e.startswith("SYSCALL_DEFINE") and found.startswith("sys_"))
        for e in expected
    )


def note_kind(note: str) -> str:
    """A check note with its particulars (numbers, function names) blanked, so the
    summary counts runs per kind of note instead of listing every variant."""
    note = re.sub(r"\b[A-Za-z_]\w*\(\)", "<fn>()", note)
    note = re.sub(r"(no definition found for|not followed:?) [\w, .]+", r"\1 <fn>", note)
    note = re.sub(r"\(\d+\): [^()]*? not followed", "(N): <fn> not followed", note)
    return re.sub(r"\b\d+\b", "N", note)


@dataclass
class RuleTally:
    """How one rule (or simulator finding id) scored across the runs of a variant."""

    simulator: bool = False
    hits: set[str] = field(default_factory=set)  # positives flagged in the bug direction
    false_positives: set[str] = field(default_factory=set)  # fix directions flagged


def summarise(runs: Sequence[Run], cases: Sequence[Case]) -> dict[str, Any]:
    """Recall, false-positive rate, per-rule and per-check figures for one variant."""
    bug = [r for r in runs if r.direction == "bug"]
    fix = [r for r in runs if r.direction == "fix"]
    neg_fix = [r for r in fix if r.kind == "negative"]
    pos_fix = [r for r in fix if r.kind == "positive"]
    rules: dict[str, RuleTally] = defaultdict(RuleTally)
    for r in runs:
        for h in r.introduced:
            tally = rules[h.rule_id]
            tally.simulator = tally.simulator or h.simulator
            (tally.hits if r.direction == "bug" else tally.false_positives).add(r.case)
    checks_failed: Counter[str] = Counter()
    check_notes: Counter[str] = Counter()
    for r in runs:
        checks_failed.update(s.split(":", 1)[0] for s in r.failed_checks)
        check_notes.update({note_kind(n) for n in r.check_notes})

    def rate(num: int, den: int) -> float | None:
        return num / den if den else None

    hits = sum(r.flagged and not r.error for r in bug)
    slowest = max(runs, key=lambda r: r.seconds, default=None)
    flagged_fix = [r for r in fix if r.flagged and not r.error]
    return {
        "positives": len(bug),
        "recall": rate(hits, len(bug)),
        "hits": hits,
        "localized_hits": sum(r.localized and not r.error for r in bug),
        "fix_runs": len(fix),
        "false_positive_rate": rate(len(flagged_fix), len(fix)),
        "false_positives": len(flagged_fix),
        "negatives_flagged": sum(r.flagged and not r.error for r in neg_fix),
        "negatives": len(neg_fix),
        "positive_fixes_flagged": sum(r.flagged and not r.error for r in pos_fix),
        "positive_fixes": len(pos_fix),
        "errors": sum(bool(r.error) for r in runs),
        "schema_violations": sum(bool(r.schema_error) for r in runs),
        "seconds_total": sum(r.seconds for r in runs),
        "seconds_median": statistics.median(r.seconds for r in runs) if runs else 0.0,
        "slowest": f"{slowest.case} {slowest.direction}" if slowest else "",
        "seconds_max": slowest.seconds if slowest else 0.0,
        "rules": {
            rule_id: {
                "simulator": t.simulator,
                "hits": sorted(t.hits),
                "false_positives": sorted(t.false_positives),
                "precision": rate(len(t.hits), len(t.hits) + len(t.false_positives)),
            }
            for rule_id, t in sorted(rules.items())
        },
        "classes": _per_class(bug),
        "checks_failed": dict(checks_failed),
        "check_notes": dict(check_notes),
        "cases": len(cases),
    }


def _per_class(bug: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Recall per bug class (leak, uaf, ...): nothing hides behind an average."""
    out: dict[str, dict[str, Any]] = {}
    for r in bug:
        c = out.setdefault(r.bug_class, {"positives": 0, "hits": [], "misses": []})
        c["positives"] += 1
        (c["hits"] if r.flagged and not r.error else c["misses"]).append(r.case)
    for c in out.values():
        c["recall"] = len(c["hits"]) / c["positives"] if c["positives"] else None
    return dict(sorted(out.items()))


def print_variant(variant: str, runs: Sequence[Run], summary: dict[str, Any]) -> None:
    """The per-case table and the summary for one variant, as plain text."""
    title = "with --tree" if variant == "tree" else "diff-only (no --tree)"
    print(f"\n== {title}")
    header = (
        f"{'case':<31} {'kind':<8} {'class':<18} {'dir':<3} {'verdict':<7} {'time':>7}  introduced"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        found = ", ".join(f"{h.rule_id}@{h.function or h.file}" for h in r.introduced) or "-"
        if r.error:
            found = r.error
        print(
            f"{r.case:<31} {r.kind:<8} {r.bug_class:<18} {r.direction:<3} "
            f"{r.verdict:<7} {r.seconds:6.1f}s  {found}"
        )
        if r.applied and variant == "tree" and "FAILED" in r.applied:
            print(f"{'':<31} applied: {r.applied}")
        for failed in r.failed_checks:
            print(f"{'':<31} check failed: {failed}")
        if r.schema_error:
            print(f"{'':<31} JSON breaks docs/review.schema.json at {r.schema_error}")

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    s = summary
    print(
        f"recall: {s['hits']}/{s['positives']} positives flagged ({pct(s['recall'])}); "
        f"{s['localized_hits']} in a function the fix touches"
    )
    print(
        f"false positives: {s['false_positives']}/{s['fix_runs']} fix-direction reviews flagged "
        f"({pct(s['false_positive_rate'])}): negatives {s['negatives_flagged']}/{s['negatives']}, "
        f"positives' fixes {s['positive_fixes_flagged']}/{s['positive_fixes']}"
    )
    print(
        f"errors: {s['errors']}; JSON schema violations: {s['schema_violations']}; "
        f"review time total {s['seconds_total']:.1f} s, median {s['seconds_median']:.1f} s, "
        f"slowest {s['seconds_max']:.1f} s ({s['slowest']})"
    )
    if s.get("classes"):
        print("per bug class (positives flagged):")
        for name, c in s["classes"].items():
            print(
                f"  {name:<20} {len(c['hits'])}/{c['positives']} ({pct(c['recall'])})"
                f"  missed: {','.join(c['misses']) or '-'}"
            )
    if s["rules"]:
        print("per rule / simulator finding id (hits: positives flagged; FP: fixes flagged):")
        for rule_id, t in s["rules"].items():
            source = "simulator" if t["simulator"] else "rule"
            print(
                f"  {rule_id:<14} {source:<9} hits {len(t['hits'])}/{s['positives']}"
                f" {','.join(t['hits']) or '-'}; FP {len(t['false_positives'])}/{s['fix_runs']}"
                f" {','.join(t['false_positives']) or '-'}; precision {pct(t['precision'])}"
            )
    else:
        print("per rule / simulator finding id: no introduced finding in any run")
    for name, n in sorted(s["checks_failed"].items()):
        print(f"  check {name} failed in {n} run(s)")
    if s["check_notes"]:
        print(f"check notes (runs with each kind of note, of {len(runs)}):")
    for note, n in sorted(s["check_notes"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {n:3d}  {note}")


def _git_show(repo: Path, ref: str, path: str) -> str | None:
    """A file's text at `ref` in `repo`, or None when it does not exist there."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:{path}"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def parse_check(cases: Sequence[Case], trees: Path, corpus: Path) -> list[dict[str, Any]]:
    """Preflight without the pipeline: parse each case's patches with
    bot.analyze.diff.parse_diff and map hunks to functions with
    bot.analyze.cfunc.touched_functions, from the diff alone and from the full
    file images in the case repo; compare with the functions meta.json names."""
    from bot.analyze.cfunc import touched_functions
    from bot.analyze.diff import parse_diff
    from bot.apply.images import diff_only_images
    from bot.errors import BotError
    from bot.model import FileImage, PatchImages

    rows: list[dict[str, Any]] = []
    for case in cases:
        repo = trees / case.id
        inputs = [
            ("bug.patch", trees / f"{case.id}.bug.patch", ("post-fix", "pre-fix")),
            ("fix.patch", trees / f"{case.id}.fix.patch", ("pre-fix", "post-fix")),
            ("corpus fix.patch", corpus / "eval-dev" / case.id / "fix.patch", None),
        ]
        for label, path, refs in inputs:
            row: dict[str, Any] = {"case": case.id, "input": label, "expected": case.functions}
            rows.append(row)
            try:
                files = parse_diff(path.read_text(encoding="utf-8", errors="replace"), str(path))
                row["files"] = [f.path for f in files]
                row["hunks"] = sum(len(f.hunks) for f in files)
                diff_only = touched_functions(diff_only_images(1, files))
                row["diff_only"] = sorted({c.name for c in diff_only})
                if refs and repo.is_dir():
                    images = tuple(
                        FileImage(
                            path=f.path,
                            pre=_git_show(repo, refs[0], f.old_path) if f.old_path else None,
                            post=_git_show(repo, refs[1], f.new_path) if f.new_path else None,
                        )
                        for f in files
                    )
                    full = touched_functions(PatchImages(1, files, images))
                    row["full"] = sorted({c.name for c in full})
            except BotError as exc:
                row["error"] = exc.one_line()
            except Exception as exc:  # a crash here is exactly what the preflight reports
                row["error"] = f"crash: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return rows


def print_parse_check(rows: Sequence[dict[str, Any]]) -> None:
    """One line per parsed patch: functions found from the diff and from the tree."""
    print("== parse check: parse_diff + touched_functions (expected: meta.json functions)")
    for row in rows:
        head = f"{row['case']:<31} {row['input']:<16}"
        if "error" in row:
            print(f"{head} ERROR {row['error']}")
            continue
        expected = set(row["expected"])
        parts = [f"{len(row['files'])} file(s) {row['hunks']} hunk(s)"]
        for key in ("diff_only", "full"):
            if key in row:
                found = set(row[key])
                missing = sorted(
                    e for e in expected if not any(names_function([e], f) for f in found)
                )
                extra = sorted(f for f in found if not names_function(expected, f))
                parts.append(
                    f"{key}: {len(expected) - len(missing)}/{len(expected)} expected"
                    + (f", missing {','.join(missing)}" if missing else "")
                    + (f", also {','.join(extra)}" if extra else "")
                )
        print(f"{head} " + "; ".join(parts))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trees",
        metavar="DIR",
        default=str(DEFAULT_EVAL_TREES),
        help=f"prepared case trees (default {DEFAULT_EVAL_TREES})",
    )
    parser.add_argument("--corpus", metavar="DIR", help="shared corpus (default: settings)")
    parser.add_argument(
        "--case", action="append", default=[], metavar="ID", help="only this case (repeatable)"
    )
    parser.add_argument(
        "--variant", choices=VARIANTS, action="append", help="only this variant (repeatable)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="reviews run at once (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds per review (default 600)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--parse-only",
        action="store_true",
        help="only parse the patches and map hunks to functions (no review)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    corpus = corpus_dir(args.corpus)
    trees = Path(args.trees)
    if not trees.is_dir():
        raise Skip(f"eval trees not found at {trees} (run scripts/prepare-eval-trees.sh {trees})")
    cases = load_cases(corpus, args.case)
    if args.parse_only:
        rows = parse_check(cases, trees, corpus)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print_parse_check(rows)
        return 0
    variants = args.variant or list(VARIANTS)
    runs = plan_runs(cases, trees, variants, corpus)
    by_id = {c.id: c for c in cases}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(lambda r: execute(r, by_id[r.case], args.timeout), runs))

    report: dict[str, Any] = {"trees": str(trees), "machine": machine_note(), "variants": {}}
    if not args.json:
        print(f"{NAME}: {len(cases)} case(s) in {trees}; machine: {report['machine']}")
    for variant in variants:
        vruns = [r for r in done if r.variant == variant]
        summary = summarise(vruns, cases)
        report["variants"][variant] = {
            "summary": summary,
            "runs": [{**asdict(r), "verdict": r.verdict, "flagged": r.flagged} for r in vruns],
        }
        if not args.json:
            print_variant(variant, vruns, summary)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    run_main(NAME, main)
