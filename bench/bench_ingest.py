"""Bench: mirror ingest throughput, messages per second through assembly.

A public-inbox v2 archive of at least 20,000 real-looking linux-mm messages, written
by us (tests/fixtures/service/helpers.generated_archive: series of 1-6 patches with
cover letters, diffs, and replies with quotes and trailers), is split into epochs and
read the way the service reads a mirror, in three timed stages:

  read      walk every epoch from an empty cursor (git rev-list + cat-file --batch)
  store     routing headers, seen-set, thread and title indexes in Redis, cursor moves
  assemble  every touched thread assembled and its series recorded (the work of the
            assemble_thread task, run in this process so Celery overhead is not counted)

Redis is a redis-server of the bench's own on a free port (append-only, fsync always,
as the restart test uses). Prints messages per second for each stage and end to end.

    .venv/bin/python bench/bench_ingest.py [--messages N] [--per-epoch N] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Skip, run_main

sys.path.insert(0, str(ROOT))

NAME = "bench_ingest"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="archive size (default 20000)")
    parser.add_argument("--per-epoch", type=int, default=8_000, help="messages per epoch")
    parser.add_argument("--batch", type=int, default=500, help="messages per Redis transaction")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        raise Skip("redis-server not found (apt install redis-server)")

    from bot.config import load_settings
    from bot.ingest.mirror import PublicInboxMirror
    from tests.fixtures.service.helpers import generated_archive, redis_server, write_inbox
    from workers.intake import ingest_mirror
    from workers.review import route_threads
    from workers.state import State

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_dir:
        tmp = Path(tmp_dir)
        messages = generated_archive(args.messages)
        write_inbox(tmp / "inbox", messages, per_epoch=args.per_epoch)
        mirror = PublicInboxMirror(str(tmp / "inbox"), tmp / "cache")
        epochs = mirror.sync()

        t0 = time.perf_counter()
        walked = sum(1 for _ in mirror.walk({}))
        t_read = time.perf_counter() - t0

        with redis_server(tmp / "redis") as server:
            state = State.from_url(server.url())
            queued: list[list[str]] = []
            t0 = time.perf_counter()
            stats = ingest_mirror(
                state,
                "bench",
                mirror,
                lambda _s, roots: queued.append(roots),
                batch_size=args.batch,
            )
            t_store = time.perf_counter() - t0

            t0 = time.perf_counter()
            series = 0
            for roots in queued:
                series += len(route_threads(state, "bench", roots, settings))
            t_assemble = time.perf_counter() - t0
            state.r.close()

    total = t_store + t_assemble
    result = {
        "messages": len(messages),
        "epochs": len(epochs),
        "walked": walked,
        "stored": stats.stored,
        "threads": stats.threads,
        "series_recorded": series,
        "read_msgs_per_s": round(walked / t_read, 1),
        "store_msgs_per_s": round(stats.stored / t_store, 1),
        "assemble_msgs_per_s": round(stats.stored / t_assemble, 1),
        "through_assembly_msgs_per_s": round(stats.stored / total, 1),
        "seconds": {
            "read": round(t_read, 2),
            "store": round(t_store, 2),
            "assemble": round(t_assemble, 2),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{NAME}: {len(messages)} messages in {len(epochs)} epochs, {stats.threads} threads")
        print(f"  read from git       {result['read_msgs_per_s']:>10} msgs/s ({t_read:.2f} s)")
        print(f"  stored in Redis     {result['store_msgs_per_s']:>10} msgs/s ({t_store:.2f} s)")
        print(
            f"  assembled           {result['assemble_msgs_per_s']:>10} msgs/s ({t_assemble:.2f} s)"
        )
        rate = result["through_assembly_msgs_per_s"]
        print(f"  through assembly    {rate:>10} msgs/s (store + assemble)")
    return 0


if __name__ == "__main__":
    run_main(NAME, main)
