"""The simulator's results do not depend on string hashing (PYTHONHASHSEED).

A step that dereferences several freed objects at once (`o->in->dead = 1`
after both `o` and `o->in` are freed) is a use after free of each of them: one
route per object, whatever order the set of struct types the step uses iterates
in. Picking the first object of that set used to make the pre-image of the
bundled example report one struct or the other depending on the hash seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.analyze.simulate import SimResult, simulate_source
from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"
HASH_SEEDS = range(8)

# one step uses two struct types, both freed by the other actor
TWO_FREED = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/slab.h>

struct inner {
\tint dead;
};

struct outer {
\tstruct inner *in;
\tint hits;
};

void outer_free(struct outer *o)
{
\tkfree(o->in);
\tkfree(o);
}

void outer_mark(struct outer *o)
{
\to->in->dead = 1;
}
"""


def _bot(args: Sequence[str], seed: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def _outputs(args: Sequence[str], seeds: Sequence[int]) -> dict[int, str]:
    """stdout of `bot ARGS` per hash seed (two at a time: the machine is shared,
    and the simulator's time bound must not be what differs)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(seeds, pool.map(lambda s: _bot(args, s), seeds), strict=True))
    for seed, proc in procs.items():
        assert proc.returncode in (0, 1), f"PYTHONHASHSEED={seed}: {proc.stderr}"
    return {seed: proc.stdout for seed, proc in procs.items()}


def _assert_same(outputs: dict[int, str]) -> None:
    first_seed, first = next(iter(outputs.items()))
    for seed, out in outputs.items():
        assert out == first, f"output differs between PYTHONHASHSEED={first_seed} and {seed}"


def _routes(r: SimResult) -> set[tuple[object, ...]]:
    return {v.signature for v in r.violations}


# ------------------------------------------------------------------ in process


def _two_freed(reduction: bool) -> SimResult:
    return simulate_source(
        {"two.c": TWO_FREED},
        ["outer_mark"],
        Settings(),
        teardown=["outer_free"],
        reduction=reduction,
    )


def test_a_step_on_two_freed_objects_is_a_use_after_free_of_each() -> None:
    r = _two_freed(reduction=True)
    assert r.complete
    found = sorted((v.kind, v.obj, len(v.trace.steps)) for v in r.violations)
    # inner freed alone, inner freed with outer, outer freed with inner
    assert found == [("UAF", "inner", 2), ("UAF", "inner", 3), ("UAF", "outer", 3)]
    both = [v for v in r.violations if len(v.trace.steps) == 3]
    for v in both:
        # the same step, each trace naming its own object
        last = v.trace.steps[-1]
        assert last.function == "outer_mark"
        assert f"UAF: struct {v.obj} used after it was freed" in last.text
        assert v.trace.summary.endswith(f"touches struct {v.obj} after CPU0 outer_free() freed it")


def test_every_order_finds_the_same_routes_as_the_reduced_search() -> None:
    assert _routes(_two_freed(reduction=True)) == _routes(_two_freed(reduction=False))


def test_the_bundled_example_names_both_structs_its_fix_stops_using_after_free() -> None:
    out = _bot(
        [
            "review",
            str(EXAMPLE / "series.mbox"),
            "--tree",
            str(EXAMPLE / "tree"),
            "-q",
            "--no-cache",
            "--format",
            "json",
        ],
        0,
    )
    assert out.returncode == 1, out.stderr
    findings = json.loads(out.stdout)["findings"]
    uaf = [f for f in findings if f["rule_id"] == "SIM-UAF"]
    assert len(uaf) == 1, [f["rule_id"] for f in findings]
    assert uaf[0]["status"] == "fixed"
    assert "use after free of struct objpool_memcg and struct objpool," in uaf[0]["message"]
    # the two structs' routes, merged: one finding for the reader
    assert any("6 route(s)" in e for e in uaf[0]["evidence"]), uaf[0]["evidence"]


# ------------------------------------------------------------------ across hash seeds


def test_simulate_is_the_same_for_every_hash_seed(tmp_path: Path) -> None:
    src = tmp_path / "two.c"
    src.write_text(TWO_FREED, encoding="utf-8")
    args = ["simulate", str(src), "--entry", "outer_mark", "--teardown", "outer_free"]
    outputs = _outputs([*args, "--format", "json"], list(HASH_SEEDS))
    _assert_same(outputs)
    objs = sorted(v["object"] for v in json.loads(outputs[0])["violations"])
    assert objs == ["inner", "inner", "outer"]


def test_the_bundled_example_reviews_the_same_for_every_hash_seed() -> None:
    args = [
        "review",
        str(EXAMPLE / "series.mbox"),
        "--tree",
        str(EXAMPLE / "tree"),
        "-q",
        "--no-cache",
        "--format",
        "json",
    ]
    _assert_same(_outputs(args, list(HASH_SEEDS)))


def test_the_seed_series_reviews_the_same_for_every_hash_seed(corpus: Path) -> None:
    patches = sorted((corpus / "seed").glob("v3-000[123]-*.eml"))
    tree = corpus / "kernel" / "v3.15.5"
    if len(patches) != 3 or not tree.is_dir():
        pytest.skip(f"seed v3 series or its tree not found under {corpus}")
    args = [
        "review",
        *map(str, patches),
        "--tree",
        str(tree),
        "-q",
        "--no-cache",
        "--format",
        "json",
    ]
    _assert_same(_outputs(args, [0, 1, 2, 3]))
