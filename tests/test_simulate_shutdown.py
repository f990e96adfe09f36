"""The shutdown scenario: a teardown by name quiesces its object's work and the
object is freed next; a path that can still queue that work races with it."""

from __future__ import annotations

from pathlib import Path

from bot import assemble, ingest
from bot.analyze.simulate import SimulatorCheck
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
