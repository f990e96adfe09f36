"""The same input gives the same review under any load.

What the simulator explores is bounded by counts (files read, lookups,
translated functions, actors, states, steps), never by the clock: the seed
series reviewed alone and four at once, on a machine kept busy by a process
burning CPU, gives the same findings. The clock is only a runaway stop; when it
is reached the review says it is incomplete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bot import assemble, ingest
from bot.analyze.simulate import SimulatorCheck, scenario
from bot.config import Settings
from bot.pipeline import build_analysis, review_series
from bot.report.text import render_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"
BURN = "while True:\n    pass\n"


def _review(args: Sequence[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "review", *args, "-q", "--no-cache", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode in (0, 1), proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _findings(doc: dict[str, Any]) -> list[tuple[object, ...]]:
    return [
        (f["rule_id"], f["status"], f["patch"], f["file"], f["line"], f["message"])
        for f in doc["findings"]
    ]


def _simulator_notes(doc: dict[str, Any]) -> list[str]:
    return [n for c in doc["checks"] if c["check"] == "simulator" for n in c["notes"]]


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """A process burning CPU for as long as the test runs (one per CPU, at most 2)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True)
        for _ in range(min(2, os.cpu_count() or 1))
    ]
    try:
        yield
    finally:
        for p in burners:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.corpus
def test_the_seed_series_alone_and_four_at_once_under_load_gives_the_same_findings(
    corpus: Path, busy_machine: None
) -> None:
    patches = sorted((corpus / "seed").glob("v3-000[123]-*.eml"))
    tree = corpus / "kernel" / "v3.15.5"
    if len(patches) != 3 or not tree.is_dir():
        pytest.skip(f"seed v3 series or its tree not found under {corpus}")
    args = [*map(str, patches), "--tree", str(tree)]
    alone = _review(args)
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda _: _review(args), range(4)))
    expected = _findings(alone)
    rules = {(f[0], f[1]) for f in expected}
    assert rules == {
        ("MMLC001", "introduced"),
        ("SIM-LEAK", "introduced"),
        ("SIM-UAF", "fixed"),
        ("SIM-WORK-AFTER-FREE", "fixed"),
    }
    for doc in together:
        assert _findings(doc) == expected
        assert _simulator_notes(doc) == _simulator_notes(alone)
        assert not [n for n in doc["notes"] if "incomplete" in n]


def _objpool_series(settings: Settings) -> Any:
    messages = ingest.load([str(EXAMPLE / "series.mbox")], settings)
    return assemble.select(assemble.assemble(messages, settings))


def test_the_runaway_stop_says_the_review_is_incomplete() -> None:
    settings = Settings(sim_max_seconds=0.0, cache_dir=None)
    series, versions, _ = _objpool_series(settings)
    review = review_series(series, versions, settings, tree=str(EXAMPLE / "tree"))
    sim = next(c for c in review.checks if c.check == "simulator")
    assert sim.ok
    assert "review incomplete" in sim.notes[0]
    assert not [f for f in review.findings if f.rule_id.startswith("SIM-")]
    lifted = [n for n in review.notes if "review incomplete" in n]
    assert lifted and lifted[0].startswith("simulator: ")
    text = render_text(review, color=False)
    assert "review incomplete" in " ".join(text.split())


def test_a_count_bound_cuts_the_work_the_same_way_every_time_and_says_so() -> None:
    settings = Settings(sim_max_functions=2, cache_dir=None)
    series, versions, _ = _objpool_series(settings)
    outcomes = []
    for _ in range(2):
        review = review_series(series, versions, settings, tree=str(EXAMPLE / "tree"))
        sim = next(c for c in review.checks if c.check == "simulator")
        outcomes.append(([(f.rule_id, f.status) for f in review.findings], sim.notes))
    assert outcomes[0] == outcomes[1]
    assert any(
        "translation bound reached (2 functions)" in n and "simulation incomplete" in n
        for n in outcomes[0][1]
    )


# ------------------------------------------------------------------ actor set-up


def _role_functions_patch(n: int) -> str:
    """A new file of `n` release-named functions, each calling the next."""
    body = [
        "// SPDX-License-Identifier: GPL-2.0",
        "#include <linux/slab.h>",
        "",
        "struct evil {",
        "\tatomic_t ref;",
        "\tint dead;",
        "\tstruct work_struct w;",
        "};",
        "",
    ]
    for i in range(n):
        body += [
            f"void evil_release_{i}(struct evil *e)",
            "{",
            "\tif (atomic_dec_and_test(&e->ref))",
            "\t\tkfree(e);",
            f"\te->dead = {i};",
            "\tschedule_work(&e->w);",
            *([f"\tevil_release_{i + 1}(e);"] if i + 1 < n else []),
            "}",
            "",
        ]
    head = [
        "From: A U Thor <author@example.org>",
        "Subject: [PATCH] mm: many release paths",
        "Message-ID: <many-release@example.org>",
        "Date: Mon, 1 Jan 2024 00:00:00 +0000",
        "",
        "Many role functions.",
        "",
        "Signed-off-by: A U Thor <author@example.org>",
        "---",
        "diff --git a/mm/evil.c b/mm/evil.c",
        "new file mode 100644",
        "--- /dev/null",
        "+++ b/mm/evil.c",
        f"@@ -0,0 +1,{len(body)} @@",
    ]
    return "\n".join([*head, *(f"+{line}" for line in body), ""])


def test_actor_set_up_is_bounded_by_a_count_with_an_incomplete_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 60
    path = tmp_path / "many.eml"
    path.write_text(_role_functions_patch(n), encoding="utf-8")
    settings = Settings(cache_dir=None)
    messages = ingest.load([str(path)], settings)
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    from bot.apply import apply_series

    analysis = build_analysis(apply_series(series, None, settings), settings)
    walks = 0
    reachable = scenario._reachable

    def counting(functions: Any, entry: str) -> Any:
        nonlocal walks
        walks += 1
        return reachable(functions, entry)

    monkeypatch.setattr(scenario, "_reachable", counting)
    check = SimulatorCheck()
    check.run(analysis, settings)
    bound = settings.sim_max_actors
    assert any(
        f"actor bound reached ({bound} actors): {n - bound} more not set up" in note
        and "simulation incomplete" in note
        for note in check.last_notes
    ), check.last_notes
    # what the set-up walks grows with the actors kept, not with their square
    assert walks <= 20 * bound, walks
