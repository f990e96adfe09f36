"""The results page: read-only HTML over the service's state, plus one write action.

    GET  /                       series by list and date, and per-rule precision
    GET  /series?list=L&key=K    one series: status, base tree, how each patch applied,
                                 findings (question, evidence, trace), versions,
                                 dismissals with who and when
    GET  /rules                  per rule: findings raised, dismissed, confirmed
    GET  /login  POST /login     a session for dismissing (only when enabled)
    POST /logout
    POST /dismiss                dismiss one finding of a series (session + CSRF token)
    POST /undismiss              undo a dismissal the series' page shows (the same checks)

Server-rendered with Jinja2 (bot/web), autoescaped throughout: patch text and mail
are hostile. Dismissing is off unless the service config says `web: {dismiss: true}`
and BOT_WEB_TOKEN is set; a POST must carry the session cookie a correct token
gave (HttpOnly, SameSite=Strict) and the form token bound to that session.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bot import web
from bot.dismiss import Dismissal
from workers.config import ServiceConfig
from workers.dismissals import (
    identity_of_result,
    later_versions,
    live_dismissals,
    precision,
    store_for,
)
from workers.logs import log
from workers.state import State

PAGE_SIZE = 50
FORM_LIMIT = 16 * 1024
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def scopes(cfg: ServiceConfig) -> list[str]:
    return [lst.name for lst in cfg.lists] + [f"push:{r.name}" for r in cfg.repos]


def findings_of(result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not result:
        return []
    found = (result.get("review") or {}).get("findings") or ()
    return [f for f in found if isinstance(f, dict) and f.get("status") == "introduced"]


def series_rows(
    state: State, scope: str, page: int, dismissals: list[Dismissal]
) -> tuple[list[dict[str, Any]], bool]:
    """One page of a list's series, newest first, and whether there are more."""
    start = page * PAGE_SIZE
    raw = cast(
        list[tuple[bytes, float]],
        state.r.zrevrange(
            state.k("series-index", scope), start, start + PAGE_SIZE, withscores=True
        ),
    )
    more = len(raw) > PAGE_SIZE
    keys = [k.decode() for k, _ in raw[:PAGE_SIZE]]
    rows = []
    for key, (_k, first_seen) in zip(keys, raw, strict=False):
        info = state.series(scope, key)
        result = state.result(scope, key)
        found = findings_of(result)
        gone = live_dismissals(state, result, dismissals) if result and found else {}
        series = ((result or {}).get("review") or {}).get("series") or {}
        rows.append(
            {
                "key": key,
                "name": info.get("name") or series.get("name") or key,
                "version": info.get("version") or series.get("version") or "",
                "author": info.get("author") or (series.get("author") or {}).get("email", ""),
                "status": web.status_of(info),
                "date": series.get("date") or first_seen,
                "findings": len(found),
                "dismissed": sum(1 for f in found if f.get("fingerprint") in gone),
            }
        )
    return rows, more


def series_view(state: State, scope: str, key: str) -> dict[str, Any] | None:
    """Everything the series page shows; None when the service knows no such series."""
    info = state.series(scope, key)
    result = state.result(scope, key)
    if not info and result is None:
        return None
    doc = (result or {}).get("review") or {}
    series = doc.get("series") or {}
    patches = [p for p in doc.get("patches") or () if isinstance(p, dict)]
    by_number = {p.get("number"): p for p in patches}
    dismissals = store_for(state).dismissals()
    gone = live_dismissals(state, result, dismissals) if result else {}
    findings = []
    for f in doc.get("findings") or ():
        if not isinstance(f, dict):
            continue
        patch = by_number.get(f.get("patch")) or {}
        findings.append(
            f
            | {
                "live_dismissal": gone.get(str(f.get("fingerprint") or "")),
                "msgid": patch.get("message_id"),
            }
        )
    identity = identity_of_result(state, result) if result else None
    related = [
        d
        for d in dismissals
        if identity is not None
        and (
            (not d.everywhere and d.series.same_work(identity))
            or any(
                d.applies(str(f.get("rule_id")), str(f.get("fingerprint")), identity)
                for f in findings
            )
        )
    ]
    versions = []
    for v in doc.get("versions") or ():
        if isinstance(v, dict) and v.get("key") and v.get("key") != key:
            versions.append(
                {
                    "key": v["key"],
                    "revision": v.get("revision"),
                    "known": bool(state.series(scope, str(v["key"]))),
                }
            )
    later: list[dict[str, Any]] = []
    for k in [*later_versions(state, scope, key), info.get("superseded_by", "")]:
        if k and k not in {v["key"] for v in later}:
            nxt = state.series(scope, k)
            later.append({"key": k, "revision": nxt.get("revision") or nxt.get("version")})
    return {
        "scope": scope,
        "key": key,
        "info": info,
        "status": web.status_of(info),
        "result": result,
        "series": series,
        "patches": patches,
        "findings": findings,
        "introduced": [f for f in findings if f.get("status") == "introduced"],
        "others": [f for f in findings if f.get("status") != "introduced"],
        "dismissals": related,
        "earlier": versions,
        "later": later,
        "cover": series.get("cover") or (key if "@" in key else ""),
    }


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form of at most FORM_LIMIT bytes, one value per field."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise Refused(415, "a form is expected")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise Refused(413, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, "unreadable form") from exc
    return {k: v[0] for k, v in fields.items() if v}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def web_routes(cfg: ServiceConfig, state: State) -> list[Route]:
    """The results page's routes, for the webhook app (workers.webhook.create_app)."""
    token = cfg.web_token if cfg.web_dismissals else ""

    def page(name: str, request: Request, code: int = 200, **context: Any) -> HTMLResponse:
        session = request.cookies.get(web.SESSION_COOKIE, "")
        who = web.session_name(token, session)
        html = web.render(
            name,
            web_dismissals=cfg.web_dismissals,
            user=who,
            csrf=web.csrf_token(token, session) if who else "",
            path=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **context,
        )
        return HTMLResponse(html, status_code=code, headers=_HEADERS)

    def refused(request: Request, exc: Refused) -> HTMLResponse:
        return page("error.html", request, exc.status, reason=exc.reason)

    async def index(request: Request) -> Response:
        wanted = request.query_params.get("list")
        try:
            page_no = max(0, int(request.query_params.get("page", "0")))
        except ValueError:
            page_no = 0
        dismissals = store_for(state).dismissals()
        lists = []
        for scope in scopes(cfg):
            if wanted and scope != wanted:
                continue
            rows, more = series_rows(state, scope, page_no, dismissals)
            lists.append({"scope": scope, "rows": rows, "more": more})
        return page("index.html", request, lists=lists, page=page_no, rules=precision(state))

    async def series(request: Request) -> Response:
        scope = request.query_params.get("list", "")
        key = request.query_params.get("key", "")
        view = series_view(state, scope, key) if scope and key else None
        if view is None:
            return refused(request, Refused(404, "no such series"))
        return page("series.html", request, **view)

    async def rules(request: Request) -> Response:
        return page("rules.html", request, rules=precision(state))

    async def login(request: Request) -> Response:
        if not cfg.web_dismissals:
            return refused(request, Refused(403, "dismissing from the web is not enabled"))
        nxt = request.query_params.get("next", "/")
        if request.method == "GET":
            return page("login.html", request, next=nxt)
        try:
            form = await read_form(request)
        except Refused as exc:
            return refused(request, exc)
        nxt = form.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
            nxt = "/"
        given = form.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return page("login.html", request, 403, next=nxt, error="wrong token")
        name = " ".join(form.get("name", "").split())[:80] or "web"
        resp = RedirectResponse(nxt, status_code=303, headers=_HEADERS)
        resp.set_cookie(
            web.SESSION_COOKIE,
            web.make_session(token, name),
            max_age=web.SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return resp

    async def logout(_request: Request) -> Response:
        resp = RedirectResponse("/", status_code=303, headers=_HEADERS)
        resp.delete_cookie(web.SESSION_COOKIE)
        return resp

    async def authorised(request: Request) -> tuple[str, dict[str, str]]:
        """Who posts, and the form: only with web dismissals enabled, a session a
        correct token gave, the same origin and the form token bound to the session."""
        if not cfg.web_dismissals:
            raise Refused(403, "dismissing from the web is not enabled")
        session = request.cookies.get(web.SESSION_COOKIE, "")
        who = web.session_name(token, session)
        if who is None:
            raise Refused(403, "log in first")
        if not _same_origin(request):
            raise Refused(403, "cross-origin form")
        form = await read_form(request)
        if not web.csrf_ok(token, session, form.get("csrf", "")):
            raise Refused(403, "stale or missing form token: reload the page")
        return who, form

    async def dismiss(request: Request) -> Response:
        try:
            who, form = await authorised(request)
            scope, key, fp = form.get("list", ""), form.get("key", ""), form.get("fingerprint", "")
            result = state.result(scope, key)
            if result is None:
                raise Refused(404, "no review stored for that series")
            if fp not in {str(f.get("fingerprint")) for f in findings_of(result)}:
                raise Refused(404, "the review has no such finding")
            reason = form.get("reason", "").strip() or "not a bug (results page)"
            store_for(state).add(
                fp,
                identity_of_result(state, result),
                reason=reason,
                by=f"{who} (results page)",
                everywhere=False,
            )
        except Refused as exc:
            return refused(request, exc)
        return RedirectResponse(web.series_url(scope, key, f"f-{fp}"), 303, headers=_HEADERS)

    async def undismiss(request: Request) -> Response:
        """Undo one of the dismissals the series' page shows: the finding counts again."""
        try:
            who, form = await authorised(request)
            scope, key = form.get("list", ""), form.get("key", "")
            try:
                wanted = int(form.get("id", ""))
            except ValueError as exc:
                raise Refused(400, "no dismissal named") from exc
            view = series_view(state, scope, key) if scope and key else None
            if view is None:
                raise Refused(404, "no such series")
            if wanted not in {d.id for d in view["dismissals"]}:
                raise Refused(404, "no such dismissal on this series (already undone?)")
            gone = store_for(state).undo(wanted)
            if gone is None:
                raise Refused(404, "no such dismissal (already undone?)")
            log.info(
                "dismissal undone on the results page",
                extra={"dismissal": gone.id, "target": gone.target, "series": key, "by": who},
            )
        except Refused as exc:
            return refused(request, exc)
        return RedirectResponse(web.series_url(scope, key, "findings"), 303, headers=_HEADERS)

    async def style(_request: Request) -> Response:
        return Response(web.stylesheet(), media_type="text/css", headers=_HEADERS)

    return [
        Route("/", index, methods=["GET"]),
        Route("/series", series, methods=["GET"]),
        Route("/rules", rules, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/dismiss", dismiss, methods=["POST"]),
        Route("/undismiss", undismiss, methods=["POST"]),
        Route("/static/style.css", style, methods=["GET"]),
    ]


__all__ = ["PAGE_SIZE", "scopes", "series_rows", "series_view", "web_routes"]
