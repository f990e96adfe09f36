"""Bounds on what one HTTP client can hold: a slow or endless request is cut off.

uvicorn alone waits for a request's headers and body as long as the client keeps
the connection open, so a client sending a byte now and then holds a connection
(and, with enough of them, the whole server). Three layers:

    GuardedH11Protocol   uvicorn's h11 protocol with a deadline for the request line
                         and headers (`webhook.header_timeout`): a connection that has
                         not sent a whole request head by then is closed
    BodyGuard            ASGI middleware: the whole body must arrive within
                         `webhook.read_timeout` (408 and the connection closed) and
                         be at most `webhook.max_bytes` (413), on every route
    uvicorn settings     keep-alive timeout, concurrency cap (503 past it) and the
                         largest request head (`uvicorn_options`, `uvicorn_args`)

`bot serve` starts uvicorn with `uvicorn_args`; a hand-run uvicorn takes the same
flags (docs/service.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from workers.config import ServiceConfig


class GuardedH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request head is not complete within
    `header_timeout` seconds of the connection opening or of the last response."""

    header_timeout: float = 10.0  # set from the service config by the app factory

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        if self.transport.is_closing():
            return
        waiting_for = self.cycle  # a new request replaces the cycle
        self._head_timer = self.loop.call_later(
            self.header_timeout, self._head_deadline, waiting_for
        )

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline(self, waiting_for: object) -> None:
        self._head_timer = None
        if self.cycle is waiting_for and not self.transport.is_closing():
            self.logger.warning("closing a connection: no request head within the deadline")
            self.transport.close()


class BodyTimeout(Exception):
    pass


class BodyTooLarge(Exception):
    pass


class BodyGuard:
    """Every request body within `read_timeout` seconds and `max_bytes` bytes."""

    def __init__(self, app: ASGIApp, *, read_timeout: float, max_bytes: int) -> None:
        self.app = app
        self.read_timeout = read_timeout
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        size = 0
        body_done = False
        started = False

        async def guarded_receive() -> Message:
            nonlocal size, body_done
            if body_done:
                return await receive()
            left = deadline - loop.time()
            if left <= 0:
                raise BodyTimeout
            try:
                message = await asyncio.wait_for(receive(), timeout=left)
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except BodyTimeout:
            if not started:
                await _refuse(
                    send, 408, f"request body not received within {self.read_timeout:g} s"
                )
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, f"body over {self.max_bytes} bytes")


async def _refuse(send: Send, status: int, reason: str) -> None:
    """A one-line JSON refusal, and the connection closed after it (the rest of the
    body is never read)."""
    body = json.dumps({"error": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def uvicorn_options(cfg: ServiceConfig) -> dict[str, Any]:
    """uvicorn.Config keyword arguments that bound what clients can hold."""
    protocol = type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": cfg.webhook_header_timeout}
    )
    return {
        "http": protocol,
        "timeout_keep_alive": cfg.webhook_keep_alive,
        "limit_concurrency": cfg.webhook_max_connections,
        "h11_max_incomplete_event_size": cfg.webhook_max_header_bytes,
    }


def uvicorn_args(cfg: ServiceConfig) -> list[str]:
    """The same as uvicorn command-line flags (`bot serve`, a hand-run uvicorn)."""
    return [
        "--http", "workers.httpguard:GuardedH11Protocol",
        "--timeout-keep-alive", f"{max(1, round(cfg.webhook_keep_alive))}",
        "--limit-concurrency", str(cfg.webhook_max_connections),
        "--h11-max-incomplete-event-size", str(cfg.webhook_max_header_bytes),
    ]  # fmt: skip


__all__ = ["BodyGuard", "GuardedH11Protocol", "uvicorn_args", "uvicorn_options"]
