"""Bench: reviewing the seed v3 series against checkpatch.pl on the same patches.

Times, in the same run and interleaved round by round (so machine drift hits all
of them alike):

  * checkpatch.pl --no-tree on the three v3 patches (the baseline a maintainer
    already runs on every patch; one perl process for the three files),
  * `bot review <the three patches> --tree kernel/v3.15.5` as a subprocess (what a
    user pays, interpreter start-up included), three ways, by what the on-disk
    cache (bot/cache.py, docs/configuration.md) holds when the run starts:
      - no cache (`--no-cache`): every parse from scratch;
      - after v2: the cache as reviewing the seed's v2 (two patches on the same
        tree) left it, restored before every run: the tree's files and the
        functions the respin did not change are known, the new texts are not;
      - same series again: the cache after an earlier review of these patches
        (which holds that whole review: bot/review_cache.py);
      - daemon: `bot review --daemon` handed to the warm daemon (bot/daemon.py,
        docs/daemon.md), started and warmed by the untimed warm-up, its socket in
        the bench's temporary directory, stopped at the end (it reads back the
        review the warm-up kept, as a re-run with the daemon does);
  * bot.pipeline.review_inputs + bot.report.render in this process, without the
    on-disk cache, its in-process memos warm: the analysis a warm Celery worker
    pays per new series, start-up excluded (a kept review would skip it).

The bot's modules are byte-compiled first (`compileall`): this machine sets
PYTHONDONTWRITEBYTECODE=1, so without it every run would compile ~50 modules,
which no installed Python package pays. The caches live in a temporary directory,
never the user's.

It prints the median wall time of each and the ratio bot/checkpatch (target <= 1.0).

    .venv/bin/python bench/bench_review.py [--runs 7] [--corpus DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
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
RESPIN_PATCHES = ("v2-0001-patch-1of3.eml", "v2-0002-patch-2of3.eml")
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

    from bot import cache

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "bot"), str(ROOT / "workers")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        return _bench(args, patches, tree, checkpatch, scratch=scratch, corpus=corpus)
    finally:
        cache.configure(None)
        # the daemon the warm-up started (if any) exits before its directory goes
        run_quiet([*bot_command(), "daemon", "stop"], (0, 1), env=_daemon_env(scratch))
        shutil.rmtree(scratch, ignore_errors=True)


def _daemon_env(scratch: Path) -> dict[str, str]:
    """The daemon row's environment: its socket directory and cache in `scratch`,
    never the user's."""
    return {
        "XDG_RUNTIME_DIR": str(scratch / "run"),
        "BOT_CACHE_DIR": str(scratch / "daemon"),
    }


def _start_daemon(cmd: list[str], env: dict[str, str], directory: Path) -> int:
    """Warm-up of the daemon row: the first `--daemon` run reviews in-process and
    starts the daemon; once it answers, one review it serves warms it. Returns how
    many reviews it has served."""
    from bot.daemon import ask

    run_quiet(cmd, BOT_OK, env=env)
    deadline = time.monotonic() + 60
    while ask(str(directory), "status") is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the review daemon did not start (see {directory}/daemon.log)")
        time.sleep(0.05)
    run_quiet(cmd, BOT_OK, env=env)
    info = ask(str(directory), "status") or {}
    return int(info.get("served", 0))


def _bench(
    args: argparse.Namespace,
    patches: list[Path],
    tree: Path,
    checkpatch: Path | None,
    *,
    scratch: Path,
    corpus: Path,
) -> int:
    from bot.cache import DB_NAME
    from bot.config import load_settings
    from bot.daemon import ask
    from bot.pipeline import review_inputs
    from bot.report import render

    # no on-disk cache: a review kept there (bot/review_cache.py) would be read
    # back from the second run on, and this row measures the analysis itself
    settings = load_settings().with_(cache_dir=None)
    cli_cmd = [*bot_command(), "review", *map(str, patches), "--tree", str(tree), "-q"]
    cp_cmd = ["perl", str(checkpatch), "--no-tree", "--color=never", *map(str, patches)]
    respin = [str(corpus / "seed" / name) for name in RESPIN_PATCHES]
    caches = {name: scratch / name for name in ("after-v2", "same")}
    envs = {name: {"BOT_CACHE_DIR": str(path)} for name, path in caches.items()}
    envs["daemon"] = _daemon_env(scratch)
    (scratch / "run").mkdir(mode=0o700)
    daemon_dir = scratch / "run" / "mmlc-bot"
    daemon_cmd = [*cli_cmd, "--daemon"]

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
    # The v2 respin's cache, kept as a snapshot and restored before each timed run.
    run_quiet(
        [*bot_command(), "review", *respin, "--tree", str(tree), "-q"], BOT_OK, env=envs["after-v2"]
    )
    snapshot = scratch / "after-v2.sqlite3"
    shutil.copyfile(caches["after-v2"] / DB_NAME, snapshot)

    def restore() -> None:
        for extra in ("-wal", "-shm"):
            (caches["after-v2"] / (DB_NAME + extra)).unlink(missing_ok=True)
        shutil.copyfile(snapshot, caches["after-v2"] / DB_NAME)

    # One untimed run of each subprocess so a cold page cache does not land in run 1;
    # it also fills the "same series" cache.
    run_quiet([*cli_cmd, "--no-cache"], BOT_OK)
    run_quiet(cli_cmd, BOT_OK, env=envs["same"])
    if checkpatch:
        run_quiet(cp_cmd, CHECKPATCH_OK)
    served_before = _start_daemon(daemon_cmd, envs["daemon"], daemon_dir)

    load_before = machine_note()
    keys = ("checkpatch", "cli_nocache", "cli_after_v2", "cli_same", "cli_daemon", "inproc")
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
    for _ in range(args.runs):
        if checkpatch:
            times["checkpatch"].append(timed(lambda: run_quiet(cp_cmd, CHECKPATCH_OK)))
        times["cli_nocache"].append(timed(lambda: run_quiet([*cli_cmd, "--no-cache"], BOT_OK)))
        restore()
        times["cli_after_v2"].append(
            timed(lambda: run_quiet(cli_cmd, BOT_OK, env=envs["after-v2"]))
        )
        times["cli_same"].append(timed(lambda: run_quiet(cli_cmd, BOT_OK, env=envs["same"])))
        times["cli_daemon"].append(timed(lambda: run_quiet(daemon_cmd, BOT_OK, env=envs["daemon"])))
        times["inproc"].append(timed(in_process))
    # A --daemon run the daemon did not serve (it went stale: the checkout was
    # edited meanwhile) reviewed in-process and is slower: say how many it served.
    daemon_info = ask(str(daemon_dir), "status") or {}
    served = int(daemon_info.get("served", 0)) - served_before
    rss_kb = daemon_info.get("rss_kb")

    def series(label: str, key: str) -> Timed:
        return Timed(label, tuple(w for w, _ in times[key]), tuple(c for _, c in times[key]))

    bots = [
        ("cli_nocache", series("bot review, no cache", "cli_nocache")),
        ("cli_after_v2", series("bot review, cache after v2", "cli_after_v2")),
        ("cli_same", series("bot review, same series again", "cli_same")),
        ("cli_daemon", series("bot review --daemon (warm)", "cli_daemon")),
        ("inprocess", series("bot review (in-process)", "inproc")),
    ]
    base = series("checkpatch.pl --no-tree", "checkpatch") if checkpatch else None

    result: dict[str, object] = {
        "series": "seed v3 1-3/3",
        "tree": str(tree),
        "runs": args.runs,
        "introduced_findings": introduced,
        "machine_before": load_before,
        "machine_after": machine_note(),
        "checkpatch_median_s": round(base.median, 4) if base else None,
        "checkpatch_cpu_median_s": round(base.cpu_median, 4) if base else None,
        "bot_inprocess_cold_s": round(cold, 4),
        "daemon_served_runs": served,
        "daemon_rss_kb": rss_kb,
        "target_ratio": TARGET_RATIO,
    }
    for key, t in bots:
        result[f"bot_{key}_median_s"] = round(t.median, 4)
        result[f"bot_{key}_cpu_median_s"] = round(t.cpu_median, 4)
        result[f"ratio_{key}"] = round(t.median / base.median, 3) if base else None
        result[f"ratio_{key}_cpu"] = round(t.cpu_median / base.cpu_median, 3) if base else None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    print(f"{NAME}: seed v3 series (3 patches) on {tree}, {args.runs} run(s) each, interleaved")
    print(f"  machine: before {load_before}; after {machine_note()}")
    print("  bytecode: compiled by the bench (compileall) before the runs")
    rows = ([base] if base else []) + [t for _, t in bots]
    for t in rows:
        print(
            f"  {t.label:<32} median {t.median:7.3f} s wall, {t.cpu_median:7.3f} s CPU"
            f"   (wall {t.spread})"
        )
    print(f"  {'bot in-process, first run':<32}        {cold:7.3f} s   (imports and setup)")
    rss = f", its RSS {rss_kb / 1024:.0f} MB" if isinstance(rss_kb, int) else ""
    print(f"  daemon: served {served} of the {args.runs} timed --daemon run(s){rss}")
    print("  (the --daemon row's CPU is the client's only: the daemon's own is not counted)")
    print(f"  introduced findings: {len(introduced)}: {', '.join(introduced) or '-'}")
    if base:
        for _, t in bots:
            ratio = t.median / base.median
            verdict = "meets" if ratio <= TARGET_RATIO else "misses"
            print(
                f"  ratio {t.label + ':':<33} {ratio:5.2f} wall, "
                f"{t.cpu_median / base.cpu_median:5.2f} CPU"
                f"  ({verdict} target <= {TARGET_RATIO:.1f} on wall time)"
            )
    return 0


if __name__ == "__main__":
    run_main(NAME, main)
