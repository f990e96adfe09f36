"""A series reviewed partially after its wait is reviewed again, once, when it completes.

Real redis-server, real `celery -A workers worker` processes, a v2 inbox written with
the archive helpers, and an aiosmtpd server on loopback.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.service.helpers import (
    RedisServer,
    Worker,
    append_epoch,
    demo_series,
    fresh_redis,
    own_redis,
    smtp_sink,
    undocumented_keys,
    wait_until,
    write_inbox,
)
from tests.test_workers import LIST, Service
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration

NOTE = "This review of the complete series supersedes the partial review sent while patch 2/2"


def _bodies(svc: Service) -> list[str]:
    out = []
    for _sender, _rcpts, raw in svc.sink.messages:
        msg = message_from_bytes(raw)
        payload = msg.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out.append(payload.decode())
    return out


def _settled(svc: Service) -> bool:
    return svc.drained() and svc.state.outbox_pending() == []


def _result(svc: Service, key: str) -> dict[str, Any]:
    got = svc.state.result(LIST, key)
    assert got is not None
    return got


def test_missing_patch_arriving_after_a_partial_review_gets_one_superseding_review(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    v1 = demo_series(1)
    with smtp_sink() as sink:
        svc = Service(tmp_path, fresh_redis, sink, tmp_path / "inbox")
        cfg = yaml.safe_load(svc.config.read_text())
        cfg["lists"][LIST]["wait_seconds"] = 0
        svc.config.write_text(yaml.safe_dump(cfg))
        try:
            # the cover and 1/2 arrive; 2/2 does not, and the wait runs out
            write_inbox(svc.inbox, [v1.messages["cover"], v1.messages["1"]])
            w1 = svc.start_worker("w1")
            svc.poll()
            wait_until(
                lambda: svc.state.series(LIST, v1.cover_id).get("state") == "incomplete",
                "assembly of the incomplete series",
            )
            assert svc.send("sweep").get(timeout=60)["partial_reviews"] == 1
            wait_until(lambda: svc.state.result(LIST, v1.cover_id), "the partial review")
            partial = _result(svc, v1.cover_id)
            assert partial["partial"] is True and partial["missing"] == [2]
            assert svc.state.series(LIST, v1.cover_id)["partial"] == "1"
            wait_until(lambda: _settled(svc), "the partial review to be mailed")
            partial_mails = len(sink.messages)
            assert partial_mails >= 1
            assert not any("supersedes" in b for b in _bodies(svc))
            # queued again while 2/2 is still missing: the partial review stands alone
            svc.send("review_series", LIST, v1.cover_id, False).get(timeout=60)
            assert svc.state.review_count(LIST, v1.cover_id) == 1

            # 2/2 arrives; the worker reviewing it is killed just before committing
            w1.stop()
            doomed = svc.start_worker("w2", BOT_FAULT_PAUSE="review:before-commit")
            append_epoch(svc.inbox, 0, [v1.messages["2"]], datetime(2024, 1, 2, tzinfo=UTC))
            svc.poll()
            wait_until(
                lambda: svc.state.fault_hit("review:before-commit"),
                "the complete review to reach the fault point",
            )
            doomed.kill()
            assert svc.state.series(LIST, v1.cover_id)["state"] == "complete"
            assert _result(svc, v1.cover_id)["partial"] is True  # nothing committed
            svc.start_worker("w3")  # the broker redelivers the review
            wait_until(
                lambda: _result(svc, v1.cover_id)["partial"] is False,
                "the complete review",
                timeout=120,
                every=0.2,
            )
            # queued again by hand, swept, and the whole mirror re-walked: no third review
            for _ in range(2):
                svc.send("review_series", LIST, v1.cover_id, False)
            svc.send("sweep").get(timeout=60)
            svc.state.r.delete(svc.state.k("mirror", LIST, "cursor"))
            svc.poll()
            wait_until(lambda: _settled(svc), "the queues and the outbox to settle")

            assert svc.state.review_count(LIST, v1.cover_id) == 2
            info = svc.state.series(LIST, v1.cover_id)
            assert info["state"] == "reviewed" and info["partial"] == "0"
            complete = _result(svc, v1.cover_id)
            assert complete["missing"] == []
            assert " ".join(complete["text"].split()).startswith(NOTE + " was missing.")
            sup = complete["supersedes"]
            assert sup["missing"] == [2] and sup["reviewed_at"] is not None
            leak = {
                "rule_id": "MMLC002",
                "function": "demo_pool_shrink_all",
                "file": "mm/demo_pool.c",
            }
            assert leak in sup["comparison"]["new"]  # only 2/2 has the iterator leak
            assert leak not in sup["comparison"]["resolved"] + sup["comparison"]["still_present"]
            kept = svc.state.partial_result(LIST, v1.cover_id)
            assert kept is not None and kept["missing"] == [2] and kept["partial"] is True

            # the superseding review was mailed once, with the note in its first reply
            later = _bodies(svc)[partial_mails:]
            assert sum(NOTE in " ".join(b.split()) for b in later) == 1
            assert any("new in this version: MMLC002 demo_pool_shrink_all()" in b for b in later)
            ids = [message_from_bytes(raw)["Message-ID"] for _s, _r, raw in sink.messages]
            assert len(ids) == len(set(ids))  # the complete round never reuses a Message-ID
            assert all(i.endswith("@example.net>") for i in ids)  # the sender's domain
            outbox_emails = sum(
                1
                for oid in svc.state.outbox_ids()
                for part in yaml.safe_load(svc.state.outbox_item(oid)["payload"])["parts"]
                if part["kind"] == "email"
            )
            assert len(sink.messages) == outbox_emails == partial_mails + len(later)
            assert undocumented_keys(svc.state.r) == []
        finally:
            svc.stop()


def test_a_series_complete_from_the_start_is_never_reopened(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Only a partial review owes a second one: a complete series re-assembled stays done."""
    v1 = demo_series(1, tag="whole")
    with smtp_sink() as sink:
        svc = Service(tmp_path, fresh_redis, sink, tmp_path / "inbox")
        try:
            write_inbox(svc.inbox, list(v1.messages.values()))
            svc.start_worker()
            svc.poll()
            wait_until(lambda: svc.state.result(LIST, v1.cover_id), "the review", timeout=120)
            svc.state.r.delete(svc.state.k("mirror", LIST, "cursor"))
            svc.poll()
            svc.send("review_series", LIST, v1.cover_id, False).get(timeout=60)
            wait_until(lambda: _settled(svc), "the queues and the outbox to settle")
            assert svc.state.review_count(LIST, v1.cover_id) == 1
            assert svc.state.series(LIST, v1.cover_id)["partial"] == "0"
            assert "supersedes" not in _result(svc, v1.cover_id)
            assert svc.state.partial_result(LIST, v1.cover_id) is None
        finally:
            svc.stop()


def test_a_patch_arriving_while_the_partial_review_is_written_still_gets_the_complete_one(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    v1 = demo_series(1, tag="race")
    with smtp_sink() as sink:
        svc = Service(tmp_path, fresh_redis, sink, tmp_path / "inbox")
        cfg = yaml.safe_load(svc.config.read_text())
        cfg["lists"][LIST]["wait_seconds"] = 0
        svc.config.write_text(yaml.safe_dump(cfg))
        point = "review:before-commit"
        try:
            write_inbox(svc.inbox, [v1.messages["cover"], v1.messages["1"]])
            svc.workers.append(
                Worker(svc.env(), queues="ingest,publish", name="wi", log=tmp_path / "wi.log")
            )
            svc.workers.append(
                Worker(
                    svc.env(BOT_FAULT_PAUSE=point),
                    queues="analyze",
                    name="wa",
                    log=tmp_path / "wa.log",
                )
            )
            svc.poll()
            wait_until(
                lambda: svc.state.series(LIST, v1.cover_id).get("state") == "incomplete",
                "assembly of the incomplete series",
            )
            svc.send("sweep").get(timeout=60)
            wait_until(lambda: svc.state.fault_hit(point), "the partial review to pause")
            # 2/2 arrives and is assembled while the partial review is still being written
            append_epoch(svc.inbox, 0, [v1.messages["2"]], datetime(2024, 1, 2, tzinfo=UTC))
            svc.poll()
            wait_until(
                lambda: svc.state.series(LIST, v1.cover_id).get("state") == "complete",
                "assembly to find the series complete",
            )
            svc.state.release_fault(point)
            wait_until(
                lambda: (svc.state.result(LIST, v1.cover_id) or {}).get("partial") is False,
                "the complete review",
                timeout=120,
                every=0.2,
            )
            wait_until(lambda: _settled(svc), "the queues and the outbox to settle")
            assert svc.state.review_count(LIST, v1.cover_id) == 2
            kept = svc.state.partial_result(LIST, v1.cover_id)
            assert kept is not None and kept["missing"] == [2]
            assert _result(svc, v1.cover_id)["supersedes"]["missing"] == [2]
        finally:
            svc.stop()


def test_the_commit_script_completes_a_partial_review_once(fresh_redis: RedisServer) -> None:
    state = State.from_url(fresh_redis.url())
    try:
        state.update_series(LIST, "s1", {"state": "incomplete"})
        assert state.commit_review(LIST, "s1", {"n": 1}, None, None, 1.0, mode="partial")
        assert state.series(LIST, "s1")["state"] == "reviewed"
        # nothing owed yet: a "complete" commit needs the series to be owed one
        state.r.hset(state.k("series", LIST, "s1"), "partial", "0")
        assert not state.commit_review(LIST, "s1", {"n": 2}, None, None, 1.0, mode="complete")
        state.r.hset(state.k("series", LIST, "s1"), "partial", "1")
        # a late reply (still incomplete) does not reopen it; the missing patch does
        assert state.update_series(LIST, "s1", {"state": "incomplete"}) == (False, "reviewed")
        assert state.update_series(LIST, "s1", {"state": "complete"}) == (False, "complete")
        assert not state.commit_review(LIST, "s1", {"n": 2}, None, None, 1.0, mode="first")
        assert state.commit_review(LIST, "s1", {"n": 2}, "ob", {"parts": []}, 1.0, mode="complete")
        assert not state.commit_review(LIST, "s1", {"n": 3}, None, None, 1.0, mode="complete")
        assert state.result(LIST, "s1") == {"n": 2}
        assert state.partial_result(LIST, "s1") == {"n": 1}
        assert state.review_count(LIST, "s1") == 2
        assert state.series(LIST, "s1")["partial"] == "0"
        assert state.update_series(LIST, "s1", {"state": "complete"}) == (False, "reviewed")
        # a partial review committed after assembly saw the series complete stays owed
        state.update_series(LIST, "s2", {"state": "incomplete"})
        state.update_series(LIST, "s2", {"state": "complete"})
        assert state.commit_review(LIST, "s2", {"n": 1}, None, None, 1.0, mode="partial")
        assert state.series(LIST, "s2")["state"] == "complete"
        assert state.series(LIST, "s2")["partial"] == "1"
        with pytest.raises(ValueError, match="unknown commit mode"):
            state.commit_review(LIST, "s3", {}, None, None, 1.0, mode="twice")
    finally:
        state.r.close()
