"""Prometheus metrics, read from Redis at scrape time so every process agrees.

Counters live in the `{p}:metrics` hash (workers increment them inside the same Redis
transactions that change state), and queue depth is the length of each Celery queue's
Redis list, so the webhook process can serve metrics for workers it never talks to.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from workers.celery_app import QUEUES
from workers.outbox_state import TARGETS
from workers.state import LATENCY_BUCKETS, State


class ServiceCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        m = self.state.metrics()
        for name, help_text in (
            ("series_seen", "Series first seen by assembly"),
            ("series_reviewed", "Series reviewed (committed exactly once each)"),
            ("series_failed", "Series whose review failed permanently"),
            ("series_requeued", "Reviews re-queued because their worker died holding the claim"),
            ("outbox_uncertain", "Outbox entries left uncertain (maybe sent; never resent)"),
        ):
            c = CounterMetricFamily(f"bot_{name}", help_text)
            c.add_metric([], m.get(name, 0.0))
            yield c
        stuck = GaugeMetricFamily(
            "bot_series_stuck",
            "Series claimed for review whose worker is gone, not reviewed yet "
            "(the sweep re-queues them)",
        )
        stuck.add_metric([], float(self.state.stuck_claims()))
        yield stuck
        outbox = self.state.outbox_summary()
        pending = GaugeMetricFamily("bot_outbox_pending", "Outbox entries not delivered yet")
        pending.add_metric([], float(outbox["pending"]))
        yield pending
        failing = GaugeMetricFamily(
            "bot_publish_target_failing",
            "1 while the last attempt to publish to the target failed (bot outbox list says why)",
            labels=["target"],
        )
        errors = CounterMetricFamily(
            "bot_publish_errors", "Failed attempts to publish, by target", labels=["target"]
        )
        for target in TARGETS:
            failing.add_metric([target], 1.0 if target in outbox["failing"] else 0.0)
            errors.add_metric([target], m.get(f"publish_errors_{target}", 0.0))
        yield failing
        yield errors
        depth = GaugeMetricFamily(
            "bot_queue_depth", "Tasks waiting in each queue", labels=["queue"]
        )
        for q in QUEUES:
            depth.add_metric([q], float(self.state.r.llen(q)))
        yield depth
        yield from rule_metrics(self.state)
        buckets = [(f"{b:g}", m.get(f"latency_le_{b:g}", 0.0)) for b in LATENCY_BUCKETS]
        buckets.append(("+Inf", m.get("latency_count", 0.0)))
        h = HistogramMetricFamily(
            "bot_review_latency_seconds",
            "Seconds from a series being complete to its review stored",
        )
        h.add_metric([], buckets, sum_value=m.get("latency_sum", 0.0))
        yield h


def rule_metrics(state: State) -> Iterator[GaugeMetricFamily]:
    """Per rule: findings raised, dismissed (not a bug) and confirmed (a later
    version changed the flagged code); gauges, since a dismissal can be undone."""
    from workers.dismissals import precision

    families = {
        name: GaugeMetricFamily(f"bot_rule_findings_{name}", help_text, labels=["rule"])
        for name, help_text in (
            ("raised", "Findings a rule raised (one per finding, across a series' versions)"),
            ("dismissed", "Findings of a rule dismissed as not a bug"),
            ("confirmed", "Findings of a rule a later version of the series resolved"),
        )
    }
    for row in precision(state):
        families["raised"].add_metric([row.rule], float(row.raised))
        families["dismissed"].add_metric([row.rule], float(row.dismissed))
        families["confirmed"].add_metric([row.rule], float(row.confirmed))
    yield from families.values()


def render_metrics(state: State) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    registry = CollectorRegistry()
    registry.register(ServiceCollector(state))
    return generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8"


__all__ = ["ServiceCollector", "render_metrics", "rule_metrics"]
