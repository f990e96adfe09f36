"""Patchwork checks: POST one check per patch to a Patchwork instance's REST API.

Per Patchwork's API documentation a check is created with
`POST /api/patches/{patch_id}/checks/` carrying `state` (pending, success, warning,
fail), `target_url`, `context` and `description`, authenticated by
`Authorization: Token <token>`. The patch id is found from the Message-ID with
`GET /api/patches/?project=<project>&msgid=<msgid>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from bot.errors import FetchError, InputError

CHECK_STATES = ("pending", "success", "warning", "fail")


def check_body(check: Mapping[str, Any]) -> dict[str, str]:
    """The four fields Patchwork accepts, validated; anything else is dropped."""
    state = str(check.get("state", ""))
    if state not in CHECK_STATES:
        raise InputError(f"patchwork check state {state!r} is not one of {', '.join(CHECK_STATES)}")
    return {
        "state": state,
        "target_url": str(check.get("target_url", "") or ""),
        "context": str(check.get("context", "") or "mm-lifecycle"),
        "description": str(check.get("description", "") or "")[:255],
    }


class PatchworkClient:
    """A small client for the two Patchwork endpoints the bot needs."""

    def __init__(self, base_url: str, token: str, project: str = "", timeout: float = 20.0) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise InputError(f"patchwork URL must be http(s): {base_url!r}")
        self.base = base_url.rstrip("/")
        self.project = project
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers["Accept"] = "application/json"

    def _request(self, method: str, url: str, **kw: Any) -> Any:
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise FetchError(f"patchwork {method} {url}: {exc}") from exc
        if resp.status_code >= 500:
            raise FetchError(f"patchwork {method} {url}: HTTP {resp.status_code}")
        if resp.status_code >= 400:
            # 4xx will not get better by retrying: bad token, unknown patch, bad field
            raise InputError(f"patchwork {method} {url}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp.json() if resp.content else None

    def patch_id(self, msgid: str) -> int:
        params = {"msgid": msgid}
        if self.project:
            params["project"] = self.project
        found = self._request("GET", f"{self.base}/api/patches/", params=params)
        if not isinstance(found, list) or not found:
            raise FetchError(f"patchwork has no patch with Message-ID <{msgid}> (yet)")
        return int(found[0]["id"])

    def post_check(self, msgid: str, check: Mapping[str, Any]) -> dict[str, Any]:
        """Create one check on the patch with this Message-ID; returns Patchwork's answer."""
        body = check_body(check)
        pid = self.patch_id(msgid)
        out = self._request("POST", f"{self.base}/api/patches/{pid}/checks/", json=body)
        return dict(out or {})


__all__ = ["CHECK_STATES", "PatchworkClient", "check_body"]
