"""Renderers: a Review in, text out. Matchers find; these only word what was found.

    render(review, fmt)            one of FORMATS as a string
    render_email_messages(review)  the LKML replies, for the publisher
    render_email(review, from_addr=...)  the same as mboxrd text (`render(r, "email")`)
    patchwork_checks(review)       one Patchwork check per patch, for the publisher
    patchwork_pending(series)      `pending` checks to post when a review is queued
    b4_results(review)             the array a `b4 review` check command prints

Formats are described in docs/output-formats.md; the JSON one is versioned by
JSON_SCHEMA_VERSION and specified by docs/review.schema.json.
"""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

from bot.errors import UsageError
from bot.model import Review

if TYPE_CHECKING:
    from bot.report.checks import b4_results, patchwork_checks, patchwork_pending
    from bot.report.common import Dismissed
    from bot.report.jsonout import JSON_SCHEMA_VERSION, review_document
    from bot.report.mail import render_email, render_email_messages
    from bot.report.sarif import sarif_document

FORMATS: tuple[str, ...] = ("text", "email", "json", "sarif", "b4")

# Each renderer module is imported when first used: a `bot review` prints one
# format, and the mail and SARIF ones pull in the email package and metadata.
_LAZY = {
    "b4_results": "bot.report.checks",
    "patchwork_checks": "bot.report.checks",
    "patchwork_pending": "bot.report.checks",
    "JSON_SCHEMA_VERSION": "bot.report.jsonout",
    "review_document": "bot.report.jsonout",
    "render_email": "bot.report.mail",
    "render_email_messages": "bot.report.mail",
    "sarif_document": "bot.report.sarif",
}


def __getattr__(name: str) -> Any:
    """The public names above, imported from their module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def render(
    review: Review, fmt: str, *, color: bool = False, dismissed: Dismissed | None = None
) -> str:
    """The review in format `fmt` (one of FORMATS); `color` affects text only.

    `dismissed` (fingerprint -> bot.dismiss.Dismissal, from
    bot.dismiss.dismissed_in) marks introduced findings as dismissed: shown
    as such, never counted. Raises UsageError for an unknown format.
    """
    if fmt == "text":
        from bot.report.text import render_text

        return render_text(review, color=color, dismissed=dismissed)
    if fmt == "email":
        from bot.report.mail import render_email

        return render_email(review, dismissed=dismissed)
    if fmt == "json":
        from bot.report.jsonout import render_json

        return render_json(review, dismissed=dismissed)
    if fmt == "sarif":
        from bot.report.sarif import render_sarif

        return render_sarif(review, dismissed=dismissed)
    if fmt == "b4":
        from bot.report.checks import b4_results

        results = b4_results(review, dismissed=dismissed)
        return json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


__all__ = [
    "FORMATS",
    "JSON_SCHEMA_VERSION",
    "b4_results",
    "patchwork_checks",
    "patchwork_pending",
    "render",
    "render_email",
    "render_email_messages",
    "review_document",
    "sarif_document",
]
