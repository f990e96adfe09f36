"""Noise and recall on real mm patches: the corpus' patches/mmotm-noise.

Every patch of a sample of patches/mmotm-noise (real -mm patches from mmotm
snapshots, 2021-2022; see its README.md) is reviewed with the real `bot review`
command, diff-only by default:

  noise:   bot review <sample>/<id>__<name>.patch --format json -q [--tree DIR]
           (with --pre-image, on the tree with the patch reversed: the tree the
           patch was written against; only patches that reverse-apply)
           every introduced finding is listed with the verdict
           findings-judged-2026-12.csv gives it (true / plausible / false), or
           UNJUDGED for a human to read the patch and judge
  recall:  bot review reversed-fixes/<id>__swap.patch --format json -q [--tree DIR]
           each re-introduces a lifecycle bug fixed upstream: it must be flagged

It prints the errors (exit 2/3 with their one stderr line), introduced findings
per 100 patches (and the 2026-12-06 figure from index.csv), every finding with its
verdict, a per-rule table and the reversed fixes flagged. The JSON is read the way
bench/eval.py reads it (its score_document).

    .venv/bin/python bench/noise.py [--sample primary|extended|all] [--tree DIR [--pre-image]]
                                    [--jobs N] [--limit N] [--corpus DIR]
                                    [--timeout S] [--json] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import (
    Skip,
    bot_command,
    child_env,
    corpus_dir,
    cpu_seconds,
    machine_note,
    run_main,
)
from eval import (
    EXIT_CLEAN,
    EXIT_FINDINGS,
    INTRODUCED,
    Case,
    Run,
    note_kind,
    schema_problem,
    score_document,
)
from noise_variants import Variants
from preimage import PreImages, reverse_applies

NAME = "noise"
FOLDER = Path("patches") / "mmotm-noise"
SAMPLES = {"primary": ("primary",), "extended": ("extended",), "all": ("primary", "extended")}
REVERSED = "reversed-fixes"
JUDGED = "findings-judged-2026-12.csv"
JUDGED_DATE = "2026-12-06"  # the bot run index.csv and the judged findings come from
VERDICTS = ("true", "plausible", "false")
UNJUDGED = "UNJUDGED"


@dataclass(frozen=True)
class Patch:
    """One patch file of the folder, with what index.csv says about it."""

    id: str  # P031, X180: the file name's part before "__"
    path: Path
    subject: str
    label: str  # lifecycle_fix_label: L1, L2, no, unlabelled
    before: tuple[str, ...]  # "RULE:function" the bot introduced on JUDGED_DATE, this mode


@dataclass(frozen=True)
class Judged:
    """One row of findings-judged-2026-12.csv."""

    verdict: str
    reason: str
    modes: str  # where it was reported: diff, tree, pre (true pre-image), diff(series)


@dataclass(frozen=True)
class Finding:
    """One introduced finding of one review, with its verdict."""

    patch_id: str
    rule_id: str
    variant: str  # "?" when neither the JSON nor the rule's wording tells
    function: str
    file: str
    line: int | None
    message: str
    verdict: str  # true / plausible / false, or UNJUDGED
    reason: str = ""  # the judge's reason, when judged


@dataclass
class Review:
    """One patch (or reversed fix) reviewed: the eval-style Run and its findings."""

    patch: Patch
    run: Run
    findings: list[Finding] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs


def noise_dir(corpus: Path) -> Path:
    """corpus/patches/mmotm-noise; Skip when it (or its index.csv) is absent."""
    root = corpus / FOLDER
    if not (root / "index.csv").is_file():
        raise Skip(f"{root}/index.csv not found (the corpus has no mmotm-noise patches)")
    return root


def read_index(root: Path) -> dict[str, dict[str, str]]:
    """index.csv by patch id."""
    with (root / "index.csv").open(encoding="utf-8", newline="") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def patch_id(path: Path) -> str:
    return path.name.split("__", 1)[0]


def load_patches(
    root: Path, folders: Iterable[str], index: Mapping[str, Mapping[str, str]], mode: str | None
) -> list[Patch]:
    """The patch files of `folders`, sorted by name. `mode` ("diff" or "tree")
    picks which index.csv column of earlier findings each carries (None: none, for
    the reversed fixes, whose index.csv row is the fix's own)."""
    column = {"diff": "diff_introduced", "tree": "tree_introduced"}.get(mode or "", "")
    patches: list[Patch] = []
    for folder in folders:
        if not (root / folder).is_dir():
            raise Skip(f"{root / folder} not found")
        for path in sorted((root / folder).glob("*.patch")):
            row = index.get(patch_id(path), {})
            listed = (row.get(column) or "") if column else ""
            before = tuple(k.strip() for k in listed.split(";") if k.strip())
            patches.append(
                Patch(
                    id=patch_id(path),
                    path=path,
                    subject=row.get("subject") or path.name,
                    label=row.get("lifecycle_fix_label") or "?",
                    before=before,
                )
            )
    return patches


def load_judged(root: Path) -> dict[tuple[str, str, str, str], Judged]:
    """findings-judged-2026-12.csv by (patch_id, rule_id, variant, function); empty
    when the file is absent (every finding is then UNJUDGED)."""
    path = root / JUDGED
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        return {
            (r["patch_id"], r["rule_id"], r["variant"], r["function"]): Judged(
                verdict=r["verdict"], reason=r["reason"], modes=r["modes"]
            )
            for r in csv.DictReader(fh)
        }


# --------------------------------------------------------------------------- reviews


def review_command(patch: Path, tree: Path | None) -> list[str]:
    cmd = [*bot_command(), "review", str(patch), "--format", "json", "-q"]
    return [*cmd, "--tree", str(tree)] if tree else cmd


def execute(review: Review, timeout: float, env: Mapping[str, str]) -> dict[str, Any] | None:
    """Run the review and fill in review.run the way bench/eval.py's execute does
    (exit 2/3, a timeout, output that is not JSON, or an exit code that disagrees
    with the findings is an error); return the JSON document, or None."""
    run = review.run
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            run.command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        run.seconds = time.perf_counter() - start
        run.error = f"timed out after {timeout:.0f} s"
        return None
    run.seconds = time.perf_counter() - start
    run.exit_code = proc.returncode
    if proc.returncode not in (EXIT_CLEAN, EXIT_FINDINGS):
        last = (proc.stderr.strip().splitlines() or ["no stderr"])[-1]
        run.error = f"exit {proc.returncode}: {last}"
        return None
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        run.error = f"output is not JSON ({exc.msg} at line {exc.lineno})"
        return None
    if not isinstance(doc, dict):
        run.error = "output JSON is not an object"
        return None
    score_document(run, doc, Case(review.patch.id, run.kind, run.bug_class, "", ()))
    run.schema_error = schema_problem(doc)
    if (proc.returncode == EXIT_FINDINGS) != run.flagged:
        run.error = (
            f"exit {proc.returncode} but {len(run.introduced)} introduced finding(s) in the JSON"
        )
    return doc


def judge(
    review: Review,
    doc: Mapping[str, Any],
    variants: Variants,
    judged: Mapping[tuple[str, str, str, str], Judged],
) -> None:
    """review.findings from the document: score_document's introduced hits (same
    order) with their message, variant and verdict."""
    raw = [
        f
        for f in doc.get("findings") or []
        if isinstance(f, dict) and str(f.get("status", "")) == INTRODUCED
    ]
    for hit, f in zip(review.run.introduced, raw, strict=True):
        variant = variants.of(f)
        row = judged.get((review.patch.id, hit.rule_id, variant, hit.function))
        older = variants.symbol_of_default.get((hit.rule_id, variant))
        if row is None and older:
            row = judged.get((review.patch.id, hit.rule_id, older, hit.function))
        review.findings.append(
            Finding(
                patch_id=review.patch.id,
                rule_id=hit.rule_id,
                variant=variant,
                function=hit.function,
                file=hit.file,
                line=hit.line,
                message=" ".join(str(f.get("message") or "").split()),
                verdict=row.verdict if row else UNJUDGED,
                reason=row.reason if row else "",
            )
        )


def review_all(
    patches: Sequence[Patch],
    *,
    kind: str,
    tree: Path | None,
    jobs: int,
    timeout: float,
    env: Mapping[str, str],
    variants: Variants,
    judged: Mapping[tuple[str, str, str, str], Judged],
    progress: Callable[[], None],
    pre: PreImages | None = None,
) -> list[Review]:
    """Review every patch, `jobs` at a time, in order; with `pre`, each on the
    tree with that patch reversed (patches that do not reverse-apply were left
    out by the caller)."""
    direction = "bug" if kind == "reversed-fix" else "patch"
    variant = "tree" if tree else "diff-only"

    def reviewed(patch: Patch, on: Path | None) -> Review:
        run = Run(patch.id, kind, patch.label, direction, variant, review_command(patch.path, on))
        review = Review(patch, run)
        doc = execute(review, timeout, env)
        if doc is not None:
            judge(review, doc, variants, judged)
        return review

    def one(patch: Patch) -> Review:
        if pre is None:
            review = reviewed(patch, tree)
        else:
            with pre.reversed(patch.path) as slot:
                review = reviewed(patch, slot)
                if slot is None:
                    review.run.error = "no longer reverse-applies"
        progress()
        return review

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, patches))


# --------------------------------------------------------------------------- summary


def per_100(n: int, patches: int) -> float | None:
    return 100 * n / patches if patches else None


def summarise(
    noise: Sequence[Review], reversed_fixes: Sequence[Review], seconds_wall: float, cpu: float
) -> dict[str, Any]:
    """The figures of one run."""
    ok = [r for r in noise if not r.run.error]
    findings = [f for r in ok for f in r.findings]
    before = sum(len(r.patch.before) for r in ok)
    now_keys: Counter[tuple[str, str]] = Counter()
    before_keys: Counter[tuple[str, str]] = Counter()
    for r in ok:
        now_keys.update((r.patch.id, f"{f.rule_id}:{f.function}") for f in r.findings)
        before_keys.update((r.patch.id, key) for key in r.patch.before)
    rules: dict[str, dict[str, Any]] = {}
    for f in findings:
        t = rules.setdefault(
            f.rule_id,
            {"findings": 0, "patches": set(), "variants": Counter(), "verdicts": Counter()},
        )
        t["findings"] += 1
        t["patches"].add(f.patch_id)
        t["variants"][f.variant] += 1
        t["verdicts"][f.verdict] += 1
    all_runs = [r.run for r in (*noise, *reversed_fixes)]
    slowest = max(all_runs, key=lambda r: r.seconds, default=None)
    rev_ok = [r for r in reversed_fixes if not r.run.error]
    check_notes: Counter[str] = Counter()
    checks_failed: Counter[str] = Counter()
    for r in noise:
        check_notes.update({note_kind(n) for n in r.run.check_notes})
        checks_failed.update(s.split(":", 1)[0] for s in r.run.failed_checks)
    return {
        "patches": len(noise),
        "reviewed": len(ok),
        "errors": len(noise) - len(ok),
        "introduced": len(findings),
        "patches_flagged": sum(bool(r.findings) for r in ok),
        "per_100": per_100(len(findings), len(ok)),
        "per_100_before": per_100(before, len(ok)),
        "introduced_before": before,
        "new_since_before": sum((now_keys - before_keys).values()),
        "gone_since_before": sorted(f"{p} {k}" for p, k in (before_keys - now_keys).elements()),
        "verdicts": {v: sum(f.verdict == v for f in findings) for v in (*VERDICTS, UNJUDGED)},
        "rules": {
            rule_id: {
                "findings": t["findings"],
                "patches": len(t["patches"]),
                "variants": dict(t["variants"]),
                "verdicts": dict(t["verdicts"]),
            }
            for rule_id, t in sorted(rules.items())
        },
        "schema_violations": sum(bool(r.schema_error) for r in all_runs),
        "checks_failed": dict(checks_failed),
        "reviews_with_failed_check": sum(bool(r.failed_checks) for r in all_runs),
        "check_notes": dict(check_notes),
        "reversed_fixes": len(reversed_fixes),
        "reversed_flagged": sum(bool(r.findings) for r in rev_ok),
        "reversed_errors": len(reversed_fixes) - len(rev_ok),
        "recall": (
            sum(bool(r.findings) for r in rev_ok) / len(reversed_fixes) if reversed_fixes else None
        ),
        "seconds_wall": seconds_wall,
        "cpu_seconds": cpu,
        "seconds_reviews_total": sum(r.seconds for r in all_runs),
        "seconds_median": statistics.median(r.seconds for r in all_runs) if all_runs else 0.0,
        "slowest": slowest.case if slowest else "",
        "seconds_max": slowest.seconds if slowest else 0.0,
    }


# --------------------------------------------------------------------------- output


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def print_report(
    header: str,
    noise: Sequence[Review],
    reversed_fixes: Sequence[Review],
    s: Mapping[str, Any],
    machine_end: str,
) -> None:
    print(header)

    print(f"\n== reversed lifecycle fixes ({REVERSED}/): each must be flagged")
    for r in reversed_fixes:
        verdict = "ERROR" if r.run.error else ("hit" if r.findings else "MISS")
        found = r.run.error or (
            ", ".join(f"{f.rule_id}/{f.variant}@{f.function or f.file}" for f in r.findings) or "-"
        )
        print(f"  {r.patch.id} {r.patch.label:<3} {verdict:<5} {r.run.seconds:5.1f}s  {found}")
        print(f"       {r.patch.subject}")

    errors = [r for r in noise if r.run.error]
    print(f"\n== errors: {len(errors)}")
    for r in errors:
        print(f"  {r.patch.id} {r.run.error}")
    for r in (*noise, *reversed_fixes):
        if r.run.schema_error:
            print(f"  {r.patch.id} JSON breaks docs/review.schema.json at {r.run.schema_error}")

    print(
        f"\n== introduced findings: {s['introduced']} "
        f"(verdicts from {JUDGED}; UNJUDGED: read the patch and judge)"
    )
    by_id = {r.patch.id: r for r in noise}
    for r in noise:
        for f in [] if r.run.error else r.findings:
            where = f"{f.file}:{f.line}" if f.line else f.file
            print(
                f"  {f.patch_id} {f.rule_id:<15} {f.variant:<27} {f.function or '-':<30} "
                f"{f.verdict:<9} {where}"
            )
            print(f"       patch: {by_id[f.patch_id].patch.subject}")
            print(f"       says:  {f.message}")
            if f.reason:
                print(f"       judged {f.verdict}: {f.reason}")
    if s["gone_since_before"]:
        print(f"  no longer reported (index.csv, {JUDGED_DATE}, this mode):")
        for gone in s["gone_since_before"]:
            print(f"    {gone}")

    print("\n== per rule")
    if not s["rules"]:
        print("  no introduced finding")
    else:
        cols = " ".join(f"{v:>9}" for v in (*VERDICTS, UNJUDGED))
        print(f"  {'rule':<15} {'findings':>8} {'patches':>7} {cols}  variants")
        for rule_id, t in s["rules"].items():
            counts = " ".join(f"{t['verdicts'].get(v, 0):>9}" for v in (*VERDICTS, UNJUDGED))
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(t["variants"].items()))
            print(f"  {rule_id:<15} {t['findings']:>8} {t['patches']:>7} {counts}  {kinds}")
    for name, n in sorted(s["checks_failed"].items()):
        print(f"  check {name} failed in {n} review(s)")
    if s["check_notes"]:
        print(f"check notes (reviews with each kind of note, of {s['patches']}; top 8):")
        ranked = sorted(s["check_notes"].items(), key=lambda kv: (-kv[1], kv[0]))
        for note, n in ranked[:8]:
            print(f"  {n:4d}  {note}")

    v = s["verdicts"]
    rev = s["reversed_fixes"]
    recall = "n/a" if s["recall"] is None else f"{100 * s['recall']:.0f}%"
    print("\n== summary")
    print(f"patches reviewed: {s['reviewed']} of {s['patches']}")
    print(f"errors: {s['errors']} (exit 2/3, timeout or unreadable output; listed above)")
    print(
        f"reviews with a crashed check (rule or simulator; its findings are missing): "
        f"{s['reviews_with_failed_check']} of {s['patches'] + rev}"
    )
    print(
        f"introduced findings per 100 patches: {_rate(s['per_100'])} "
        f"({s['introduced']} finding(s) on {s['patches_flagged']} patch(es); "
        f"{JUDGED_DATE}: {_rate(s['per_100_before'])}, {s['introduced_before']} finding(s); "
        f"new {s['new_since_before']}, gone {len(s['gone_since_before'])})"
    )
    print("verdicts: " + ", ".join(f"{k} {v[k]}" for k in VERDICTS) + f", {UNJUDGED} {v[UNJUDGED]}")
    print(
        f"reversed fixes flagged: {s['reversed_flagged']}/{rev} ({recall}); "
        f"errors {s['reversed_errors']}"
    )
    print(
        f"time: {s['seconds_wall']:.1f} s wall, {s['cpu_seconds']:.1f} s CPU; review time total "
        f"{s['seconds_reviews_total']:.1f} s, median {s['seconds_median']:.2f} s, slowest "
        f"{s['seconds_max']:.1f} s ({s['slowest']})"
    )
    print(f"machine at the end: {machine_end}")


def review_record(r: Review) -> dict[str, Any]:
    run = asdict(r.run)
    run.pop("introduced")  # the findings below carry the same, with message and verdict
    return {
        "id": r.patch.id,
        "file": str(r.patch.path),
        "subject": r.patch.subject,
        "label": r.patch.label,
        "before": list(r.patch.before),
        **run,
        "findings": [asdict(f) for f in r.findings],
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", metavar="DIR", help="shared corpus (default: settings)")
    parser.add_argument(
        "--sample",
        choices=tuple(SAMPLES),
        default="primary",
        help="which patches: primary/ (339, default), extended/ (608) or all",
    )
    parser.add_argument(
        "--tree",
        metavar="DIR",
        help="review on this kernel tree (a 6.1 checkout, e.g. ~/.cache/heldout-linux/"
        "linux-6.1 after scripts/prepare-eval-trees.sh); default: diff-only",
    )
    parser.add_argument(
        "--pre-image",
        action="store_true",
        help="with --tree: review each patch that reverse-applies to the tree on the tree "
        "with it reversed (its true pre-image; bench/preimage.py), and only those",
    )
    parser.add_argument("--jobs", type=int, default=2, help="reviews run at once (default 2)")
    parser.add_argument(
        "--limit", type=int, metavar="N", help="only the first N patches (and reversed fixes)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds per review (default 600)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the text"
    )
    parser.add_argument(
        "--out", metavar="FILE", help="write the JSON object to FILE (the text is still printed)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.pre_image and not args.tree:
        parser.error("--pre-image needs --tree")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    root = noise_dir(corpus_dir(args.corpus))
    tree = Path(args.tree).expanduser() if args.tree else None
    if tree and not tree.is_dir():
        raise Skip(
            f"kernel tree not found at {tree} (scripts/prepare-eval-trees.sh builds the 6.1 "
            "base tree in ~/.cache/heldout-linux/linux-6.1)"
        )
    mode = "tree" if tree else "diff"
    index = read_index(root)
    patches = load_patches(root, SAMPLES[args.sample], index, mode)[: args.limit]
    fixes = load_patches(root, (REVERSED,), index, None)[: args.limit]
    offered = len(patches)
    if args.pre_image and tree:
        patches = [p for p in patches if reverse_applies(tree, p.path)]
    judged = load_judged(root)
    variants = Variants()

    machine = machine_note()
    where = f"--tree {tree}" if tree else "diff-only (no --tree)"
    if args.pre_image:
        where += (
            f" with each patch reversed (true pre-image: {len(patches)} of {offered} reverse-apply)"
        )
    header = (
        f"{NAME}: {len(patches)} patch(es) of {args.sample} and {len(fixes)} reversed fix(es) "
        f"in {root}, {where}, {args.jobs} job(s); machine: {machine}"
    )
    if not judged:
        header += f"\n{NAME}: {JUDGED} not found: every finding is UNJUDGED"

    total = len(patches) + len(fixes)
    done = [0]
    lock = threading.Lock()

    def progress() -> None:
        if not sys.stderr.isatty():
            return
        with lock:
            done[0] += 1
            print(f"\r{NAME}: {done[0]}/{total} reviewed", end="", file=sys.stderr, flush=True)

    start, cpu = time.perf_counter(), cpu_seconds()
    # One private, initially empty bot.cache for the whole run (parses are shared
    # between its reviews, as for a user; the user's own cache is never touched),
    # and no hand-over to a review daemon: every review runs in its own process.
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as cache_dir:
        env = {**child_env(), "BOT_CACHE_DIR": cache_dir}
        env.pop("BOT_DAEMON", None)
        shared: dict[str, Any] = {
            "tree": tree,
            "jobs": args.jobs,
            "timeout": args.timeout,
            "env": env,
            "variants": variants,
            "judged": judged,
            "progress": progress,
        }
        reversed_fixes = review_all(fixes, kind="reversed-fix", **shared)
        if args.pre_image and tree:
            with PreImages(tree, args.jobs, Path(cache_dir)) as pre:
                noise = review_all(patches, kind="noise", pre=pre, **shared)
        else:
            noise = review_all(patches, kind="noise", **shared)
    if sys.stderr.isatty() and total:
        print(file=sys.stderr)
    summary = summarise(noise, reversed_fixes, time.perf_counter() - start, cpu_seconds() - cpu)
    machine_end = machine_note()

    report = {
        "corpus_folder": str(root),
        "sample": args.sample,
        "tree": str(tree) if tree else None,
        "pre_image": bool(args.pre_image),
        "jobs": args.jobs,
        "limit": args.limit,
        "machine": machine,
        "machine_end": machine_end,
        "summary": summary,
        "findings": [asdict(f) for r in noise for f in r.findings],
        "patches": [review_record(r) for r in noise],
        "reversed_fixes": [review_record(r) for r in reversed_fixes],
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json and not args.out:
        print(json.dumps(report, indent=2))
    else:
        print_report(header, noise, reversed_fixes, summary, machine_end)
    return 0


if __name__ == "__main__":
    run_main(NAME, main)
