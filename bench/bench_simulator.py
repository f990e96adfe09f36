"""Bench: the lifecycle simulator's cost, with and without its reduction.

Two workloads, each explored twice in the same run (partial-order reduction on,
then off), printing states explored, states per second, time to the first
counterexample and whether the search completed within its bounds:

  * the seed (v3 1/3 of the memcg-vs-slab series on kernel v3.15.5): pre-image
    (the use-after-free) and post-image (the leak), as `bot review` runs them;
  * a synthetic family: T threads (2, 3, 4) of N operations each (10 to 60),
    each thread mostly updating a counter of its own (independent work the
    reduction should collapse) and then dropping its reference to a shared
    object; thread 0 touches the object after its put, so a use-after-free is
    reachable once thread 0 drops the last reference.

    .venv/bin/python bench/bench_simulator.py [--quick] [--max-seconds S]
                                              [--max-states N] [--corpus DIR] [--json]

Without the reduction the synthetic family grows like (N+1)^T and hits the
state or time bound (printed as `bound`), which is the point of the comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

from common import Skip, corpus_dir, machine_note, run_main

NAME = "bench_simulator"
THREADS = (2, 3, 4)
OPS = (10, 20, 40, 60)
QUICK_OPS = (10, 20)


@dataclass
class Row:
    workload: str
    reduction: bool
    states: int
    transitions: int
    seconds: float
    states_per_second: float
    first_violation_seconds: float | None
    violations: int
    complete: bool


def synthetic_source(threads: int, ops: int) -> str:
    """C text for one member of the synthetic family."""
    fields = "\n".join(f"\tatomic_t work{t};" for t in range(threads))
    lines = [
        "// SPDX-License-Identifier: GPL-2.0",
        "#include <linux/slab.h>",
        "",
        "struct shared {",
        fields,
        "\tatomic_t refs;",
        "\tint last;",
        "};",
    ]
    for t in range(threads):
        body = [f"\tatomic_inc(&s->work{t});" for _ in range(max(1, ops - 2))]
        body.append("\tif (atomic_dec_and_test(&s->refs))")
        body.append("\t\tkfree(s);")
        if t == 0:
            body.append("\ts->last = 1;")
        lines += ["", f"void actor{t}(struct shared *s)", "{", *body, "}"]
    return "\n".join(lines) + "\n"


def _row(name: str, reduction: bool, r: object) -> Row:
    from bot.analyze.simulate import SimResult

    assert isinstance(r, SimResult)
    return Row(
        workload=name,
        reduction=reduction,
        states=r.states,
        transitions=r.transitions,
        seconds=round(r.seconds, 4),
        states_per_second=round(r.states / r.seconds) if r.seconds > 0 else 0.0,
        first_violation_seconds=(
            None if r.first_violation_seconds is None else round(r.first_violation_seconds, 4)
        ),
        violations=len(r.violations),
        complete=r.complete,
    )


def bench_seed(corpus: str | None, max_seconds: float, max_states: int) -> list[Row]:
    from bot import assemble, ingest
    from bot.analyze.simulate import SimulatorCheck
    from bot.apply import apply_series
    from bot.config import Settings
    from bot.pipeline import build_analysis

    root = corpus_dir(corpus)
    eml = root / "seed" / "v3-0001-patch-1of3.eml"
    tree = root / "kernel" / "v3.15.5"
    if not eml.is_file() or not tree.is_dir():
        raise Skip(f"seed or its tree not found under {root}")
    # the series bound covers reading the tree too: never below the default,
    # or the seed would be cut before it is explored
    settings = Settings(
        sim_max_seconds=max(max_seconds, Settings().sim_max_seconds), sim_max_states=max_states
    )
    messages = ingest.load([str(eml)], settings)
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    analysis = build_analysis(apply_series(series, str(tree), settings), settings)
    rows: list[Row] = []
    for reduction in (True, False):
        check = SimulatorCheck(reduction=reduction)
        check.run(analysis, settings)
        if 1 not in check.last_results:
            raise RuntimeError(f"seed not simulated: {'; '.join(check.last_notes)}")
        pre, post = check.last_results[1]
        rows.append(_row("seed pre-image (UAF)", reduction, pre))
        rows.append(_row("seed post-image (leak)", reduction, post))
    return rows


def bench_synthetic(ops_list: tuple[int, ...], max_seconds: float, max_states: int) -> list[Row]:
    from bot.analyze.simulate import simulate_source
    from bot.config import Settings

    settings = Settings(sim_max_seconds=max_seconds, sim_max_states=max_states, sim_max_steps=1000)
    rows: list[Row] = []
    for threads in THREADS:
        for ops in ops_list:
            files = {"synthetic.c": synthetic_source(threads, ops)}
            entries = [f"actor{t}" for t in range(threads)]
            for reduction in (True, False):
                r = simulate_source(files, entries, settings, reduction=reduction)
                rows.append(_row(f"{threads} threads x {ops} ops", reduction, r))
    return rows


def _fmt(rows: list[Row]) -> str:
    head = (
        f"{'workload':26} {'POR':>4} {'states':>8} {'seconds':>8} {'states/s':>9} "
        f"{'1st cex s':>9} {'viol':>4}  done"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        first = "-" if r.first_violation_seconds is None else f"{r.first_violation_seconds:.4f}"
        done = "yes" if r.complete else "bound"
        out.append(
            f"{r.workload:26} {'on' if r.reduction else 'off':>4} {r.states:>8} {r.seconds:>8.3f} "
            f"{r.states_per_second:>9.0f} {first:>9} {r.violations:>4}  {done}"
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=NAME, description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 and 20 operations only")
    p.add_argument("--max-seconds", type=float, default=5.0, help="time bound per run (default 5)")
    p.add_argument("--max-states", type=int, default=200_000, help="state bound per run")
    p.add_argument("--corpus", help="shared corpus directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    started = time.monotonic()
    rows: list[Row] = []
    skipped = ""
    try:
        rows += bench_seed(args.corpus, args.max_seconds, args.max_states)
    except Skip as exc:
        skipped = str(exc)
    rows += bench_synthetic(QUICK_OPS if args.quick else OPS, args.max_seconds, args.max_states)
    if args.json:
        doc = {
            "rows": [asdict(r) for r in rows],
            "seed_skipped": skipped,
            "machine": machine_note(),
        }
        print(json.dumps(doc))
        return 0
    print(f"{NAME}: {machine_note()}")
    if skipped:
        print(f"seed skipped: {skipped}")
    print(_fmt(rows))
    print(f"total {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    run_main(NAME, main)
