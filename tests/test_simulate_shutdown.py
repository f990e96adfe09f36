"""The shutdown scenario: a teardown by name quiesces its object's work and the
object is freed next; a path that can still queue that work races with it."""

from __future__ import annotations

from pathlib import Path

from bot import assemble, ingest
from bot.analyze.simulate import SimResult, SimulatorCheck, simulate_source
from bot.apply import apply_series
from bot.config import Settings
from bot.model import Finding, Status
from bot.pipeline import build_analysis

FIX = Path(__file__).resolve().parent / "fixtures" / "simulate" / "shutdown"


def _review(patch: str, tree: str) -> list[Finding]:
    settings = Settings()
    messages = ingest.load([str(FIX / patch)], settings)
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    applied = apply_series(series, str(FIX / tree), settings)
    return list(SimulatorCheck().run(build_analysis(applied, settings), settings))


def test_queueing_without_the_registered_test_lets_the_work_outlive_the_shutdown() -> None:
    findings = _review("regress.patch", "good")
    introduced = [f for f in findings if f.status is Status.INTRODUCED]
    waf = next(f for f in introduced if f.rule_id == "SIM-WORK-AFTER-FREE")
    assert waf.trace is not None
    texts = [s.text for s in waf.trace.steps]
    # the shutdown clears the registered bit (it starts set), the queuer queues
    # anyway, then the object is freed with the work queued
    assert any("LINK_registered == 1" in t for t in texts)
    assert any("queue_delayed_work" in t and "[queued]" in t for t in texts)
    assert "still queued" in texts[-1]
    assert set(waf.trace.actor_roles.values()) >= {
        "statlink_shutdown() (owner shutdown, then free)",
        "statlink_io_done() (queues work)",
    }


def test_the_registered_test_under_the_shutdown_lock_introduces_nothing() -> None:
    findings = _review("fix.patch", "bad")
    assert [f for f in findings if f.status is Status.INTRODUCED] == []
    assert "SIM-WORK-AFTER-FREE" in {f.rule_id for f in findings if f.status is Status.FIXED}


def _auto(tree: str) -> SimResult:
    path = FIX / tree / "drivers" / "statlink.c"
    return simulate_source({str(path): path.read_text(encoding="utf-8")}, [], Settings(), auto=True)


def test_by_role_a_shutdown_by_name_and_a_queue_path_race_on_the_unguarded_work() -> None:
    result = _auto("bad")
    assert "shutdown statlink_shutdown()" in result.actors
    assert "queue statlink_io_done()" in result.actors
    # queued after the flush: freed while queued, or run on the freed object
    assert "WORK-AFTER-FREE" in {v.kind for v in result.violations}


def test_by_role_the_registered_bit_under_the_lock_keeps_the_work_from_outliving_the_free() -> None:
    result = _auto("good")
    assert result.complete
    assert result.violations == ()


def test_a_flush_of_a_work_whose_callback_is_not_simulated_leaves_nothing_queued() -> None:
    src = """
struct ring { struct work_struct kick; int users; };

void ring_teardown(struct ring *r)
{
	schedule_work(&r->kick);
	flush_work(&r->kick);
	kfree(r);
}
"""
    result = simulate_source({"ring.c": src}, ["ring_teardown"], Settings())
    assert result.violations == ()


def test_a_bit_of_a_flags_word_is_a_flag_of_its_own() -> None:
    src = """
enum { R_LIVE, R_DEAD };
struct ring { unsigned long flags; struct work_struct kick; };

void ring_kick(struct ring *r)
{
	clear_bit(R_LIVE, &r->flags);
	set_bit(R_DEAD, &r->flags);
	if (test_bit(R_LIVE, &r->flags))
		schedule_work(&r->kick);
	kfree(r);
}
"""
    # R_LIVE is cleared and only R_DEAD is set: the work is never queued
    result = simulate_source({"ring.c": src}, ["ring_kick"], Settings())
    assert result.violations == ()
    unguarded = src.replace("if (test_bit(R_LIVE", "if (test_bit(R_DEAD")
    result = simulate_source({"ring.c": unguarded}, ["ring_kick"], Settings())
    assert {v.kind for v in result.violations} == {"WORK-AFTER-FREE"}


# ------------------------------------------------------------------ generic types


def _css_pair(entry: str) -> SimResult:
    path = FIX.parent / "css_pair_release.c"
    return simulate_source({str(path): path.read_text(encoding="utf-8")}, [entry], Settings())


def test_passing_a_css_on_after_its_last_put_is_a_use_after_free_of_that_css() -> None:
    result = _css_pair("link_release_workfn")
    assert {(v.kind, v.obj) for v in result.violations} == {("UAF", "cgroup_subsys_state@io_css")}


def test_two_css_pointers_of_one_owner_are_two_objects() -> None:
    # the mem css's last put frees the mem css only: the io css is still held
    result = _css_pair("link_release_ordered_workfn")
    assert result.complete
    assert result.violations == ()
    assert set(result.tracked) >= {"cgroup_subsys_state@io_css", "cgroup_subsys_state@mem_css"}


def test_a_patch_touching_only_the_queueing_path_races_with_the_teardown_found_by_its_work() -> (
    None
):
    findings = _review("queue-only.patch", "good")
    waf = next(
        f for f in findings if f.rule_id == "SIM-WORK-AFTER-FREE" and f.status is Status.INTRODUCED
    )
    assert waf.function == "statlink_io_done"  # the queueing, not the implied free
    assert waf.trace is not None
    assert "statlink_shutdown() (owner shutdown, then free)" in waf.trace.actor_roles.values()


def test_a_patch_guarding_only_the_queueing_path_introduces_nothing() -> None:
    findings = _review("queue-fix.patch", "queue-bad")
    assert [f for f in findings if f.status is Status.INTRODUCED] == []
    assert "SIM-WORK-AFTER-FREE" in {f.rule_id for f in findings if f.status is Status.FIXED}
