"""The webhook under hostile clients, over real sockets: a signed body of the wrong
shape is a 4xx with a one-line reason (never 500), and a client that sends its
request head or body slowly is cut off while other requests are still served.

uvicorn runs in a thread with the options `bot serve` gives it (workers.httpguard);
the deadlines are short here (one second) and every wait is a generous guard."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

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
from workers.config import ServiceConfig, parse_config
from workers.httpguard import uvicorn_options
from workers.state import State
from workers.webhook import create_app, sign

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration

SECRET = "limits-secret"


@dataclass
class Served:
    base: str
    port: int
    queued: list[tuple[str, str, str, str]]


@pytest.fixture
def served(fresh_redis: RedisServer) -> Iterator[Served]:
    cfg: ServiceConfig = parse_config(
        {
            "repos": {"mm": {"url": "/nonexistent"}},
            "webhook": {"header_timeout": 1, "read_timeout": 1, "max_connections": 32},
        },
        env={"BOT_WEBHOOK_SECRET": SECRET},
    )
    state = State.from_url(fresh_redis.url())
    queued: list[tuple[str, str, str, str]] = []

    def enqueue(repo: str, before: str, after: str, ref: str) -> None:
        queued.append((repo, before, after, ref))

    port = free_port()
    config = uvicorn.Config(
        create_app(cfg, state, enqueue),
        host="127.0.0.1",
        port=port,
        log_level="error",
        **uvicorn_options(cfg),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start", timeout=20, every=0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", port, queued)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        state.r.close()


def _post(served: Served, body: bytes) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-Bot-Signature-256": sign(SECRET, body),
        "X-Bot-Delivery": str(uuid.uuid4()),
    }
    return httpx.post(f"{served.base}/hooks/generic", content=body, headers=headers, timeout=60)


SHA_A, SHA_B = "a" * 40, "b" * 40


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # deeply nested: the JSON parser runs out of recursion
        (b'{"repository": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b"[" * 200_000, "nested too deeply"),
        # a number too long to convert
        (b'{"repository": "mm", "before": 1' + b"0" * 6000 + b"}", "not a push event"),
        # wrong types everywhere
        (json.dumps({"repository": ["mm"], "before": SHA_A, "after": SHA_B}).encode(), "no rep"),
        (json.dumps({"repository": {"name": 7}, "before": SHA_A}).encode(), "no repository"),
        (json.dumps({"repository": "mm", "before": 1, "after": [SHA_B]}).encode(), "full hex"),
        (
            json.dumps({"repository": "mm", "before": SHA_A, "after": SHA_B, "ref": {}}).encode(),
            None,  # a ref that is not a string is no ref: queued
        ),
        (json.dumps(["repository", "mm"]).encode(), "not a JSON object"),
        (json.dumps("mm").encode(), "not a JSON object"),
        (b"\xff\xfe{}", "not JSON"),
    ],
)
def test_a_signed_body_of_the_wrong_shape_is_a_4xx_with_one_line(
    served: Served, body: bytes, reason: str | None
) -> None:
    resp = _post(served, body)
    if reason is None:
        assert resp.status_code == 202, resp.text
        assert served.queued == [("mm", SHA_A, SHA_B, "")]
        return
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:200])
    error = resp.json()["error"]
    assert reason in error and "\n" not in error and len(error) < 200
    assert served.queued == []


def _closed_by_server(sock: socket.socket, drip: bytes) -> bytes:
    """Send `drip` now and then until the server closes the connection; what it
    answered before closing."""
    got = bytearray()
    sock.settimeout(0.2)

    def closed() -> bool:
        try:
            sock.sendall(drip)
        except OSError:
            return True
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return False
        except OSError:
            return True
        got.extend(chunk)
        return chunk == b""

    wait_until(closed, "the server to close the slow connection", timeout=60, every=0.2)
    return bytes(got)


def _healthy(served: Served) -> None:
    assert httpx.get(f"{served.base}/healthz", timeout=30).json() == {"status": "ok"}


def test_a_client_sending_its_headers_slowly_is_disconnected(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as slow:
        slow.sendall(b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\n")
        results: list[bytes] = []
        t = threading.Thread(target=lambda: results.append(_closed_by_server(slow, b"X: y\r\n")))
        t.start()
        _healthy(served)  # served while the slow client is connected
        t.join(timeout=120)
        assert results == [b""]  # closed without an answer: there was no request
    _healthy(served)


def test_a_client_sending_its_body_slowly_gets_408_and_is_disconnected(served: Served) -> None:
    head = (
        b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Bot-Signature-256: sha256=00\r\nX-Bot-Delivery: slow-1\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as slow:
        slow.sendall(head)
        results: list[bytes] = []
        t = threading.Thread(target=lambda: results.append(_closed_by_server(slow, b" ")))
        t.start()
        _healthy(served)
        t.join(timeout=120)
    (answer,) = results
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request body not received within 1 s" in answer
    _healthy(served)


def test_an_idle_keep_alive_connection_and_a_huge_head_are_closed(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(60)
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            chunk = idle.recv(4096)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 ")
        # nothing more is sent: the server closes the connection by itself
        assert idle.recv(4096) == b""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as big:
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024)
        big.settimeout(60)
        answer = big.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400 ")
    _healthy(served)
