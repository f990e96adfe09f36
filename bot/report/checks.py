"""Pass/warn/fail verdicts for CI-style consumers: b4 review checks and Patchwork.

b4 (`b4.review-perpatch-check-cmd` / `review-series-check-cmd`) pipes one message
to the command and reads a JSON array of {tool, status, summary, url, details},
status one of pass|warn|fail; it stores one result per (message, tool), so the
review of that message is one object. Patchwork takes one check per patch:
POST /api/patches/{id}/checks/ with {state, target_url, context, description},
state one of pending|success|warning|fail, context matching ^[-a-zA-Z0-9_]+$.

Verdicts: fail when an error-severity finding is introduced; warn for an
introduced warning, for a check that crashed (the review is incomplete), or for a
patch that did not apply to the tree given; pass otherwise. Info-level findings
are mentioned but do not change the verdict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.errors import UsageError
from bot.model import ApplyMethod, Finding, Review, Series, Severity, Status
from bot.report.common import (
    Dismissed,
    application_lines,
    application_of,
    by_status,
    check_failure_line,
    dismissal_of,
    location,
    one_line,
    slot_label,
)

DEFAULT_CONTEXT = "mm-lifecycle"
_CONTEXT_RE = re.compile(r"^[-a-zA-Z0-9_]+$")  # Patchwork's CheckCreate.context pattern
_TARGET_URL_MAX = 200  # Patchwork's CheckCreate.target_url maxLength
_PW_STATE = {"pass": "success", "warn": "warning", "fail": "fail"}


@dataclass(frozen=True)
class Verdict:
    """pass|warn|fail with a one-line reason and the lines behind it."""

    status: str
    summary: str
    details: tuple[str, ...]


def _finding_line(f: Finding, total: int) -> str:
    where = f"[{slot_label(f.patch_number, total)}] " if f.patch_number is not None else ""
    return f"{where}{f.rule_id} {one_line(f.symbol)} [{f.severity.value}] at {location(f)}"


def verdict(
    review: Review,
    findings: Sequence[Finding],
    numbers: Sequence[int],
    dismissed: Dismissed | None = None,
) -> Verdict:
    """The verdict over `findings` (introduced ones not dismissed count) for
    patches `numbers`."""
    total = review.series.total
    all_introduced = by_status(findings, Status.INTRODUCED)
    introduced = [f for f in all_introduced if dismissal_of(f, dismissed) is None]
    errors = [f for f in introduced if f.severity is Severity.ERROR]
    warnings = [f for f in introduced if f.severity is Severity.WARNING]
    infos = [f for f in introduced if f.severity is Severity.INFO]
    failed_checks = [c for c in review.checks if not c.ok]
    unapplied = []
    for n in numbers:
        app = application_of(review, n)
        if app is not None and not app.ok and app.method is not ApplyMethod.NO_TREE:
            unapplied.append((n, app))

    status = "fail" if errors else "warn" if (warnings or failed_checks or unapplied) else "pass"
    parts = []
    if errors:
        parts.append(f"{len(errors)} error{'s' if len(errors) != 1 else ''}")
    if warnings:
        parts.append(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
    if infos:
        parts.append(f"{len(infos)} note{'s' if len(infos) != 1 else ''}")
    if parts:
        first = errors[0] if errors else warnings[0] if warnings else infos[0]
        summary = (
            ", ".join(parts)
            + f" introduced: {first.rule_id} {one_line(first.symbol)} at {location(first)}"
        )
    else:
        summary = "no lifecycle issue introduced"
    if unapplied:
        which = ", ".join(slot_label(n, total) for n, _ in unapplied)
        summary += f"; {which} did not apply (analysed on the diff alone)"
    if failed_checks:
        summary += f"; {len(failed_checks)} check(s) failed"

    details = [_finding_line(f, total) for f in errors + warnings + infos]
    for f in all_introduced:
        if dismissal_of(f, dismissed) is not None:
            details.append("dismissed: " + _finding_line(f, total))
    for f in by_status(findings, Status.FIXED):
        details.append("fixed: " + _finding_line(f, total))
    for n, app in unapplied:
        head, *rest = application_lines(app)
        details.append(f"[{slot_label(n, total)}] {head}")
        details += [f"    {ln}" for ln in rest]
    details += [check_failure_line(c.check, c.error) for c in failed_checks]
    return Verdict(status=status, summary=summary, details=tuple(details))


def b4_results(
    review: Review,
    *,
    tool: str = DEFAULT_CONTEXT,
    url: str | None = None,
    dismissed: Dismissed | None = None,
) -> list[dict[str, str]]:
    """The array a b4 review check command prints: one result for the reviewed message."""
    numbers = [p.number for p in review.series.patches]
    v = verdict(review, review.findings, numbers, dismissed)
    result = {"tool": tool, "status": v.status, "summary": v.summary}
    if url:
        result["url"] = url
    if v.details:
        result["details"] = "\n".join(v.details)
    return [result]


def _check_target(context: str, target_url: str | None) -> None:
    if not _CONTEXT_RE.match(context) or len(context) > 255:
        raise UsageError(f"patchwork context {context!r}: use letters, digits, '-' and '_'")
    if target_url is not None and (
        not target_url.startswith(("https://", "http://"))
        or len(target_url) > _TARGET_URL_MAX
        or one_line(target_url) != target_url
        or " " in target_url
    ):
        raise UsageError(
            f"patchwork target URL {target_url!r}: need an http(s) URL of at most "
            f"{_TARGET_URL_MAX} characters"
        )


def patchwork_pending(
    series: Series, *, context: str = DEFAULT_CONTEXT, target_url: str | None = None
) -> list[dict[str, object]]:
    """`pending` checks for every patch that arrived: posted when a review is queued."""
    _check_target(context, target_url)
    return [
        {
            "state": "pending",
            "context": context,
            "description": "lifecycle review queued",
            "target_url": target_url,
            "msgid": p.message.message_id,
            "patch": p.number,
        }
        for p in series.patches
    ]


def patchwork_checks(
    review: Review,
    *,
    context: str = DEFAULT_CONTEXT,
    target_url: str | None = None,
    dismissed: Dismissed | None = None,
) -> list[dict[str, object]]:
    """One Patchwork check per patch that arrived, in series order.

    Each dict is the CheckCreate body (state, context, description, target_url)
    plus `msgid` and `patch` so the publisher can find the Patchwork patch ID
    (GET /api/patches/?msgid=...); Patchwork ignores fields it does not know.
    Series-wide findings count against the last patch that arrived. Raises
    UsageError for a context or target URL Patchwork would refuse.
    """
    _check_target(context, target_url)
    patches = review.series.patches
    if not patches:
        return []
    present = {p.number for p in patches}
    last = patches[-1].number
    out: list[dict[str, object]] = []
    for p in patches:
        mine = [
            f
            for f in review.findings
            if f.patch_number == p.number
            or (p.number == last and (f.patch_number is None or f.patch_number not in present))
        ]
        v = verdict(review, mine, [p.number], dismissed)
        out.append(
            {
                "state": _PW_STATE[v.status],
                "context": context,
                "description": v.summary,
                "target_url": target_url,
                "msgid": p.message.message_id,
                "patch": p.number,
            }
        )
    return out
