"""Bench: diff-only review throughput and peak memory over the corpus patches.

The 96 patches in corpus/patches (57 `git format-patch` files backported to 3.14,
39 akpm -mm quilt patches) are reviewed without a tree, two ways, each in its own
child process so that its peak RSS (VmHWM) is its own:

  * individually: one bot.pipeline.review_inputs([file]) per patch file, the way
    a worker reviews one incoming patch at a time;
  * all at once: every file ingested and assembled together, then every series
    found reviewed with bot.pipeline.review_series.

It prints patches per second (target >= 50) and peak RSS (target <= 300 MB) for
each. The clock starts after `import bot.pipeline` and stops after the last
review; the child's total wall time, interpreter start-up included, is printed too.
Each child gets a new, empty on-disk cache (bot/cache.py) in a temporary directory:
every patch is seen for the first time, and the user's cache is never touched.

    .venv/bin/python bench/bench_throughput.py [--limit N] [--corpus DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from common import ROOT, Skip, child_env, corpus_dir, machine_note, peak_rss_mb, run_main

NAME = "bench_throughput"
TARGET_PPS = 50.0
TARGET_RSS_MB = 300.0
EXPECTED_PATCHES = 96
MODES = ("individual", "batch")


class ModeResult(TypedDict):
    """What one child process reports for one mode."""

    mode: str
    files: int
    patches_reviewed: int
    series: int
    introduced_findings: int
    errors: list[str]
    seconds: float
    cpu_seconds: float
    patches_per_second: float
    rss_after_imports_mb: float
    peak_rss_mb: float
    process_wall_s: float  # filled in by the parent


def corpus_patches(corpus: Path) -> list[Path]:
    """The corpus patch files, git-format-patch ones first, each group sorted."""
    root = corpus / "patches"
    found = sorted((root / "hhoffstaette-kernel-patches").rglob("*.patch"))
    found += sorted((root / "sjp38-mmotm" / "broken-out").glob("*.patch"))
    if not found:
        raise Skip(f"no patches under {root}")
    return found


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="review only the first N patch files")
    parser.add_argument("--corpus", metavar="DIR", help="shared corpus (default: settings)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--mode", choices=MODES, action="append", help="run only this mode")
    # internal: the child process that does the work and reports its own VmHWM
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def child(mode: str, files: list[Path]) -> ModeResult:
    """Review `files` in this process; return counts, seconds and peak RSS."""
    from bot.config import load_settings
    from bot.errors import BotError
    from bot.pipeline import review_inputs, review_series

    settings = load_settings()
    rss_before = peak_rss_mb()
    errors: list[str] = []
    reviewed = 0
    introduced = 0
    series_count = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    if mode == "individual":
        for path in files:
            try:
                review = review_inputs([str(path)], settings)
            except BotError as exc:
                errors.append(f"{path.name}: {exc.one_line()}")
                continue
            reviewed += len(review.series.patches)
            introduced += len(review.reportable)
            series_count += 1
    else:
        from bot import assemble, ingest

        messages = ingest.load([str(p) for p in files], settings)
        series_set = assemble.assemble(messages, settings)
        for series in series_set.series:
            review = review_series(series, series_set.versions_of(series.key), settings)
            reviewed += len(series.patches)
            introduced += len(review.reportable)
            series_count += 1
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {
        "mode": mode,
        "files": len(files),
        "patches_reviewed": reviewed,
        "series": series_count,
        "introduced_findings": introduced,
        "errors": errors,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "patches_per_second": reviewed / seconds if seconds > 0 else 0.0,
        "rss_after_imports_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "process_wall_s": 0.0,
    }


def run_child(mode: str, args: argparse.Namespace) -> ModeResult:
    """Run one mode in a fresh interpreter and read its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as cache_dir:
        start = time.perf_counter()
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**child_env(), "BOT_CACHE_DIR": cache_dir},
            check=False,
            timeout=1800,
            stdin=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no stderr"])[-1]
        raise RuntimeError(f"{mode} child exited {proc.returncode}: {last}")
    result: ModeResult = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    files = corpus_patches(corpus_dir(args.corpus))
    if args.limit:
        files = files[: args.limit]
    if args.child:
        print(json.dumps(child(args.child, files)))
        return 0

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "bot")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    results = [run_child(mode, args) for mode in (args.mode or MODES)]
    if args.json:
        doc = {"targets": _targets(), "machine": machine_note(), "results": results}
        print(json.dumps(doc, indent=2))
        return 0
    note = "" if len(files) == EXPECTED_PATCHES or args.limit else f" (expected {EXPECTED_PATCHES})"
    print(f"{NAME}: {len(files)} patch files{note}, diff-only (no --tree)")
    print(f"  machine: {machine_note()}")
    for r in results:
        pps, rss = r["patches_per_second"], r["peak_rss_mb"]
        print(
            f"  {r['mode']:<10} {r['patches_reviewed']} patches in {r['series']} series, "
            f"{r['seconds']:.2f} s wall ({r['cpu_seconds']:.2f} s CPU): {pps:.1f} patches/s "
            f"({'meets' if pps >= TARGET_PPS else 'misses'} target >= {TARGET_PPS:.0f})"
        )
        print(
            f"  {'':<10} peak RSS {rss:.0f} MB "
            f"({'meets' if rss <= TARGET_RSS_MB else 'misses'} target <= {TARGET_RSS_MB:.0f}), "
            f"{r['rss_after_imports_mb']:.0f} MB after imports; "
            f"process wall {r['process_wall_s']:.2f} s; "
            f"{r['introduced_findings']} introduced finding(s)"
        )
        for err in r["errors"]:
            print(f"  {'':<10} error: {err}")
    return 0


def _targets() -> dict[str, float]:
    return {"patches_per_second": TARGET_PPS, "peak_rss_mb": TARGET_RSS_MB}


if __name__ == "__main__":
    run_main(NAME, main)
