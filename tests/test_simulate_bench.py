"""bench/bench_simulator.py runs and prints its figures (a smoke run: the
figures themselves are measurements, not assertions, except the state counts
the reduction must save)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_simulator_bench_prints_rows_with_and_without_reduction() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_simulator.py"),
            "--quick",
            "--max-seconds",
            "0.3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {(r["workload"], r["reduction"]): r for r in doc["rows"]}
    for threads in (2, 3, 4):
        for ops in (10, 20):
            on = rows[(f"{threads} threads x {ops} ops", True)]
            off = rows[(f"{threads} threads x {ops} ops", False)]
            assert on["complete"] and on["violations"] == 1
            assert on["states"] < off["states"]
    if not doc["seed_skipped"]:
        assert rows[("seed post-image (leak)", True)]["violations"] >= 1
