"""The webhook's OpenAPI 3.1 schema, served at /openapi.json and published as docs/openapi.json.

`python -m workers.openapi > docs/openapi.json` regenerates the file; a test checks the
two agree.
"""

from __future__ import annotations

import json
from typing import Any

_ERROR = {
    "description": "refused",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_ACCEPTED = {
    "description": "accepted: the review of the pushed range is queued (or already was)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "status": {"enum": ["queued", "duplicate", "ignored"]},
                    "scope": {"type": "string"},
                    "key": {"type": "string", "description": "before..after"},
                },
            }
        }
    },
}
_SHA = {"type": "string", "pattern": "^[0-9a-f]{40}([0-9a-f]{24})?$"}


def _hook(summary: str, sig: dict[str, Any], delivery: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": (
                "Verified before parsing: body size, then signature, then delivery ID "
                "(a replayed ID is refused). The repository must be on the allow-list; "
                "it is fetched from the configured URL, never from the payload."
            ),
            "parameters": [
                sig,
                {
                    "name": delivery,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "maxLength": 200},
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {"description": "ping answered"},
                "202": _ACCEPTED,
                "400": _ERROR | {"description": "not JSON, missing delivery ID, bad commit ids"},
                "401": _ERROR | {"description": "unsigned, bad signature or bad token"},
                "404": _ERROR | {"description": "repository not on the allow-list"},
                "409": _ERROR | {"description": "delivery ID already received (replay)"},
                "413": _ERROR | {"description": "body over the configured limit (default 1 MB)"},
                "503": _ERROR
                | {"description": "no secret configured, or the queue is unreachable"},
            },
        }
    }


def _sig(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "description": what,
        "schema": {"type": "string"},
    }


def openapi_schema() -> dict[str, Any]:
    hmac_doc = "sha256=<hex HMAC-SHA256 of the raw body with BOT_WEBHOOK_SECRET>"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mm lifecycle review bot: push webhook",
            "version": "1",
            "description": "Signed push events queue a review of the pushed commit range.",
        },
        "paths": {
            "/hooks/github": _hook(
                "GitHub push event",
                _sig("X-Hub-Signature-256", hmac_doc),
                "X-GitHub-Delivery",
                {
                    "type": "object",
                    "required": ["before", "after", "repository"],
                    "properties": {
                        "ref": {"type": "string"},
                        "before": _SHA,
                        "after": _SHA,
                        "repository": {
                            "type": "object",
                            "required": ["full_name"],
                            "properties": {"full_name": {"type": "string"}},
                        },
                    },
                },
            ),
            "/hooks/gitlab": _hook(
                "GitLab push hook",
                _sig("X-Gitlab-Token", "the secret token configured in GitLab (BOT_GITLAB_TOKEN)"),
                "X-Gitlab-Event-UUID",
                {
                    "type": "object",
                    "required": ["before", "after", "project"],
                    "properties": {
                        "ref": {"type": "string"},
                        "before": _SHA,
                        "after": _SHA,
                        "project": {
                            "type": "object",
                            "required": ["path_with_namespace"],
                            "properties": {"path_with_namespace": {"type": "string"}},
                        },
                    },
                },
            ),
            "/hooks/generic": _hook(
                "Generic push (e.g. from a post-receive hook)",
                _sig("X-Bot-Signature-256", hmac_doc),
                "X-Bot-Delivery",
                {
                    "type": "object",
                    "required": ["repository", "before", "after"],
                    "properties": {
                        "repository": {"type": "string", "description": "allow-list name"},
                        "ref": {"type": "string"},
                        "before": _SHA,
                        "after": _SHA,
                    },
                },
            ),
            "/healthz": {
                "get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/results": {
                "get": {
                    "summary": "a stored review",
                    "description": "scope: a list name or push:<repo>; "
                    "key: a series key or before..after",
                    "parameters": [
                        {
                            "name": "scope",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "key",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {"200": {"description": "the review"}, "404": _ERROR},
                }
            },
            "/openapi.json": {
                "get": {"summary": "this schema", "responses": {"200": {"description": "OpenAPI"}}}
            },
        },
    }


def main() -> None:
    print(json.dumps(openapi_schema(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()


__all__ = ["openapi_schema"]
