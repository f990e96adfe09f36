"""Bench: reviewing the seed v3 series against checkpatch.pl on the same patches.

Times, in the same run and interleaved round by round (so machine drift hits all
three alike):

  * checkpatch.pl --no-tree on the three v3 patches (the baseline a maintainer
    already runs on every patch; one perl process for the three files),
  * `bot review <the three patches> --tree kernel/v3.15.5` as a subprocess (what a
    user pays, interpreter start-up included),
  * bot.pipeline.review_inputs + bot.report.render in this process (the cost the
    Celery worker pays per series, start-up excluded).

It prints the median wall time of each and the ratio bot/checkpatch (target <= 1.0).

    .venv/bin/python bench/bench_review.py [--runs 7] [--corpus DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import (
    Skip,
    Timed,
    bot_command,
    checkpatch_path,
    corpus_dir,
    machine_note,
    run_main,
    run_quiet,
    timed,
)

NAME = "bench_review"
SEED_PATCHES = (
    "v3-0001-patch-1of3.eml",
    "v3-0002-patch-2of3.eml",
    "v3-0003-patch-3of3.eml",
)
TARGET_RATIO = 1.0
# checkpatch exits 1 when it found style problems; the v3 patches have a few.
CHECKPATCH_OK = (0, 1)
# bot review: 0 nothing introduced, 1 findings introduced; 2/3 mean the bench is broken.
BOT_OK = (0, 1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument("--corpus", metavar="DIR", help="shared corpus (default: settings)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    corpus = corpus_dir(args.corpus)
    patches = [corpus / "seed" / name for name in SEED_PATCHES]
    tree = corpus / "kernel" / "v3.15.5"
    for path in [*patches, tree]:
        if not path.exists():
            raise Skip(f"{path} not found in the corpus")

    try:
        checkpatch: Path | None = checkpatch_path()
    except Skip as exc:
        checkpatch = None
        print(f"{NAME}: baseline skipped: {exc}")

    from bot.config import load_settings
    from bot.pipeline import review_inputs
    from bot.report import render

    settings = load_settings()
    cli_cmd = [*bot_command(), "review", *map(str, patches), "--tree", str(tree), "-q"]
    cp_cmd = ["perl", str(checkpatch), "--no-tree", "--color=never", *map(str, patches)]

    def in_process() -> list[str]:
        review = review_inputs([str(p) for p in patches], settings, tree=str(tree))
        render(review, "text", color=False)
        return [
            f"{f.rule_id}@{f.function or f.file} (patch {f.patch_number})"
            for f in review.reportable
        ]

    # The first in-process review pays for imports, tree-sitter and rule loading; it
    # is reported apart, and every subprocess run pays it again by design.
    start = time.perf_counter()
    introduced = in_process()
    cold = time.perf_counter() - start
    # One untimed run of each subprocess so a cold page cache does not land in run 1.
    run_quiet(cli_cmd, BOT_OK)
    if checkpatch:
        run_quiet(cp_cmd, CHECKPATCH_OK)

    load_before = machine_note()
    times: dict[str, list[tuple[float, float]]] = {"checkpatch": [], "cli": [], "inproc": []}
    for _ in range(args.runs):
        if checkpatch:
            times["checkpatch"].append(timed(lambda: run_quiet(cp_cmd, CHECKPATCH_OK)))
        times["cli"].append(timed(lambda: run_quiet(cli_cmd, BOT_OK)))
        times["inproc"].append(timed(in_process))

    def series(label: str, key: str) -> Timed:
        return Timed(label, tuple(w for w, _ in times[key]), tuple(c for _, c in times[key]))

    cli = series("bot review (CLI subprocess)", "cli")
    inproc = series("bot review (in-process)", "inproc")
    base = series("checkpatch.pl --no-tree", "checkpatch") if checkpatch else None

    result: dict[str, object] = {
        "series": "seed v3 1-3/3",
        "tree": str(tree),
        "runs": args.runs,
        "introduced_findings": introduced,
        "machine_before": load_before,
        "machine_after": machine_note(),
        "bot_cli_cpu_median_s": round(cli.cpu_median, 4),
        "bot_inprocess_cpu_median_s": round(inproc.cpu_median, 4),
        "checkpatch_cpu_median_s": round(base.cpu_median, 4) if base else None,
        "ratio_cli_cpu": round(cli.cpu_median / base.cpu_median, 3) if base else None,
        "bot_cli_median_s": round(cli.median, 4),
        "bot_inprocess_median_s": round(inproc.median, 4),
        "bot_inprocess_cold_s": round(cold, 4),
        "checkpatch_median_s": round(base.median, 4) if base else None,
        "ratio_cli": round(cli.median / base.median, 3) if base else None,
        "ratio_inprocess": round(inproc.median / base.median, 3) if base else None,
        "target_ratio": TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    print(f"{NAME}: seed v3 series (3 patches) on {tree}, {args.runs} run(s) each, interleaved")
    print(f"  machine: before {load_before}; after {machine_note()}")
    rows = [t for t in (base, cli, inproc) if t is not None]
    for t in rows:
        print(
            f"  {t.label:<30} median {t.median:7.3f} s wall, {t.cpu_median:7.3f} s CPU"
            f"   (wall {t.spread})"
        )
    print(f"  {'bot in-process, first run':<30}        {cold:7.3f} s   (imports and setup)")
    print(f"  introduced findings: {len(introduced)}: {', '.join(introduced) or '-'}")
    if base:
        for label, t in (("CLI", cli), ("in-process", inproc)):
            ratio = t.median / base.median
            verdict = "meets" if ratio <= TARGET_RATIO else "misses"
            print(
                f"  ratio bot/checkpatch ({label}): {ratio:.2f} wall, "
                f"{t.cpu_median / base.cpu_median:.2f} CPU"
                f"  ({verdict} target <= {TARGET_RATIO:.1f} on wall time)"
            )
    return 0


if __name__ == "__main__":
    run_main(NAME, main)
