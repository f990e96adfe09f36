"""The review as versioned JSON (schema: docs/review.schema.json).

Field names are a contract: adding a field is a minor change that keeps
`schema_version`; renaming or removing one bumps it.
"""

from __future__ import annotations

import json

from bot.model import Finding, PatchApplication, Review, Series, Trace
from bot.report.common import (
    TOOL_NAME,
    TOOL_VERSION,
    Dismissed,
    application_of,
    counts,
    dismissal_of,
)
from bot.report.fingerprint import fingerprint

JSON_SCHEMA_VERSION = "1"


def review_document(review: Review, dismissed: Dismissed | None = None) -> dict[str, object]:
    """The review as plain JSON-ready data (dicts, lists, str, int, bool, None)."""
    s = review.series
    c = counts(review, dismissed)
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": TOOL_VERSION},
        "series": _series(s),
        "versions": [_version(v) for v in (review.versions or (s,))],
        "tree": review.applied.tree,
        "base_commit": review.applied.base_commit,
        "patches": [
            {
                "number": p.number,
                "subject": p.message.subject,
                "title": p.title,
                "message_id": p.message.message_id,
                "author": {"name": p.author_name, "email": p.author_addr},
                "applied": _application(application_of(review, p.number)),
            }
            for p in s.patches
        ],
        "findings": [_finding(f, dismissed) for f in review.findings],
        "checks": [
            {"check": ch.check, "ok": ch.ok, "error": ch.error, "notes": list(ch.notes)}
            for ch in review.checks
        ],
        "notes": list(review.notes),
        "other_series": [
            {"key": o.key, "name": o.name, "version": o.version, "revision": o.revision}
            for o in review.other_series
        ],
        "summary": {
            "introduced": c.introduced,
            "pre_existing": c.pre_existing,
            "fixed": c.fixed,
            "fixed_in_series": c.fixed_in_series,
            "checks_failed": c.checks_failed,
            "dismissed": c.dismissed,
        },
    }


def render_json(review: Review, dismissed: Dismissed | None = None) -> str:
    return json.dumps(review_document(review, dismissed), indent=2, ensure_ascii=False) + "\n"


def _series(s: Series) -> dict[str, object]:
    return {
        "key": s.key,
        "name": s.name,
        "version": s.version,
        "revision": s.revision,
        "total": s.total,
        "rfc": s.rfc,
        "author": {"name": s.author_name, "email": s.author_addr},
        "date": s.date.isoformat() if s.date else None,
        "cover": s.cover.message_id if s.cover else None,
        "revision_of": s.revision_of,
        "slots": [
            {
                "number": slot.number,
                "message_id": slot.patch.message.message_id if slot.patch else None,
                "subject": slot.patch.message.subject if slot.patch else None,
                "missing": slot.missing,
            }
            for slot in s.slots
        ],
    }


def _version(v: Series) -> dict[str, object]:
    present = ([0] if v.cover is not None else []) + [
        slot.number for slot in v.slots if not slot.missing
    ]
    return {
        "version": v.version,
        "revision": v.revision,
        "key": v.key,
        "total": v.total,
        "present": present,
        "missing": list(v.missing),
    }


def _application(app: PatchApplication | None) -> dict[str, object] | None:
    if app is None:
        return None
    return {
        "method": app.method.value,
        "ok": app.ok,
        "message": app.message,
        "hunks": [
            {
                "file": h.file,
                "hunk": h.hunk,
                "applied": h.applied,
                "offset": h.offset,
                "fuzz": h.fuzz,
                "reason": h.reason,
            }
            for h in app.hunks
        ],
        "skipped": list(app.skipped),
    }


def _finding(f: Finding, dismissed: Dismissed | None) -> dict[str, object]:
    d = dismissal_of(f, dismissed)
    return {
        "fingerprint": fingerprint(f),
        "rule_id": f.rule_id,
        "symbol": f.symbol,
        "severity": f.severity.value,
        "confidence": f.confidence.value,
        "status": f.status.value,
        "patch": f.patch_number,
        "file": f.file,
        # a line number below 1 is a matcher's "unknown": say so plainly
        "line": f.line if f.line is not None and f.line >= 1 else None,
        "function": f.function,
        "message": f.message,
        "question": f.question,
        "evidence": list(f.evidence),
        "suggestion": f.suggestion,
        "fixed_by": f.fixed_by,
        "trace": _trace(f.trace),
        "dismissed": None
        if d is None
        else {
            "id": d.id,
            "target": d.target,
            "everywhere": d.everywhere,
            "reason": d.reason,
            "by": d.by,
            "at": d.at,
        },
    }


def _trace(t: Trace | None) -> dict[str, object] | None:
    if t is None:
        return None
    return {
        "actors": list(t.actors),
        "roles": dict(t.actor_roles),
        "summary": t.summary,
        "steps": [
            {
                "actor": st.actor,
                "function": st.function,
                "file": st.file,
                "line": st.line,
                "text": st.text,
            }
            for st in t.steps
        ],
    }
