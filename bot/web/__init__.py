"""The results page's presentation: Jinja2 templates (autoescaped), and the small
pieces the templates need (lore links, status names, signed sessions).

The routes that read the service's state live in workers/web.py; this package knows
nothing of Redis. Templates and the stylesheet are package data (bot/web/templates,
bot/web/static), so a plain `pip install .` ships them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

LORE = "https://lore.kernel.org/all/"
SESSION_COOKIE = "mmlc_web"
SESSION_SECONDS = 12 * 3600


def lore_url(message_id: str) -> str:
    """The lore.kernel.org address of a message: https://lore.kernel.org/all/<msgid>/."""
    mid = message_id.strip().strip("<>")
    return f"{LORE}{quote(mid, safe='@!$&()*+,;=:~._-')}/" if mid else ""


def series_url(scope: str, key: str, anchor: str = "") -> str:
    return "/series?" + urlencode({"list": scope, "key": key}) + (f"#{anchor}" if anchor else "")


def when(value: object) -> str:
    """An epoch-seconds value or an ISO date as `2024-03-04 10:00Z`; '' when neither."""
    if value in (None, ""):
        return ""
    try:
        stamp = datetime.fromtimestamp(float(str(value)), UTC)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)[:40]
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def status_of(info: dict[str, str]) -> str:
    """What the page calls a series' state: waiting, partial, reviewed, failed, or
    superseded/merged (a version that was never reviewed on its own)."""
    state = info.get("state", "")
    if state in {"incomplete", "complete", ""}:
        return "waiting"
    if state == "reviewed":
        return "partial" if info.get("partial") == "1" else "reviewed"
    return state


@cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("bot.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(lore_url=lore_url, series_url=series_url)
    env.filters["when"] = when
    return env


def render(name: str, **context: object) -> str:
    return templates().get_template(name).render(**context)


def stylesheet() -> bytes:
    return resources.files("bot.web").joinpath("static/style.css").read_bytes()


# --------------------------------------------------------------------------- sessions


def _key(token: str) -> bytes:
    return hmac.new(token.encode(), b"mmlc-web-session", hashlib.sha256).digest()


def _mac(token: str, text: str) -> str:
    return hmac.new(_key(token), text.encode(), hashlib.sha256).hexdigest()


def make_session(token: str, name: str, now: float | None = None) -> str:
    """A session cookie value: who, until when, and a MAC under the web token."""
    expiry = int((now or time.time()) + SESSION_SECONDS)
    who = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    body = f"{who}.{expiry}"
    return f"{body}.{_mac(token, body)}"


def session_name(token: str, value: str | None, now: float | None = None) -> str | None:
    """The name a valid, unexpired session cookie carries; None otherwise."""
    if not token or not value or value.count(".") != 2:
        return None
    who, expiry, mac = value.split(".")
    if not hmac.compare_digest(_mac(token, f"{who}.{expiry}"), mac):
        return None
    if not expiry.isdigit() or int(expiry) < (now or time.time()):
        return None
    try:
        return base64.urlsafe_b64decode(who + "=" * (-len(who) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def csrf_token(token: str, session: str) -> str:
    """The form token bound to one session (a form from another site cannot know it)."""
    return _mac(token, f"csrf|{session}")[:40]


def csrf_ok(token: str, session: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(token, session), given)


__all__ = [
    "LORE",
    "SESSION_COOKIE",
    "csrf_ok",
    "csrf_token",
    "lore_url",
    "make_session",
    "render",
    "series_url",
    "session_name",
    "status_of",
    "stylesheet",
    "templates",
    "when",
]
