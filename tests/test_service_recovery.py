"""Work is neither lost nor done twice when a worker dies or runs out of time.

Real redis-server, real `celery -A workers worker` processes (prefork where the pool
matters: a pool child killed by SIGKILL makes the main process re-queue its task at
once), real beat. Fault points (workers.faults) stop a worker at the step that matters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from tests.fixtures.service.helpers import (
    ROOT,
    RedisServer,
    Worker,
    demo_series,
    free_port,
    fresh_redis,
    own_redis,
    pushed_repo,
    wait_until,
    write_inbox,
)
from tests.test_workers import LIST, Service, _email_parts, _outbox_ids, _wait_reviewed, service
from workers.config import load_service_config
from workers.leases import Lease
from workers.metrics import render_metrics
from workers.state import State
from workers.webhook import create_app, sign

__all__ = ["fresh_redis", "own_redis", "service"]

pytestmark = pytest.mark.integration


class Beat:
    """A real `celery -A workers beat` that sweeps every second and never polls."""

    def __init__(self, svc: Service, **extra: str) -> None:
        env = svc.env(BOT_POLL_INTERVAL="3600", BOT_SWEEP_INTERVAL="1", **extra)
        self._log = (svc.tmp / "beat.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "beat",
             "-s", str(svc.tmp / "beat-schedule"), "--loglevel=INFO"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def beat(service: Service) -> Iterator[Beat]:
    b = Beat(service, BOT_LEASE_SECONDS="3")
    try:
        yield b
    finally:
        b.stop()


@contextmanager
def serving(app: object) -> Iterator[str]:
    """The webhook app under uvicorn on loopback; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start", timeout=30, every=0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _logs(path: Path) -> list[dict[str, object]]:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    out = []
    for line in lines:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# --------------------------------------------------------------------------- item: claims


def test_a_pool_process_killed_after_the_claim_is_reviewed_exactly_once(
    service: Service, beat: Beat
) -> None:
    """The pool child reviewing a complete series is SIGKILLed after it claimed the series
    and before it committed. Its task comes back at once and finds the claim; the claim
    lapses with the dead worker and the sweep re-queues the series: one review, one mail."""
    del beat
    v1 = demo_series(1)
    write_inbox(service.inbox, list(v1.messages.values()))
    env = service.env(
        BOT_FAULT_PAUSE="review:before-commit",
        BOT_LEASE_SECONDS="3",
        # redelivery by the broker's visibility timeout is far away: only the claim's
        # own recovery can bring the series back in time
        BOT_VISIBILITY_TIMEOUT="3600",
    )
    service.workers.append(
        Worker(env, name="w1", log=service.tmp / "w1.log", pool="prefork", concurrency=1)
    )
    service.poll()
    point = "review:before-commit"
    wait_until(lambda: service.state.fault_hit(point), "the review to reach the fault point")
    child = service.state.fault_hit(point)
    assert child is not None
    assert service.state.r.exists(service.state.k("reviewing", LIST, v1.cover_id))
    os.kill(child, signal.SIGKILL)  # after the claim, before the result
    service.state.release_fault(point)  # the reviews that follow go straight through
    assert service.state.result(LIST, v1.cover_id) is None
    _wait_reviewed(service, v1.cover_id, "the series to be reviewed after the kill")
    wait_until(lambda: service.state.outbox_pending() == [], "the outbox entry to settle")
    wait_until(service.drained, "the queues to drain")
    assert service.state.review_count(LIST, v1.cover_id) == 1
    (outbox_id,) = _outbox_ids(service)
    assert len(service.sink.messages) == _email_parts(service, outbox_id) >= 1
    assert service.state.r.zcard(service.state.k("claims")) == 0  # nothing left stuck
    assert service.state.stuck_claims() == 0


def test_a_claim_whose_worker_died_is_counted_stuck_until_the_sweep_requeues_it(
    fresh_redis: RedisServer,
) -> None:
    state = State.from_url(fresh_redis.url())
    try:
        live = Lease(state.r, state.k("reviewing", LIST, "alive@x"), ttl=600)
        assert live.acquire()
        state.track_claim(LIST, "alive@x")
        dead = Lease(state.r, state.k("reviewing", LIST, "dead@x"), ttl=0.2)
        assert dead.acquire()  # and then nobody renews it: its worker is gone
        state.track_claim(LIST, "dead@x")
        wait_until(lambda: dead.holder() is None, "the dead worker's lease to lapse")
        assert state.stuck_claims() == 1
        text = render_metrics(state)[0].decode()
        assert "bot_series_stuck 1.0" in text
        assert state.lapsed_claims(now=1e12) == [(LIST, "dead@x")]
        state.requeued_claim(LIST, "dead@x", now=0)
        assert state.lapsed_claims(now=1) == []  # not re-queued again at once
        assert "bot_series_requeued_total 1.0" in render_metrics(state)[0].decode()
        # a lease is renewed and released only by its holder
        other = Lease(state.r, live.name)
        assert not other.renew()
        other.release()
        assert live.holder() == live.token
    finally:
        state.r.close()


# --------------------------------------------------------------------------- item: poll lock


def test_a_dead_workers_poll_lock_lapses_and_the_next_poll_says_so(service: Service) -> None:
    v1 = demo_series(1)
    write_inbox(service.inbox, list(v1.messages.values()))
    doomed = service.start_worker("w1", BOT_FAULT_PAUSE="poll:after-claim", BOT_LEASE_SECONDS="3")
    service.send("poll_mirror", LIST)
    wait_until(lambda: service.state.fault_hit("poll:after-claim"), "the poll to hold its lock")
    doomed.kill()
    service.start_worker("w2", BOT_LEASE_SECONDS="3")

    def polled() -> bool:
        return "skipped" not in service.poll()

    wait_until(polled, "a poll to run after the dead worker's lock", timeout=180, every=0.5)
    _wait_reviewed(service, v1.cover_id, "the polled series to be reviewed")
    warnings = [
        r
        for r in _logs(service.tmp / "w2.log")
        if r.get("level") == "warning" and "last poll died" in str(r.get("msg"))
    ]
    assert warnings and warnings[0]["scope"] == LIST


# --------------------------------------------------------------------------- item: time limits


@pytest.mark.parametrize("which", ["soft", "hard"])
def test_a_push_review_out_of_the_workers_time_is_failed_and_may_be_pushed_again(
    tmp_path: Path, fresh_redis: RedisServer, which: str
) -> None:
    """The sender's app (this test) has the default limits (10 minutes); the worker's are
    seconds. The worker's win; the range is marked failed with the reason, and the same
    push is accepted again and reviewed."""
    repo, before, after = pushed_repo(tmp_path, "mm")
    config = tmp_path / "service.yaml"
    config.write_text(
        yaml.safe_dump({"data_dir": str(tmp_path / "data"), "repos": {"mm": {"url": str(repo)}}})
    )
    secret = "limits-secret"
    from tests.fixtures.service.helpers import worker_env
    from workers.celery_app import make_app

    client = make_app(fresh_redis.url())
    assert client.conf.task_time_limit >= 600  # what the sender would write in its messages
    state = State.from_url(fresh_redis.url())
    cfg = load_service_config(str(config))
    cfg = type(cfg)(**{**cfg.__dict__, "webhook_secret": secret})

    def enqueue(repo_name: str, b: str, a: str, ref: str) -> None:
        client.send_task("workers.tasks.review_push", args=[repo_name, b, a, ref])

    def push() -> int:
        body = json.dumps(
            {"repository": "mm", "before": before, "after": after, "ref": "refs/heads/main"}
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Bot-Signature-256": sign(secret, body),
            "X-Bot-Delivery": str(uuid.uuid4()),
        }
        return httpx.post(base + "/hooks/generic", content=body, headers=headers).status_code

    limits = (
        {"BOT_TASK_SOFT_LIMIT": "2", "BOT_TASK_HARD_LIMIT": "60"}
        if which == "soft"
        else {"BOT_TASK_SOFT_LIMIT": "0", "BOT_TASK_HARD_LIMIT": "3"}  # no soft limit
    )
    env = worker_env(
        fresh_redis.url(),
        {"BOT_SERVICE_CONFIG": str(config), "BOT_FAULT_PAUSE": "review:before-commit", **limits},
    )
    with serving(create_app(cfg, state, enqueue)) as base:
        _push_times_out_then_is_retried(
            state, env, push, tmp_path, key=f"{before}..{after}", which=which
        )


def _push_times_out_then_is_retried(
    state: State,
    env: dict[str, str],
    push: Callable[[], int],
    tmp_path: Path,
    *,
    key: str,
    which: str,
) -> None:
    scope = "push:mm"
    slow = Worker(env, name="w1", log=tmp_path / "w1.log", pool="prefork", concurrency=1)
    try:
        assert push() == 202
        wait_until(
            lambda: state.series(scope, key).get("state") == "failed",
            "the timed-out push review to be marked failed",
            timeout=180,
        )
        assert "timed out" in state.series(scope, key)["error"]
        assert which in state.series(scope, key)["error"]
        assert state.result(scope, key) is None
    finally:
        slow.stop()
    env.pop("BOT_FAULT_PAUSE")
    env.update(BOT_TASK_SOFT_LIMIT="600", BOT_TASK_HARD_LIMIT="660")
    state.release_fault("review:before-commit")
    fast = Worker(env, name="w2", log=tmp_path / "w2.log")
    try:
        assert push() == 202  # not refused as a duplicate of the push that failed
        wait_until(
            lambda: state.result(scope, key) is not None, "the re-pushed review", timeout=240
        )
        assert state.series(scope, key)["state"] == "reviewed"
        assert state.review_count(scope, key) == 1
    finally:
        fast.stop()
        state.r.close()
