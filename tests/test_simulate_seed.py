"""The simulator on the seed (v3 1/3 of the memcg-vs-slab series on v3.15.5):
before the patch the use-after-free its author describes, after it the leak
its reviewer describes. Read in place from the shared corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import assemble, ingest
from bot.analyze.simulate import SimulatorCheck
from bot.apply import apply_series
from bot.config import Settings
from bot.model import Finding, Status, Trace
from bot.pipeline import build_analysis

Run = tuple[list[Finding], SimulatorCheck, dict[str, str]]
_CACHE: dict[str, Run] = {}


@pytest.fixture
def seed_run(corpus: Path) -> Run:
    # one simulation for the module; the corpus fixture still skips when absent
    if "seed" in _CACHE:
        return _CACHE["seed"]
    settings = Settings()
    messages = ingest.load([str(corpus / "seed" / "v3-0001-patch-1of3.eml")], settings)
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    applied = apply_series(series, str(corpus / "kernel" / "v3.15.5"), settings)
    check = SimulatorCheck()
    findings = list(check.run(build_analysis(applied, settings), settings))
    posts = {img.path: img.post or "" for img in applied.images[0].images}
    _CACHE["seed"] = (findings, check, posts)
    return _CACHE["seed"]


def _one(findings: list[Finding], rule: str, status: Status) -> Finding:
    found = [f for f in findings if f.rule_id == rule and f.status is status]
    assert found, [(f.rule_id, f.status) for f in findings]
    return found[0]


def _index(trace: Trace, pred: object) -> int:
    return next(i for i, s in enumerate(trace.steps) if pred(s))  # type: ignore[operator]


def test_post_image_leaks_the_cache_when_its_last_page_goes_after_the_destroy_work(
    seed_run: Run,
) -> None:
    findings, _, posts = seed_run
    leak = _one(findings, "SIM-LEAK", Status.INTRODUCED)
    t = leak.trace
    assert t is not None
    roles = " ".join(t.actor_roles.values())
    assert "release path" in roles and "owner teardown" in roles and "work callback" in roles
    queued = _index(
        t, lambda s: s.function == "mem_cgroup_destroy_all_caches" and "schedule_work" in s.text
    )
    gave_up = _index(t, lambda s: s.actor == "worker" and "nr_pages == 1" in s.text)
    last_page = _index(
        t,
        lambda s: (
            s.function == "memcg_release_pages" and "atomic_sub" in s.text and "1 -> 0" in s.text
        ),
    )
    assert queued < gave_up < last_page
    assert t.steps[gave_up].function == "kmem_cache_destroy_work_func"
    assert "kmem_cache" in leak.message
    # anchored on the post-image line the patch added: the release path's atomic_sub()
    assert leak.file == "mm/slab.h" and leak.line is not None
    assert "atomic_sub(1 << order" in posts["mm/slab.h"].splitlines()[leak.line - 1]
    assert leak.patch_number == 1 and leak.function == "memcg_release_pages"


def test_pre_image_use_after_free_is_reported_as_removed(
    seed_run: Run,
) -> None:
    findings, _, _ = seed_run
    uaf = _one(findings, "SIM-UAF", Status.FIXED)
    t = uaf.trace
    assert t is not None and len(t.actors) == 3
    to_zero = _index(
        t,
        lambda s: (
            s.function == "memcg_release_pages"
            and "atomic_sub_and_test" in s.text
            and "1 -> 0" in s.text
        ),
    )
    dead = _index(t, lambda s: "dead = true" in s.text)
    freed = _index(t, lambda s: s.actor == "worker" and "frees struct kmem_cache" in s.text)
    use = len(t.steps) - 1
    assert to_zero < freed < use and dead < freed
    assert t.steps[freed].function == "kmem_cache_destroy_work_func"
    assert t.steps[use].function == "mem_cgroup_destroy_cache"
    assert "memcg_params->dead" in t.steps[use].text
    assert t.steps[use].actor == t.steps[to_zero].actor


def test_seed_reports_no_new_use_after_free_and_no_removed_leak(
    seed_run: Run,
) -> None:
    findings, _, _ = seed_run
    assert not [f for f in findings if f.rule_id == "SIM-UAF" and f.status is Status.INTRODUCED]
    assert not [f for f in findings if f.rule_id == "SIM-LEAK" and f.status is Status.FIXED]


def test_seed_is_explored_completely_within_the_default_bounds(
    seed_run: Run,
) -> None:
    _, check, _ = seed_run
    assert not [n for n in check.last_notes if "bound reached" in n and "call depth" not in n]
    pre, post = check.last_results[1]
    assert pre.complete and post.complete
    assert pre.tracked == post.tracked == ("kmem_cache",)
