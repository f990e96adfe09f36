"""The push webhook: a small ASGI app that verifies, de-duplicates and queues push reviews.

    POST /hooks/github    X-Hub-Signature-256: sha256=<HMAC-SHA256(body)>, X-GitHub-Delivery
    POST /hooks/gitlab    X-Gitlab-Token: <token>, X-Gitlab-Event-UUID
    POST /hooks/generic   X-Bot-Signature-256: sha256=<HMAC-SHA256(body)>, X-Bot-Delivery
    GET  /healthz         liveness
    GET  /metrics         Prometheus metrics (series seen/reviewed/failed, queues, latency)
    GET  /openapi.json    this API's OpenAPI 3.1 schema (also docs/openapi.json)
    GET  /results?scope=S&key=K   a stored review, when there is one
    GET  /, /series, /rules       the results page (workers/web.py); POST /dismiss,
                                  /undismiss, /login, /logout only when web dismissals
                                  are enabled

Every delivery is checked in this order, before its body is parsed: size (413),
signature or token (401), delivery ID present (400) and never seen before (409). Only
then is the JSON read; the repository must be on the allow-list (404 otherwise) and is
fetched from the configured URL, never from a URL in the payload. The answer is 202 at
once; the review runs on a worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from workers.config import ServiceConfig
from workers.state import State

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_REF_RE = re.compile(r"^[\w./@+-]{1,255}$")

Enqueue = Callable[[str, str, str, str], None]  # (repo, before, after, ref)


class Reject(Exception):
    """A delivery refused with an HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Push:
    repo: str
    before: str
    after: str
    ref: str


def sign(secret: str, body: bytes) -> str:
    """The `sha256=<hex>` signature GitHub (and our generic form) send for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_hmac(secret: str, body: bytes, header: str | None) -> None:
    if not secret:
        raise Reject(503, "webhook secret is not configured (BOT_WEBHOOK_SECRET)")
    if not header:
        raise Reject(401, "unsigned delivery")
    if not hmac.compare_digest(sign(secret, body), header.strip()):
        raise Reject(401, "bad signature")


def verify_token(expected: str, header: str | None) -> None:
    if not expected:
        raise Reject(503, "GitLab token is not configured (BOT_GITLAB_TOKEN)")
    if not header:
        raise Reject(401, "unsigned delivery")
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise Reject(401, "bad token")


def _field(data: dict[str, Any], *path: str) -> str:
    cur: Any = data
    for p in path:
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    return cur if isinstance(cur, str) else ""


def parse_push(kind: str, body: bytes) -> Push:
    """Read repository, before, after and ref from a verified delivery."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Reject(400, f"body is not JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from exc
    except RecursionError as exc:
        raise Reject(400, "body is not a push event: JSON nested too deeply") from exc
    except ValueError as exc:  # a number too long to convert, and the like
        raise Reject(400, f"body is not a push event: {' '.join(str(exc).split())[:120]}") from exc
    if not isinstance(data, dict):
        raise Reject(400, "body is not a JSON object")
    if kind == "github":
        repo = _field(data, "repository", "full_name")
    elif kind == "gitlab":
        repo = _field(data, "project", "path_with_namespace")
    else:
        repo = _field(data, "repository") or _field(data, "repository", "name")
    before, after, ref = _field(data, "before"), _field(data, "after"), _field(data, "ref")
    if not repo:
        raise Reject(400, "payload names no repository")
    if not _SHA_RE.match(before) or not _SHA_RE.match(after):
        raise Reject(400, "before/after must be full hex commit ids")
    if ref and not _REF_RE.match(ref):
        raise Reject(400, "ref has characters a git ref cannot have")
    if set(after) == {"0"}:
        raise Reject(400, "branch deletion: nothing to review")
    return Push(repo=repo, before=before, after=after, ref=ref)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise Reject(413, f"body over {limit} bytes")
        except ValueError as exc:
            raise Reject(400, "bad Content-Length") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Reject(413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    cfg: ServiceConfig,
    state: State,
    enqueue: Enqueue | None = None,
) -> Starlette:
    """The webhook ASGI app; `enqueue` defaults to queueing `workers.tasks.review_push`."""

    def default_enqueue(repo: str, before: str, after: str, ref: str) -> None:
        from workers.tasks import review_push

        review_push.apply_async((repo, before, after, ref))

    send = enqueue or default_enqueue

    async def receive(request: Request, kind: str) -> Response:
        try:
            body = await read_body(request, cfg.webhook_max_bytes)
            h = request.headers
            if kind == "github":
                verify_hmac(cfg.webhook_secret, body, h.get("x-hub-signature-256"))
                delivery, event = h.get("x-github-delivery"), h.get("x-github-event", "push")
            elif kind == "gitlab":
                verify_token(cfg.gitlab_token, h.get("x-gitlab-token"))
                delivery = h.get("x-gitlab-event-uuid") or h.get("x-gitlab-webhook-uuid")
                event = "push" if h.get("x-gitlab-event", "Push Hook") == "Push Hook" else "other"
            else:
                verify_hmac(cfg.webhook_secret, body, h.get("x-bot-signature-256"))
                delivery, event = h.get("x-bot-delivery"), "push"
            if not delivery or len(delivery) > 200:
                raise Reject(400, "missing delivery ID")
            if not state.first_delivery(f"{kind}:{delivery}"):
                raise Reject(409, "delivery already received (replay)")
            if event == "ping":
                return JSONResponse({"status": "pong"}, status_code=200)
            if event != "push":
                return JSONResponse({"status": "ignored", "event": event}, status_code=202)
            push = parse_push(kind, body)
            if cfg.repo(push.repo) is None:
                raise Reject(404, f"repository {push.repo!r} is not on the allow-list")
            scope, key = f"push:{push.repo}", f"{push.before}..{push.after}"
            if not state.r.set(state.k("push", scope, key), "queued", nx=True, ex=7 * 24 * 3600):
                return JSONResponse(
                    {"status": "duplicate", "scope": scope, "key": key}, status_code=202
                )
            try:
                send(push.repo, push.before, push.after, push.ref)
            except Exception as exc:
                state.r.delete(state.k("push", scope, key))
                raise Reject(503, f"cannot queue the review: {type(exc).__name__}") from exc
            return JSONResponse({"status": "queued", "scope": scope, "key": key}, status_code=202)
        except Reject as rej:
            return JSONResponse({"error": rej.reason}, status_code=rej.status)

    async def github(request: Request) -> Response:
        return await receive(request, "github")

    async def gitlab(request: Request) -> Response:
        return await receive(request, "gitlab")

    async def generic(request: Request) -> Response:
        return await receive(request, "generic")

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(_request: Request) -> Response:
        from workers.openapi import openapi_schema

        return JSONResponse(openapi_schema())

    async def metrics(_request: Request) -> Response:
        from workers.metrics import render_metrics

        body, ctype = render_metrics(state)
        return Response(body, media_type=ctype)

    async def result(request: Request) -> Response:
        scope = request.query_params.get("scope", "")
        key = request.query_params.get("key", "")
        found = state.result(scope, key)
        if found is None:
            return JSONResponse(
                {"error": "no review stored", "series": state.series(scope, key)}, status_code=404
            )
        return JSONResponse(found)

    from starlette.middleware import Middleware

    from workers.httpguard import BodyGuard
    from workers.web import web_routes

    guard = Middleware(
        BodyGuard, read_timeout=cfg.webhook_read_timeout, max_bytes=cfg.webhook_max_bytes
    )
    return Starlette(
        middleware=[guard],
        routes=[
            *web_routes(cfg, state),
            Route("/hooks/github", github, methods=["POST"]),
            Route("/hooks/gitlab", gitlab, methods=["POST"]),
            Route("/hooks/generic", generic, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/results", result, methods=["GET"]),
        ],
    )


def app_from_env() -> Starlette:
    """The app uvicorn serves: `uvicorn --factory workers.webhook:app_from_env`."""
    from workers.config import load_service_config
    from workers.httpguard import GuardedH11Protocol

    cfg = load_service_config()
    # a uvicorn started with `--http workers.httpguard:GuardedH11Protocol`
    GuardedH11Protocol.header_timeout = cfg.webhook_header_timeout
    return create_app(cfg, State.from_url())


__all__ = ["Push", "Reject", "app_from_env", "create_app", "parse_push", "sign", "verify_hmac"]
