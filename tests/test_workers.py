"""The Celery service with real Redis and real worker processes.

Every integration test starts its own redis-server and `celery -A workers worker`
subprocesses, and stops them. Fault points (workers.faults) stop a worker at an exact
step so it can be killed there with SIGKILL.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml
from celery import Celery
from celery.exceptions import QueueNotFound

from bot.errors import BotError, FetchError, InputError
from tests.fixtures.service.helpers import (
    RedisServer,
    SmtpSink,
    Worker,
    demo_reply,
    demo_series,
    fresh_redis,
    have_public_inbox,
    own_redis,
    public_inbox,
    smtp_sink,
    wait_until,
    worker_env,
    write_inbox,
)
from workers.celery_app import QUEUES, app, make_app
from workers.state import State
from workers.tasks import TRANSIENT

__all__ = ["fresh_redis", "own_redis"]

LIST = "test"


# --------------------------------------------------------------------------- configuration


def test_every_route_targets_a_declared_queue() -> None:
    declared = {q.name for q in app.conf.task_queues}
    assert declared == set(QUEUES) == {"ingest", "analyze", "publish"}
    assert app.conf.task_create_missing_queues is False
    routes = app.conf.task_routes
    assert {r["queue"] for r in routes.values()} <= declared
    registered = {n for n in app.tasks if n.startswith("workers.tasks.")}
    assert registered == set(routes)


def test_tasks_ack_late_with_time_limits_and_retry_only_transient_errors() -> None:
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert 0 < app.conf.task_soft_time_limit < app.conf.task_time_limit
    for name in app.conf.task_routes:
        task = app.tasks[name]
        assert task.acks_late
        assert set(task.autoretry_for) == set(TRANSIENT)
        assert task.retry_jitter and task.retry_backoff
    assert issubclass(FetchError, TRANSIENT)
    assert not issubclass(InputError, TRANSIENT) and not issubclass(BotError, TRANSIENT)
    assert issubclass(redis.ConnectionError, TRANSIENT)


def test_beat_polls_the_lists_and_sweeps() -> None:
    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert tasks == {"workers.tasks.poll_all", "workers.tasks.sweep", "workers.tasks.fetch_trees"}


def test_a_route_to_an_undeclared_queue_is_refused(fresh_redis: RedisServer) -> None:
    client = make_app(fresh_redis.url())
    with pytest.raises(QueueNotFound, match="anlyze"):
        client.send_task("workers.tasks.sweep", queue="anlyze")  # typo


# --------------------------------------------------------------------------- service harness


@dataclass
class Service:
    """Own Redis + config + real workers; `send` queues a task like beat would."""

    tmp: Path
    redis: RedisServer
    sink: SmtpSink
    inbox: Path
    extra: dict[str, Any] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = {
            "data_dir": str(self.tmp / "data"),
            "batch_size": 3,
            "lists": {
                LIST: {
                    "mirror": str(self.inbox),
                    "address": "test@example.com",
                    "email": True,
                    "mail_clean": True,  # these tests count the replies of clean v2s too
                    "wait_seconds": 3600,
                }
            },
            "publish": {
                "dry_run": False,
                "from": "mm-bot <bot@example.net>",
                "smtp": {"host": self.sink.host, "port": self.sink.port},
                "maildir": str(self.tmp / "outbox"),
            },
            **self.extra,
        }
        self.config = self.tmp / "service.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.client: Celery = make_app(self.redis.url())
        self.state = State.from_url(self.redis.url())

    def env(self, **extra: str) -> dict[str, str]:
        return worker_env(
            self.redis.url(),
            {
                "BOT_SERVICE_CONFIG": str(self.config),
                "BOT_VISIBILITY_TIMEOUT": "4",
                "BOT_RESTORE_INTERVAL": "1",
                "BOT_RESTORE_THROTTLE": "1",
                "BOT_OUTBOX_STALE_SECONDS": "2",
                "BOT_LEASE_SECONDS": "5",  # a killed worker's claims lapse after this
                "BOT_FAULT_PAUSE_SECONDS": "600",
                **extra,
            },
        )

    def start_worker(self, name: str = "w1", **extra: str) -> Worker:
        w = Worker(self.env(**extra), name=name, log=self.tmp / f"{name}.log")
        self.workers.append(w)
        return w

    def send(self, task: str, *args: Any) -> Any:
        return self.client.send_task(f"workers.tasks.{task}", args=list(args))

    def poll(self) -> dict[str, int]:
        return dict(self.send("poll_mirror", LIST).get(timeout=60))

    def drained(self) -> bool:
        """No task queued and none delivered-but-unacked: nothing more will run."""
        r = self.state.r
        return all(r.llen(q) == 0 for q in QUEUES) and r.hlen("unacked") == 0

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp.glob("w*.log"))

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.state.r.close()


@pytest.fixture
def service(tmp_path: Path, fresh_redis: RedisServer) -> Iterator[Service]:
    with smtp_sink() as sink:
        svc = Service(tmp_path, fresh_redis, sink, tmp_path / "inbox")
        try:
            yield svc
        finally:
            svc.stop()


def _wait_reviewed(svc: Service, key: str, what: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> bool:
        if svc.state.series(LIST, key).get("state") == "failed":
            raise AssertionError(f"review failed: {svc.state.series(LIST, key)}")
        return svc.state.result(LIST, key) is not None

    try:
        wait_until(done, what, timeout=timeout, every=0.2)
    except AssertionError:
        print(svc.log_text()[-6000:])
        raise
    result = svc.state.result(LIST, key)
    assert result is not None
    return result


# --------------------------------------------------------------------------- integration


@pytest.mark.integration
@pytest.mark.skipif(not have_public_inbox(), reason="public-inbox is not installed")
def test_public_inbox_series_in_scrambled_order_is_reviewed_once_and_v2_is_linked(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    pi = public_inbox(tmp_path)
    with smtp_sink() as sink:
        svc = Service(tmp_path, fresh_redis, sink, pi.path)
        try:
            svc.start_worker()
            v1 = demo_series(1)
            arrivals = [v1.messages["2"], v1.messages["cover"], demo_reply(v1, 2), v1.messages["1"]]
            for i, raw in enumerate(arrivals[:-1]):
                pi.deliver(raw)
                before = svc.state.series(LIST, v1.cover_id).get("updated")
                svc.poll()
                if i >= 1:  # from the cover on, the series is known under its key

                    def moved(b: str | None = before) -> bool:
                        return svc.state.series(LIST, v1.cover_id).get("updated") != b

                    wait_until(moved, "assembly of the new message")
                    assert svc.state.series(LIST, v1.cover_id)["state"] == "incomplete"
                    assert svc.state.series(LIST, v1.cover_id)["missing"] == "1"
            assert svc.state.result(LIST, v1.cover_id) is None
            pi.deliver(arrivals[-1])
            svc.poll()
            result = _wait_reviewed(svc, v1.cover_id, "v1 to be reviewed")
            assert result["missing"] == [] and result["partial"] is False
            # a late reply, and the whole mirror walked again: no second review
            pi.deliver(demo_reply(v1, 1, text="One more nit."))
            svc.poll()
            svc.state.r.delete(svc.state.k("mirror", LIST, "cursor"))
            svc.poll()
            wait_until(svc.drained, "the queues to drain")
            assert svc.state.review_count(LIST, v1.cover_id) == 1

            v2 = demo_series(2)
            for raw in (v2.messages["1"], v2.messages["cover"], v2.messages["2"]):
                pi.deliver(raw)
                svc.poll()
            result2 = _wait_reviewed(svc, v2.cover_id, "v2 to be reviewed")
            assert result2["previous"] == v1.cover_id
            leak = {
                "rule_id": "MMLC002",
                "function": "demo_pool_shrink_all",
                "file": "mm/demo_pool.c",
            }
            assert result2["comparison"] == {
                "old_version": "1",
                "new_version": "2",
                "resolved": [leak],
                "still_present": [],
                "new": [],
            }
            assert svc.state.series(LIST, v2.cover_id)["revision_of"] == v1.cover_id
            assert svc.state.series(LIST, v1.cover_id)["superseded_by"] == v2.cover_id
            assert svc.state.series(LIST, v1.cover_id)["state"] == "reviewed"
            wait_until(svc.drained, "the queues to drain")
            assert svc.state.review_count(LIST, v2.cover_id) == 1
            # the replies reached the SMTP server, threaded under the series
            wait_until(lambda: svc.state.outbox_pending() == [], "the outbox to empty")
            ours = {v1.cover_id, *v1.patch_ids, v2.cover_id, *v2.patch_ids}
            assert sink.messages
            v2_ids = {v2.cover_id, *v2.patch_ids}
            v2_replies = [
                raw.decode()
                for _s, _r, raw in sink.messages
                if message_from_bytes(raw)["In-Reply-To"].strip("<>") in v2_ids
            ]
            assert any(
                "resolved: MMLC002 demo_pool_shrink_all() in mm/demo_pool.c" in r
                for r in v2_replies
            )
            for _sender, rcpts, raw in sink.messages:
                msg = message_from_bytes(raw)
                assert msg["In-Reply-To"].strip("<>") in ours
                assert "ada@example.org" in rcpts and "test@example.com" in rcpts
        finally:
            svc.stop()


@pytest.mark.integration
def test_worker_killed_mid_review_reviews_the_series_exactly_once_after_restart(
    service: Service,
) -> None:
    v1 = demo_series(1)
    write_inbox(service.inbox, list(v1.messages.values()))
    doomed = service.start_worker("w1", BOT_FAULT_PAUSE="review:before-commit")
    service.poll()
    wait_until(
        lambda: service.state.fault_hit("review:before-commit"),
        "the review to reach the fault point",
    )
    doomed.kill()
    assert service.state.result(LIST, v1.cover_id) is None
    service.start_worker("w2")  # nobody re-sends anything: the broker redelivers
    _wait_reviewed(service, v1.cover_id, "the redelivered review")
    wait_until(service.drained, "the queues to drain")
    assert service.state.review_count(LIST, v1.cover_id) == 1
    wait_until(lambda: service.state.outbox_pending() == [], "the outbox entry to settle")
    wait_until(service.drained, "the queues to drain")
    (outbox_id,) = _outbox_ids(service)
    assert len(service.sink.messages) == _email_parts(service, outbox_id) >= 1


def _outbox_ids(svc: Service) -> list[str]:
    """Every outbox entry ever stored (pending or settled)."""
    names = [k.decode() for k in cast(list[bytes], svc.state.r.keys(svc.state.k("outbox", "*")))]
    return [n.split(":")[2] for n in names if n.count(":") == 2 and not n.endswith(":pending")]


def _email_parts(svc: Service, outbox_id: str) -> int:
    parts = json.loads(svc.state.outbox_item(outbox_id)["payload"])["parts"]
    return sum(1 for p in parts if p["kind"] == "email")


@pytest.mark.integration
@pytest.mark.parametrize("point", ["publish:start", "publish:after-send"])
def test_publishing_worker_killed_between_steps_never_sends_twice(
    service: Service, point: str
) -> None:
    v1 = demo_series(1)
    write_inbox(service.inbox, list(v1.messages.values()))
    doomed = service.start_worker("w1", BOT_FAULT_PAUSE=point)
    service.poll()
    wait_until(lambda: service.state.fault_hit(point), f"publishing to reach {point}")
    sent_before_kill = len(service.sink.messages)
    doomed.kill()
    assert service.state.result(LIST, v1.cover_id) is not None  # stored before any send
    service.start_worker("w2")
    wait_until(lambda: service.state.outbox_pending() == [], "the outbox entry to settle")
    wait_until(service.drained, "the queues to drain")
    (outbox_id,) = _outbox_ids(service)
    item = service.state.outbox_item(outbox_id)
    emails = _email_parts(service, outbox_id)
    assert emails >= 1
    assert len(service.sink.messages) == emails  # every reply reached SMTP exactly once
    if point == "publish:after-send":
        assert sent_before_kill == 1 and item["part:0"] == "uncertain"
    else:
        assert sent_before_kill == 0 and item["part:0"] == "sent"


@pytest.mark.integration
def test_mail_that_is_not_mail_is_skipped_and_the_series_still_reviewed(service: Service) -> None:
    v1 = demo_series(1)
    garbage = b"\x00\xff\xfe binary junk, no headers at all\n" * 20
    write_inbox(service.inbox, [garbage, *v1.messages.values()])
    service.start_worker()
    service.poll()
    _wait_reviewed(service, v1.cover_id, "the review despite the junk")
    wait_until(service.drained, "the queues to drain")
    assert "Traceback" not in service.log_text()
    logs = [json.loads(line) for line in service.log_text().splitlines() if line.startswith("{")]
    reviewed = [r for r in logs if r["msg"] == "series reviewed"]
    assert [(r["scope"], r["series"]) for r in reviewed] == [(LIST, v1.cover_id)]


@pytest.mark.integration
def test_the_same_message_delivered_twice_gives_one_review(service: Service) -> None:
    v1 = demo_series(1)
    msgs = list(v1.messages.values())
    write_inbox(service.inbox, [msgs[0], msgs[1], msgs[1], msgs[2], msgs[2]])
    service.start_worker()
    stats = service.poll()
    assert stats["walked"] == 5 and stats["stored"] == 3
    _wait_reviewed(service, v1.cover_id, "the review")
    service.state.r.delete(service.state.k("mirror", LIST, "cursor"))
    assert service.poll()["stored"] == 0
    wait_until(service.drained, "the queues to drain")
    assert service.state.review_count(LIST, v1.cover_id) == 1


@pytest.mark.integration
def test_redis_restarted_mid_backfill_loses_no_message_and_reviews_none_twice(
    service: Service,
) -> None:
    from bot.ingest.mirror import PublicInboxMirror
    from tests.fixtures.service.helpers import generated_archive
    from workers.intake import ingest_mirror

    msgs = generated_archive(60, seed=7)
    write_inbox(service.inbox, msgs, per_epoch=25)
    service.start_worker("w1")
    mirror = PublicInboxMirror(str(service.inbox), service.tmp / "cache")
    mirror.sync()
    restarted = threading.Event()

    def after_batch(_n: int) -> None:
        if not restarted.is_set():
            restarted.set()
            service.redis.stop()  # SIGTERM: the append-only file is already fsynced
            threading.Timer(1.0, service.redis.start).start()  # back in a second

    def enqueue(scope: str, roots: list[str]) -> None:
        service.client.send_task("workers.tasks.assemble_thread", args=[scope, roots])

    stats = ingest_mirror(service.state, LIST, mirror, enqueue, batch_size=5, progress=after_batch)
    assert restarted.is_set() and stats.retries >= 1
    ids = {m.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode() for m in msgs}
    assert service.state.seen_count(LIST) == len(ids) == stats.stored
    from bot.assemble import assemble
    from bot.config import load_settings
    from bot.ingest import parse_message

    everything = assemble([parse_message(m, "t", i) for i, m in enumerate(msgs)], load_settings())
    keys = [s.key for s in everything.series]
    assert len(keys) >= 10

    def settled() -> bool:
        states = [service.state.series(LIST, k).get("state") for k in keys]
        return all(s in {"reviewed", "superseded", "merged"} for s in states)

    wait_until(settled, "every series to be reviewed", timeout=150, every=0.5)
    wait_until(service.drained, "the queues to drain")
    reviewed = [k for k in keys if service.state.series(LIST, k)["state"] == "reviewed"]
    assert reviewed
    assert all(service.state.review_count(LIST, k) == 1 for k in reviewed)


@pytest.mark.integration
def test_sweep_reviews_an_incomplete_series_after_the_wait_and_names_what_is_missing(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    v1 = demo_series(1)
    with smtp_sink() as sink:
        svc = Service(tmp_path, fresh_redis, sink, tmp_path / "inbox")
        cfg = yaml.safe_load(svc.config.read_text())
        cfg["lists"][LIST]["wait_seconds"] = 0
        svc.config.write_text(yaml.safe_dump(cfg))
        try:
            write_inbox(svc.inbox, [v1.messages["cover"], v1.messages["1"]])
            svc.start_worker()
            svc.poll()
            wait_until(
                lambda: svc.state.series(LIST, v1.cover_id).get("state") == "incomplete", "assembly"
            )
            out = svc.send("sweep").get(timeout=60)
            assert out["partial_reviews"] == 1
            result = _wait_reviewed(svc, v1.cover_id, "the partial review")
            assert result["partial"] is True and result["missing"] == [2]
            assert "2/2 MISSING" in result["text"]
        finally:
            svc.stop()


@pytest.mark.integration
def test_cursor_stays_put_until_the_batch_is_queued_and_a_rerun_queues_it(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    from bot.ingest.mirror import PublicInboxMirror
    from workers.intake import ingest_mirror

    v1 = demo_series(1)
    write_inbox(tmp_path / "inbox", list(v1.messages.values()))
    mirror = PublicInboxMirror(str(tmp_path / "inbox"), tmp_path / "cache")
    mirror.sync()
    state = State.from_url(fresh_redis.url())

    def broken(_scope: str, _roots: list[str]) -> None:
        raise RuntimeError("broker gone")

    with pytest.raises(RuntimeError):
        ingest_mirror(state, LIST, mirror, broken)
    assert state.seen_count(LIST) == 3  # stored...
    assert state.cursors(LIST) == {}  # ...but the cursor did not move past unqueued mail
    queued: list[str] = []
    stats = ingest_mirror(state, LIST, mirror, lambda _s, roots: queued.extend(roots))
    assert stats.stored == 0 and queued == [v1.cover_id]
    assert state.cursors(LIST) == {0: next(iter(reversed(list(mirror.walk({}))))).commit}
    state.r.close()


@pytest.mark.integration
def test_beat_polls_the_configured_list_without_being_asked(service: Service) -> None:
    import signal
    import subprocess
    import sys

    v1 = demo_series(1)
    write_inbox(service.inbox, list(v1.messages.values()))
    service.start_worker()
    env = service.env(BOT_POLL_INTERVAL="1", BOT_SWEEP_INTERVAL="3600")
    with (service.tmp / "beat.log").open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "beat",
             "-s", str(service.tmp / "beat-schedule"), "--loglevel=INFO"],
            cwd=Path(__file__).resolve().parent.parent, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            _wait_reviewed(service, v1.cover_id, "beat's poll to lead to a review")
        finally:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(timeout=20)
    assert service.state.review_count(LIST, v1.cover_id) == 1


@pytest.mark.integration
@pytest.mark.corpus
def test_the_seed_thread_shuffled_into_a_mirror_is_reviewed_once_as_v3(
    service: Service, corpus: Path
) -> None:
    import random

    msgs = [p.read_bytes() for p in sorted((corpus / "seed").glob("*.eml"))]
    random.Random(5).shuffle(msgs)  # the archive order of a busy list, not the posting order
    write_inbox(service.inbox, msgs)
    service.start_worker()
    service.poll()
    v3 = "cover.1398235153.git.vdavydov@parallels.com"
    result = _wait_reviewed(service, v3, "the seed series v3")
    wait_until(service.drained, "the queues to drain")
    assert result["version"] == 3 and result["missing"] == []
    assert [v["version"] for v in result["review"]["versions"]] == [1, 2, 3]
    # v1 (1/4 and 2/4 never archived) and v2 (3/3 never archived) are superseded, not reviewed
    reviewed = [k for k in service.state.series_keys(LIST) if service.state.result(LIST, k)]
    assert reviewed == [v3]
    assert service.state.review_count(LIST, v3) == 1
    v1 = service.state.series(LIST, "cover.1397054470.git.vdavydov@parallels.com")
    assert v1["state"] == "superseded"
