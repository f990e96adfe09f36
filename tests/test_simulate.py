"""The lifecycle simulator on small kernel-style examples of our own: one per
check, each asserting the counterexample found, or that none is."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import assemble, ingest
from bot.analyze.simulate import SimResult, SimulatorCheck, format_trace, simulate_source
from bot.analyze.simulate.check import map_pre_line
from bot.apply import apply_series
from bot.config import Settings
from bot.errors import UsageError
from bot.model import FileDiff, Finding, Hunk, HunkLine, LineKind, Status
from bot.pipeline import build_analysis

FIX = Path(__file__).resolve().parent / "fixtures" / "simulate"


def sim(
    name: str,
    entries: list[str],
    teardown: tuple[str, ...] = (),
    settings: Settings | None = None,
    **kw: object,
) -> SimResult:
    files = {f"mm/{name}": (FIX / name).read_text(encoding="utf-8")}
    return simulate_source(files, entries, settings or Settings(), teardown=teardown, **kw)  # type: ignore[arg-type]


def kinds(r: SimResult) -> set[str]:
    return {v.kind for v in r.violations}


# --------------------------------------------------------------------------- one check each


def test_a_kref_put_twice_is_a_refcount_underflow_at_the_second_put() -> None:
    r = sim("kref_double_put.c", ["session_close"])
    assert kinds(r) == {"UNDERFLOW"}
    steps = r.violations[0].trace.steps
    assert [s.function for s in steps] == ["session_close", "session_release", "session_close"]
    assert "kfree(s)" in steps[1].text and "frees struct session" in steps[1].text
    assert "kref_put" in steps[2].text and steps[2].line == 21
    assert r.complete


def test_a_single_kref_put_reports_nothing() -> None:
    r = sim("kref_double_put.c", ["session_close_once"])
    assert r.violations == ()
    assert r.complete and r.tracked == ("session",)


def test_work_queued_by_an_event_can_run_after_remove_frees_the_device() -> None:
    r = sim("work_after_kfree.c", ["evdev_event"], teardown=("evdev_remove",))
    on_worker = [v for v in r.violations if v.kind == "UAF" and v.trace.steps[-1].actor == "worker"]
    assert on_worker, [v.kind for v in r.violations]
    t = on_worker[0].trace
    assert t.steps[-1].function == "evdev_event_workfn"
    assert "nr_events" in t.steps[-1].text
    freer = next(s for s in t.steps if "frees struct evdev" in s.text)
    assert freer.function == "evdev_remove" and freer.actor.startswith("CPU")
    queued = next(s for s in t.steps if "schedule_work" in s.text)
    assert queued.function == "evdev_event"
    assert "WORK-AFTER-FREE" in kinds(r)
    assert t.actor_roles["worker"].startswith("evdev_event_workfn()")


def test_freeing_with_the_work_still_queued_is_reported() -> None:
    r = sim("missing_cancel.c", ["statpool_release"])
    waf = next(v for v in r.violations if v.kind == "WORK-AFTER-FREE")
    steps = waf.trace.steps
    assert [s.actor for s in steps] == ["CPU0", "CPU0"]
    assert "schedule_work" in steps[0].text and "queued" in steps[0].text
    assert "kfree(sp)" in steps[1].text and "still queued" in steps[1].text
    # the worker that started before the free touches freed memory too
    uaf = next(v for v in r.violations if v.kind == "UAF")
    assert uaf.trace.steps[-1].actor == "worker"


def test_cancel_work_sync_before_free_makes_the_release_safe() -> None:
    r = sim("missing_cancel.c", ["statpool_release_sync"])
    assert r.violations == ()
    assert r.complete and r.states > 1


def test_css_put_before_the_last_use_in_a_release_work_is_a_use_after_free() -> None:
    r = sim("css_put_early.c", ["holder_put"])
    uaf = next(v for v in r.violations if v.kind == "UAF")
    assert uaf.obj == "mem_cgroup"
    steps = uaf.trace.steps
    put = next(i for i, s in enumerate(steps) if "css_put" in s.text)
    assert "frees struct mem_cgroup" in steps[put].text
    assert steps[-1].actor == "worker" and "nr_holders" in steps[-1].text
    assert put < len(steps) - 1


def test_css_put_after_the_last_use_is_safe() -> None:
    r = sim("css_put_fixed.c", ["holder_put"])
    assert r.violations == ()


def test_using_an_object_after_call_rcu_outside_a_read_section_is_a_use_after_free() -> None:
    r = sim("rcu_free.c", ["filter_retire"])
    uaf = next(v for v in r.violations if v.kind == "UAF")
    steps = uaf.trace.steps
    assert [s.actor for s in steps] == ["CPU0", "rcu", "rcu", "CPU0"]
    assert "call_rcu" in steps[0].text and "kfree(f)" in steps[2].text
    assert "f->retired = 1" in steps[-1].text


def test_an_rcu_read_section_holds_the_grace_period_off() -> None:
    r = sim("rcu_free.c", ["filter_retire_locked"])
    assert r.violations == ()
    assert r.complete


def test_a_put_through_a_plain_pointer_drops_the_pointees_reference() -> None:
    r = sim("css_pointer_put.c", ["grab_release"])
    assert kinds(r) == {"UAF"}
    steps = r.violations[0].trace.steps
    assert "css_put(css)" in steps[0].text and "frees struct cgroup_subsys_state" in steps[0].text
    assert "css->flags" in steps[-1].text


def test_a_percpu_ref_put_runs_the_release_bound_by_percpu_ref_init() -> None:
    r = sim("percpu_release.c", ["tbl_kill"])
    assert kinds(r) == {"UAF"}
    steps = r.violations[0].trace.steps
    assert [s.function for s in steps] == ["tbl_kill", "tbl_release", "tbl_kill"]
    assert "calls tbl_release()" in steps[0].text


def test_writing_before_the_last_percpu_ref_put_is_safe() -> None:
    r = sim("percpu_release.c", ["tbl_kill_safe"])
    assert r.violations == ()
    assert r.complete


def test_freeing_with_the_timer_armed_is_reported_and_del_timer_sync_fixes_it() -> None:
    armed = sim("timer_after_free.c", ["watchdog_retire"])
    waf = next(v for v in armed.violations if v.kind == "WORK-AFTER-FREE")
    assert "mod_timer" in waf.trace.steps[0].text and "kfree(wd)" in waf.trace.steps[-1].text
    fired = next(v for v in armed.violations if v.kind == "UAF")
    assert fired.trace.steps[-1].function == "watchdog_fire"
    assert sim("timer_after_free.c", ["watchdog_retire_sync"]).violations == ()


def test_a_destroy_work_that_gives_up_while_pages_remain_leaks_the_pool() -> None:
    r = sim("pool_leak.c", ["pool_release_pages"], teardown=("pool_css_offline",))
    assert kinds(r) == {"LEAK"}
    t = r.violations[0].trace
    assert t.actors == ("CPU0", "CPU1", "worker")
    texts = [(s.actor, s.function, s.text) for s in t.steps]
    sched = next(i for i, (_, f, x) in enumerate(texts) if "schedule_work" in x)
    read = next(i for i, (a, _, x) in enumerate(texts) if a == "worker" and "nr_pages == 1" in x)
    sub = next(
        i for i, (_, f, x) in enumerate(texts) if f == "pool_release_pages" and "1 -> 0" in x
    )
    assert sched < read < sub
    assert texts[sched][1] == "pool_css_offline"
    assert "never freed" in t.summary


def test_a_lock_both_paths_take_orders_them_so_only_one_frees() -> None:
    r = sim("locked_release.c", ["table_fail"], teardown=("table_teardown",))
    assert r.violations == ()
    assert r.complete


def test_dropping_the_lock_before_the_free_lets_both_paths_free() -> None:
    r = sim("locked_release.c", ["table_fail_unlocked"], teardown=("table_teardown",))
    assert kinds(r) == {"DOUBLE-FREE"}
    steps = r.violations[0].trace.steps
    unlock = next(i for i, st in enumerate(steps) if "mutex_unlock" in st.text)
    frees = [i for i, st in enumerate(steps) if "kfree(o->table)" in st.text]
    assert len(frees) == 2 and unlock < frees[0]
    assert {steps[i].function for i in frees} == {"table_fail_unlocked", "table_teardown"}


def test_whoever_drops_the_last_unit_queues_the_destroy_so_nothing_leaks() -> None:
    r = sim("pool_counted.c", ["pool_release_pages"], teardown=("pool_css_offline",))
    assert r.violations == ()
    assert r.complete


# --------------------------------------------------------------------------- exploration


SCENARIOS = [
    ("kref_double_put.c", ["session_close"], ()),
    ("work_after_kfree.c", ["evdev_event"], ("evdev_remove",)),
    ("missing_cancel.c", ["statpool_release"], ()),
    ("missing_cancel.c", ["statpool_release_sync"], ()),
    ("css_put_early.c", ["holder_put"], ()),
    ("pool_leak.c", ["pool_release_pages"], ("pool_css_offline",)),
    ("pool_counted.c", ["pool_release_pages"], ("pool_css_offline",)),
    ("locked_release.c", ["table_fail"], ("table_teardown",)),
    ("locked_release.c", ["table_fail_unlocked"], ("table_teardown",)),
    ("rcu_free.c", ["filter_retire"], ()),
    ("rcu_free.c", ["filter_retire_locked"], ()),
    ("percpu_release.c", ["tbl_kill"], ()),
    ("timer_after_free.c", ["watchdog_retire"], ()),
]


@pytest.mark.parametrize(("name", "entries", "teardown"), SCENARIOS)
def test_reduction_keeps_every_route(
    name: str, entries: list[str], teardown: tuple[str, ...]
) -> None:
    reduced = sim(name, entries, teardown=teardown)
    full = sim(name, entries, teardown=teardown, reduction=False)
    assert reduced.complete and full.complete
    assert {v.signature for v in reduced.violations} == {v.signature for v in full.violations}
    assert reduced.states <= full.states


def _refcounted_workers(threads: int, ops: int) -> dict[str, str]:
    """Threads that each bump a private counter, then drop a shared reference;
    thread 0 touches the object after its put."""
    fields = "".join(f"\tatomic_t work{t};\n" for t in range(threads))
    text = f"struct shared {{\n{fields}\tatomic_t refs;\n\tint last;\n}};\n"
    for t in range(threads):
        body = f"\tatomic_inc(&s->work{t});\n" * ops
        body += "\tif (atomic_dec_and_test(&s->refs))\n\t\tkfree(s);\n"
        body += "\ts->last = 1;\n" if t == 0 else ""
        text += f"void actor{t}(struct shared *s)\n{{\n{body}}}\n"
    return {"mm/shared.c": text}


def test_reduction_collapses_private_work_under_a_held_reference() -> None:
    files = _refcounted_workers(3, 6)
    entries = ["actor0", "actor1", "actor2"]
    reduced = simulate_source(files, entries, Settings())
    full = simulate_source(files, entries, Settings(), reduction=False)
    assert {v.signature for v in reduced.violations} == {v.signature for v in full.violations}
    assert {v.kind for v in reduced.violations} == {"UAF"}
    # the last put by actor0 frees the object, then actor0 writes to it
    last = reduced.violations[0].trace.steps[-1]
    assert last.function == "actor0" and "s->last = 1" in last.text
    assert reduced.states * 5 < full.states


def test_reaching_the_state_bound_is_reported_not_silent() -> None:
    r = sim(
        "pool_counted.c",
        ["pool_release_pages"],
        teardown=("pool_css_offline",),
        settings=Settings(sim_max_states=2),
    )
    assert not r.complete
    assert any("state bound reached" in n for n in r.notes)


def test_the_thread_bound_leaves_actors_out_and_says_so() -> None:
    r = sim(
        "work_after_kfree.c",
        ["evdev_event"],
        teardown=("evdev_remove",),
        settings=Settings(sim_max_threads=2),
    )
    assert any("thread bound reached" in n for n in r.notes)
    assert len(r.actors) <= 2


def test_an_entry_that_is_not_defined_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no_such_fn"):
        sim("pool_leak.c", ["no_such_fn"])


def test_no_entry_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        sim("pool_leak.c", [])


def test_format_trace_draws_one_column_per_actor() -> None:
    r = sim("pool_leak.c", ["pool_release_pages"], teardown=("pool_css_offline",))
    text = format_trace(r.violations[0].trace)
    header = text.splitlines()[0]
    assert header.split() == ["CPU0", "CPU1", "worker"]
    worker_col = header.index("worker")
    read_line = next(line for line in text.splitlines() if "nr_pages == 1" in line)
    assert len(read_line) - len(read_line.lstrip()) >= worker_col
    assert "pool_leak.c:25" in read_line


# ------------------------------------------------------------------ differential (pipeline)


def _check(
    patch: str, tree: str, check: SimulatorCheck | None = None, settings: Settings | None = None
) -> list[Finding]:
    settings = settings or Settings()
    check = check or SimulatorCheck()
    messages = ingest.load([str(FIX / "statpool" / patch)], settings)
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    applied = apply_series(series, str(FIX / "statpool" / tree), settings)
    return list(check.run(build_analysis(applied, settings), settings))


def test_a_series_that_flushes_before_free_reports_the_race_fixed_and_nothing_introduced() -> None:
    findings = _check("fix.patch", "bad")
    assert [f for f in findings if f.status is Status.INTRODUCED] == []
    fixed = {f.rule_id for f in findings if f.status is Status.FIXED}
    assert "SIM-WORK-AFTER-FREE" in fixed
    waf = next(f for f in findings if f.rule_id == "SIM-WORK-AFTER-FREE")
    assert waf.file == "mm/statpool.c" and waf.function == "statpool_release"
    assert waf.trace is not None and waf.trace.steps[-1].function == "statpool_release"
    assert waf.patch_number == 1


def test_a_series_that_drops_the_flush_introduces_the_race_with_its_trace() -> None:
    findings = _check("regress.patch", "good")
    introduced = [f for f in findings if f.status is Status.INTRODUCED]
    assert {f.rule_id for f in introduced} >= {"SIM-WORK-AFTER-FREE", "SIM-UAF"}
    uaf = next(f for f in introduced if f.rule_id == "SIM-UAF")
    assert uaf.symbol == "use-after-free"
    assert uaf.trace is not None and set(uaf.trace.actors) == {"CPU0", "worker"}
    # the line is the post-image line of the release path's kfree()
    post = (FIX / "statpool" / "bad" / "mm" / "statpool.c").read_text(encoding="utf-8").splitlines()
    assert uaf.line is not None and "kfree(sp)" in post[uaf.line - 1]
    assert uaf.question
    assert not [f for f in findings if f.status is Status.FIXED]


def test_with_no_time_left_the_patch_is_not_simulated_and_the_note_says_so() -> None:
    check = SimulatorCheck()
    findings = _check("regress.patch", "good", check, Settings(sim_max_seconds=0.0))
    assert findings == []
    assert any("review incomplete" in n for n in check.last_notes)


def test_pre_image_lines_map_to_where_they_are_after_the_patch() -> None:
    hunk = Hunk(
        source_start=10,
        source_length=3,
        target_start=10,
        target_length=4,
        section="",
        lines=(
            HunkLine(LineKind.CONTEXT, "a", 10, 10),
            HunkLine(LineKind.ADDED, "new", None, 11),
            HunkLine(LineKind.REMOVED, "old", 11, None),
            HunkLine(LineKind.ADDED, "new2", None, 12),
            HunkLine(LineKind.CONTEXT, "b", 12, 13),
        ),
    )
    fd = FileDiff(old_path="f.c", new_path="f.c", hunks=(hunk,))
    assert map_pre_line(fd, 5) == 5
    assert map_pre_line(fd, 10) == 10
    assert map_pre_line(fd, 11) == 11
    assert map_pre_line(fd, 12) == 13
    assert map_pre_line(fd, 40) == 41


def test_a_race_one_patch_introduces_and_a_later_one_removes_is_fixed_in_series() -> None:
    settings = Settings()
    messages = ingest.load([str(FIX / "statpool" / "undo-series.mbox")], settings)
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    applied = apply_series(series, str(FIX / "statpool" / "good"), settings)
    findings = list(SimulatorCheck().run(build_analysis(applied, settings), settings))
    assert findings
    assert {f.status for f in findings} == {Status.FIXED_IN_SERIES}
    assert {f.patch_number for f in findings} == {1}
    assert {f.fixed_by for f in findings} == {2}
    assert "SIM-WORK-AFTER-FREE" in {f.rule_id for f in findings}


def _scenarios_with(tmp_path: Path, role: str, **spec: object) -> Settings:
    """Settings whose scenario data is ours with one role changed."""
    import shutil

    import yaml

    src = Settings().rules_dir / "scenarios"
    dst = tmp_path / "rules" / "scenarios"
    shutil.copytree(src, dst)
    doc = yaml.safe_load((dst / "default.yaml").read_text(encoding="utf-8"))
    doc["roles"][role].update(spec)
    (dst / "default.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return Settings(rules_dir=tmp_path / "rules")


def test_scenario_data_says_how_often_an_actor_runs(tmp_path: Path) -> None:
    once = sim("missing_cancel.c", ["statpool_release_sync"])
    assert once.violations == ()
    # a release path that frees its object cannot run twice: the second run
    # touches the freed pool to queue its work
    settings = _scenarios_with(tmp_path, "entry", runs=2)
    twice = sim("missing_cancel.c", ["statpool_release_sync"], settings=settings)
    assert kinds(twice) == {"UAF"}
    steps = twice.violations[0].trace.steps
    free = next(i for i, st in enumerate(steps) if "kfree(sp)" in st.text)
    assert "schedule_work" in steps[-1].text and free < len(steps) - 1
    assert steps[free].actor == steps[-1].actor == "CPU0"


def test_a_work_that_always_requeues_itself_meets_the_run_bound_and_says_so() -> None:
    text = """
struct poller {
	struct work_struct poll_work;
	int polls;
};

static void poller_workfn(struct work_struct *w)
{
	struct poller *p = container_of(w, struct poller, poll_work);

	if (poll_done()) {
		kfree(p);
		return;
	}
	schedule_work(&p->poll_work);
}

void poller_init(struct poller *p)
{
	INIT_WORK(&p->poll_work, poller_workfn);
}

void poller_start(struct poller *p)
{
	schedule_work(&p->poll_work);
}
"""
    r = simulate_source({"mm/poller.c": text}, ["poller_start"], Settings())
    assert any("worker run bound reached (3 runs)" in n for n in r.notes)
    assert not r.complete
    # the never-drained work is not mistaken for a leak, and stopping after
    # the last poll frees the poller
    assert r.violations == ()


def test_reaching_the_depth_bound_is_reported_not_silent() -> None:
    r = sim(
        "pool_leak.c",
        ["pool_release_pages"],
        teardown=("pool_css_offline",),
        settings=Settings(sim_max_steps=1),
    )
    assert not r.complete
    assert any("depth bound reached (1 steps on one path)" in n for n in r.notes)
    # the leak needs four steps: a one-step search cannot claim it
    assert "LEAK" not in kinds(r)
