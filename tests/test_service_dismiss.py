"""Dismissals in the service, with real processes: a redis-server and a Celery worker
of the test's own, and a public-inbox (v2) mirror the worker polls.

A reply to the bot's review with `bot: not-a-bug <fingerprint>` from a trusted
address dismisses the finding; one from anybody else does not; the review of v2,
which still has the finding, carries the dismissal; v3 fixes the code, and /metrics
counts the finding as raised, dismissed and confirmed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from tests.fixtures.service.helpers import (
    RedisServer,
    Worker,
    append_epoch,
    fresh_redis,
    own_redis,
    wait_until,
    worker_env,
)
from tests.test_web_fixtures import bot_reply_to, three_versions
from workers.celery_app import QUEUES, make_app
from workers.dismissals import precision, store_for
from workers.metrics import render_metrics
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration
LIST = "test"


class Mirror:
    def __init__(self, tmp: Path, redis: RedisServer) -> None:
        self.tmp = tmp
        self.inbox = tmp / "inbox"
        self.day = 0
        self.config = tmp / "service.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp / "data"),
                    "lists": {
                        LIST: {
                            "mirror": str(self.inbox),
                            "address": "test@example.com",
                            "trusted": ["Grace Hopper <grace@example.org>"],
                        }
                    },
                    "publish": {"maildir": str(tmp / "outbox")},
                }
            )
        )
        self.client: Celery = make_app(redis.url())
        self.state = State.from_url(redis.url())
        env = worker_env(redis.url(), {"BOT_SERVICE_CONFIG": str(self.config)})
        self.worker = Worker(env, log=tmp / "w1.log")

    def deliver(self, *raws: bytes) -> None:
        self.day += 1
        append_epoch(self.inbox, 0, raws, datetime(2024, 3, self.day, tzinfo=UTC))
        self.client.send_task("workers.tasks.poll_mirror", args=[LIST]).get(timeout=120)

    def reviewed(self, key: str) -> dict[str, Any]:
        def done() -> bool:
            assert self.state.series(LIST, key).get("state") != "failed", self.log()
            return self.state.result(LIST, key) is not None

        wait_until(done, f"{key} to be reviewed", timeout=240, every=0.25)
        result = self.state.result(LIST, key)
        assert result is not None
        return result

    def drained(self) -> bool:
        r = self.state.r
        return all(r.llen(q) == 0 for q in QUEUES) and r.hlen("unacked") == 0

    def log(self) -> str:
        return (self.tmp / "w1.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def mirror(tmp_path: Path, fresh_redis: RedisServer) -> Iterator[Mirror]:
    m = Mirror(tmp_path, fresh_redis)
    try:
        yield m
    finally:
        m.worker.stop()
        m.state.r.close()


def _leak(result: dict[str, Any]) -> dict[str, Any]:
    found = [
        f
        for f in result["review"]["findings"]
        if f["rule_id"] == "MMLC002" and f["status"] == "introduced"
    ]
    assert len(found) == 1, result["review"]["findings"]
    return found[0]


def test_a_trusted_reply_dismisses_the_finding_and_v2_carries_it(mirror: Mirror) -> None:
    v1, v2, v3 = three_versions()
    mirror.deliver(*v1.messages.values())
    leak = _leak(mirror.reviewed(v1.cover_id))
    assert leak["dismissed"] is None
    short = leak["fingerprint"][:10]

    # a stranger's command counts for nothing; the trusted reviewer's does
    mirror.deliver(
        bot_reply_to(v1, 2, "mallory-1@example.net", f"bot: not-a-bug {short}", "m@example.net"),
        bot_reply_to(
            v1,
            2,
            "grace-1@example.org",
            f"> bot: not-a-bug MMLC001\nbot: not-a-bug {short} the walk never fails here",
            "Grace Hopper <grace@example.org>",
        ),
    )
    store = store_for(mirror.state)
    wait_until(store.dismissals, "the reply to dismiss the finding", timeout=120)
    wait_until(mirror.drained, "the queues to drain", timeout=120)
    (d,) = store.dismissals()
    assert d.target == leak["fingerprint"]  # the short form named the full fingerprint
    assert d.by == "grace@example.org"
    assert d.reason == "the walk never fails here"
    assert d.series.key == v1.cover_id

    # the whole mirror read again: the reply is not applied twice
    mirror.state.r.delete(mirror.state.k("mirror", LIST, "cursor"))
    mirror.client.send_task("workers.tasks.poll_mirror", args=[LIST]).get(timeout=120)
    wait_until(mirror.drained, "the queues to drain", timeout=120)
    assert len(store.dismissals()) == 1

    # v2 still leaks in the walk: its review shows the finding dismissed, not counted
    mirror.deliver(*v2.messages.values())
    result2 = mirror.reviewed(v2.cover_id)
    assert result2["previous"] == v1.cover_id
    leak2 = _leak(result2)
    assert leak2["fingerprint"] == leak["fingerprint"]
    assert leak2["dismissed"]["by"] == "grace@example.org"
    assert result2["review"]["summary"]["dismissed"] == 1
    assert result2["review"]["summary"]["introduced"] == 0
    assert mirror.state.r.sismember(mirror.state.k("later", LIST, v1.cover_id), v2.cover_id)

    # v3 fixes the walk: the finding is confirmed (a later version changed the code)
    mirror.deliver(*v3.messages.values())
    result3 = mirror.reviewed(v3.cover_id)
    assert result3["comparison"]["resolved"][0]["rule_id"] == "MMLC002"
    rows = {r.rule: r for r in precision(mirror.state)}
    assert (rows["MMLC002"].raised, rows["MMLC002"].dismissed) == (1, 1)
    assert rows["MMLC002"].confirmed == 1
    text = render_metrics(mirror.state)[0].decode()
    assert 'bot_rule_findings_raised{rule="MMLC002"} 1.0' in text
    assert 'bot_rule_findings_dismissed{rule="MMLC002"} 1.0' in text
    assert 'bot_rule_findings_confirmed{rule="MMLC002"} 1.0' in text
