"""The push webhook over real HTTP on loopback: verify before parse, refuse, queue once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.fixtures.service.helpers import (
    RedisServer,
    free_port,
    fresh_redis,
    own_redis,
    wait_until,
)
from workers.config import RepoConfig, ServiceConfig
from workers.openapi import openapi_schema
from workers.state import State
from workers.webhook import create_app, sign

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration

SECRET = "hook-secret"
TOKEN = "gitlab-token"
A, B = "a" * 40, "b" * 40
ROOT = Path(__file__).resolve().parent.parent


class Hook:
    def __init__(self, base: str, queued: list[tuple[str, str, str, str]], state: State) -> None:
        self.base = base
        self.queued = queued
        self.state = state

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(self.base + path, content=body, headers=headers, timeout=10)


def github_push(repo: str = "acme/mm", before: str = A, after: str = B) -> bytes:
    return json.dumps(
        {"ref": "refs/heads/main", "before": before, "after": after,
         "repository": {"full_name": repo, "clone_url": "https://evil.example/x.git"}}
    ).encode()  # fmt: skip


def gh_headers(body: bytes, delivery: str = "d1", secret: str = SECRET) -> dict[str, str]:
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
    }


@pytest.fixture
def hook(fresh_redis: RedisServer) -> Iterator[Hook]:
    state = State.from_url(fresh_redis.url())
    cfg = ServiceConfig(
        repos=(RepoConfig("acme/mm", "/nonexistent"), RepoConfig("mm", "/nonexistent")),
        webhook_secret=SECRET,
        gitlab_token=TOKEN,
        webhook_max_bytes=4096,
    )
    queued: list[tuple[str, str, str, str]] = []

    def enqueue(repo: str, before: str, after: str, ref: str) -> None:
        queued.append((repo, before, after, ref))

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg, state, enqueue), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start", timeout=20, every=0.02)
    yield Hook(f"http://127.0.0.1:{port}", queued, state)
    server.should_exit = True
    thread.join(timeout=10)
    state.r.close()


def test_a_signed_github_push_is_accepted_and_queued_once(hook: Hook) -> None:
    body = github_push()
    resp = hook.post("/hooks/github", body, gh_headers(body))
    assert resp.status_code == 202
    assert resp.json() == {"status": "queued", "scope": "push:acme/mm", "key": f"{A}..{B}"}
    assert hook.queued == [("acme/mm", A, B, "refs/heads/main")]


def test_an_unsigned_delivery_is_refused(hook: Hook) -> None:
    body = github_push()
    headers = gh_headers(body)
    del headers["X-Hub-Signature-256"]
    resp = hook.post("/hooks/github", body, headers)
    assert resp.status_code == 401 and resp.json()["error"] == "unsigned delivery"
    assert hook.queued == []


def test_a_bad_signature_is_refused_before_the_body_is_parsed(hook: Hook) -> None:
    body = b"{not json at all"
    resp = hook.post("/hooks/github", body, gh_headers(body, secret="wrong"))
    assert resp.status_code == 401 and resp.json()["error"] == "bad signature"


def test_a_signed_body_that_is_not_json_is_a_400(hook: Hook) -> None:
    body = b"{not json at all"
    resp = hook.post("/hooks/github", body, gh_headers(body))
    assert resp.status_code == 400 and "not JSON" in resp.json()["error"]


def test_an_oversized_delivery_is_refused(hook: Hook) -> None:
    body = b'{"pad": "' + b"x" * 5000 + b'"}'
    resp = hook.post("/hooks/github", body, gh_headers(body))
    assert resp.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream itself is counted
        for _ in range(10):
            yield b"x" * 1000

    resp = httpx.post(
        hook.base + "/hooks/github", content=chunks(), headers=gh_headers(b""), timeout=10
    )
    assert resp.status_code == 413
    assert hook.queued == []


def test_a_replayed_delivery_is_refused(hook: Hook) -> None:
    body = github_push()
    assert hook.post("/hooks/github", body, gh_headers(body, "same")).status_code == 202
    resp = hook.post("/hooks/github", body, gh_headers(body, "same"))
    assert resp.status_code == 409 and "replay" in resp.json()["error"]
    assert len(hook.queued) == 1


def test_the_same_push_under_a_new_delivery_id_is_not_queued_twice(hook: Hook) -> None:
    body = github_push()
    assert hook.post("/hooks/github", body, gh_headers(body, "one")).json()["status"] == "queued"
    assert hook.post("/hooks/github", body, gh_headers(body, "two")).json()["status"] == "duplicate"
    assert len(hook.queued) == 1


def test_a_repository_off_the_allow_list_is_refused(hook: Hook) -> None:
    body = github_push(repo="someone/else")
    resp = hook.post("/hooks/github", body, gh_headers(body))
    assert resp.status_code == 404 and "allow-list" in resp.json()["error"]
    assert hook.queued == []


def test_commit_ids_that_are_not_hex_are_refused(hook: Hook) -> None:
    body = github_push(after="HEAD; rm -rf /")
    resp = hook.post("/hooks/github", body, gh_headers(body))
    assert resp.status_code == 400 and "hex" in resp.json()["error"]


def test_gitlab_push_needs_the_token(hook: Hook) -> None:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": A,
            "after": B,
            "project": {"path_with_namespace": "acme/mm"},
        }
    ).encode()
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "u1"}
    assert (
        hook.post("/hooks/gitlab", body, {**headers, "X-Gitlab-Token": "nope"}).status_code == 401
    )
    resp = hook.post("/hooks/gitlab", body, {**headers, "X-Gitlab-Token": TOKEN})
    assert resp.status_code == 202 and hook.queued == [("acme/mm", A, B, "refs/heads/main")]


def test_generic_push_uses_the_same_hmac(hook: Hook) -> None:
    body = json.dumps({"repository": "mm", "before": A, "after": B, "ref": "refs/heads/x"}).encode()
    headers = {"X-Bot-Delivery": "g1", "X-Bot-Signature-256": sign(SECRET, body)}
    assert hook.post("/hooks/generic", body, headers).status_code == 202
    assert hook.post("/hooks/generic", body, {**headers, "X-Bot-Delivery": ""}).status_code == 400


def test_a_github_ping_is_answered_without_queueing(hook: Hook) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    headers = {**gh_headers(body, "p1"), "X-GitHub-Event": "ping"}
    assert hook.post("/hooks/github", body, headers).status_code == 200
    assert hook.queued == []


def test_served_openapi_schema_is_the_published_one(hook: Hook) -> None:
    served = httpx.get(hook.base + "/openapi.json", timeout=10).json()
    published = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == published == json.loads(json.dumps(openapi_schema()))
    assert set(served["paths"]) >= {"/hooks/github", "/hooks/gitlab", "/hooks/generic"}


def test_metrics_endpoint_reports_counters_queues_and_latency(hook: Hook) -> None:
    hook.state.update_series("linux-mm", "k1", {"state": "complete"})
    hook.state.commit_review("linux-mm", "k1", {"r": 1}, None, None, 3.0)
    hook.state.r.rpush("analyze", b"task")
    text = httpx.get(hook.base + "/metrics", timeout=10).text
    assert "bot_series_seen_total 1.0" in text
    assert "bot_series_reviewed_total 1.0" in text
    assert 'bot_queue_depth{queue="analyze"} 1.0' in text
    assert 'bot_review_latency_seconds_bucket{le="5"} 1.0' in text
    assert 'bot_review_latency_seconds_bucket{le="1"} 0.0' in text


def test_a_stored_result_is_served_and_a_missing_one_is_404(hook: Hook) -> None:
    hook.state.commit_review("push:acme/mm", f"{A}..{B}", {"text": "ok"}, None, None, 0.1)
    query = {"scope": "push:acme/mm", "key": f"{A}..{B}"}
    got = httpx.get(f"{hook.base}/results", params=query, timeout=10)
    assert got.status_code == 200 and got.json() == {"text": "ok"}
    assert httpx.get(f"{hook.base}/results?scope=x&key=y", timeout=10).status_code == 404
