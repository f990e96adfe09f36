"""Bench: end-to-end series per minute through the service, with one and two workers.

An archive of generated series (ours: tests/fixtures/service/helpers.generated_archive)
is put in a v2 inbox; then, for one worker process and then for two (measured in the
same run, on fresh Redis state each time), a `poll_mirror` task is sent and the clock
runs until every series the archive holds has been reviewed and committed: mirror read,
storage, assembly, review through bot.pipeline, and the outbox entry. Workers are real
`celery -A workers worker` processes (solo pool, all queues) on a redis-server of the
bench's own. Prints series per minute for each and the scaling ratio.

    .venv/bin/python bench/bench_service.py [--messages N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Skip, run_main

sys.path.insert(0, str(ROOT))

NAME = "bench_service"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=NAME, description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1500, help="archive size (default 1500)")
    parser.add_argument(
        "--timeout", type=float, default=300, help="give up after this many seconds"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        raise Skip("redis-server not found (apt install redis-server)")

    import yaml

    from bot.assemble import assemble
    from bot.config import load_settings
    from bot.ingest import parse_message
    from tests.fixtures.service.helpers import (
        Worker,
        generated_archive,
        redis_server,
        worker_env,
        write_inbox,
    )
    from workers.celery_app import make_app
    from workers.state import State

    messages = generated_archive(args.messages, seed=3)
    series_set = assemble(
        [parse_message(m, "b", i) for i, m in enumerate(messages)], load_settings()
    )
    superseded = {s.revision_of for s in series_set.series if s.revision_of}
    expected = [s.key for s in series_set.series if s.key not in superseded and s.complete]
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp_dir:
        tmp = Path(tmp_dir)
        write_inbox(tmp / "inbox", messages)
        config = tmp / "service.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp / "data"),
                    "batch_size": 20,
                    "lists": {"bench": {"mirror": str(tmp / "inbox"), "wait_seconds": 86400}},
                }
            )
        )
        with redis_server(tmp / "redis") as server:
            env = worker_env(
                server.url(), {"BOT_SERVICE_CONFIG": str(config), "BOT_LOG_FORMAT": "json"}
            )
            for n_workers in (1, 2):
                state = State.from_url(server.url())
                state.r.flushall()
                workers = [
                    Worker(env, name=f"b{n_workers}-{i}", log=tmp / f"w{n_workers}-{i}.log")
                    for i in range(n_workers)
                ]
                try:
                    _wait_ready(tmp, n_workers, args.timeout)
                    client = make_app(server.url())
                    t0 = time.perf_counter()
                    client.send_task("workers.tasks.poll_mirror", args=["bench"])
                    done = _wait_reviewed(state, expected, args.timeout)
                    elapsed = time.perf_counter() - t0
                finally:
                    for w in workers:
                        w.stop()
                    state.r.close()
                if done < len(expected):
                    raise RuntimeError(
                        f"only {done}/{len(expected)} series reviewed in {args.timeout:.0f} s"
                    )
                results[n_workers] = {
                    "seconds": round(elapsed, 2),
                    "series_per_minute": round(len(expected) / elapsed * 60, 1),
                }
    ratio = results[2]["series_per_minute"] / results[1]["series_per_minute"]
    out = {
        "messages": len(messages),
        "series": len(expected),
        "cpus": os.cpu_count(),
        "one_worker": results[1],
        "two_workers": results[2],
        "scaling_ratio": round(ratio, 2),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{NAME}: {len(expected)} series ({len(messages)} messages), {os.cpu_count()} CPUs")
        for n in (1, 2):
            r = results[n]
            print(f"  {n} worker(s): {r['series_per_minute']:>8} series/min ({r['seconds']} s)")
        print(f"  scaling ratio (2 workers / 1 worker): {ratio:.2f}")
    return 0


def _wait_ready(tmp: Path, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    logs = [tmp / f"w{n}-{i}.log" for i in range(n)]
    while time.monotonic() < deadline:
        if all(p.exists() and "ready." in p.read_text(errors="replace") for p in logs):
            return
        time.sleep(0.1)
    raise RuntimeError("workers did not start")


def _wait_reviewed(state: object, keys: list[str], timeout: float) -> int:
    from workers.state import State

    assert isinstance(state, State)
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        pipe = state.r.pipeline(transaction=False)
        for k in keys:
            pipe.exists(state.k("result", "bench", k))
        done = sum(int(x) for x in pipe.execute())
        if done == len(keys):
            break
        time.sleep(0.05)
    return done


if __name__ == "__main__":
    run_main(NAME, main)
