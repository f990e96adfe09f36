"""The service's use of the pipeline: assemble stored threads, review, build the outbox.

Nothing here talks to Celery; `workers.tasks` calls these with a State. Reviews go
through the same `bot.pipeline.review_series` / `review_inputs` the CLI uses.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.config import Settings
from bot.errors import InputError
from bot.model import RawMessage, Review, Series, SeriesSet
from bot.publish.compare import compare_reviews
from bot.publish.email import reply_recipients, stable_message_id, thread_reply
from bot.publish.outbox import email_part, maildir_part, patchwork_part
from bot.report.common import Dismissed
from workers.config import ListConfig, RepoConfig, ServiceConfig
from workers.dismissals import link_versions
from workers.logs import log
from workers.state import SeriesState, State


@dataclass(frozen=True)
class Assembled:
    series_set: SeriesSet
    roots: tuple[str, ...]
    skipped: tuple[str, ...]  # Message-IDs that could not be parsed


def parse_stored(
    scope: str, items: Sequence[tuple[str, bytes]]
) -> tuple[list[RawMessage], list[str]]:
    """Parse stored raw messages; a message that is not mail is skipped and named."""
    from bot.ingest import parse_message

    out: list[RawMessage] = []
    skipped: list[str] = []
    for i, (mid, raw) in enumerate(items):
        try:
            out.append(parse_message(raw, f"{scope}:{mid}", i))
        except InputError as exc:
            log.warning(
                "message skipped", extra={"scope": scope, "msgid": mid, "error": exc.one_line()}
            )
            skipped.append(mid)
    return out, skipped


def assemble_roots(state: State, scope: str, roots: Sequence[str], settings: Settings) -> Assembled:
    """Assemble every message of these threads (and of threads they are versions of)."""
    from bot.assemble import assemble

    all_roots: dict[str, None] = {}
    window = settings.stitch_window_minutes * 60.0
    for root in roots:
        for r in state.related_roots(scope, root, window=window):
            all_roots.setdefault(r, None)
    ids = state.threads_ids(scope, all_roots)
    messages, skipped = parse_stored(scope, state.messages(scope, ids))
    messages.sort(key=lambda m: (m.date.timestamp() if m.date else 0.0, m.message_id))
    # index = date order, so assembly sees the thread as it was posted, not as it arrived
    messages = [replace(m, index=i) for i, m in enumerate(messages)]
    return Assembled(assemble(messages, settings), tuple(all_roots), tuple(skipped))


def series_fields(s: Series, roots: Sequence[str]) -> dict[str, str | int | float]:
    return {
        "state": SeriesState.COMPLETE if s.complete else SeriesState.INCOMPLETE,
        "version": s.version,
        "revision": s.revision,
        "total": s.total,
        "missing": ",".join(str(n) for n in s.missing),
        "name": s.name[:300],
        "author": s.author_addr,
        "roots": json.dumps(list(roots)),
        "revision_of": s.revision_of or "",
    }


def route_threads(
    state: State, scope: str, roots: Sequence[str], settings: Settings
) -> dict[str, str]:
    """Assemble the threads and record every series found; returns each series key with
    its state, where "complete" means: ready for review and not superseded.

    A series a later version in the same threads revises is marked superseded (unless
    already reviewed); keys the threads no longer assemble to are retired as merged.
    """
    got = assemble_roots(state, scope, roots, settings)
    link_versions(state, scope, got.series_set.series)
    superseded = superseded_keys(got.series_set)
    states: dict[str, str] = {}
    for s in got.series_set.series:
        _new, states[s.key] = state.update_series(scope, s.key, series_fields(s, got.roots))
        if s.key in superseded:
            later = next(x.key for x in got.series_set.series if x.revision_of == s.key)
            if state.mark_superseded(scope, s.key, later):
                states[s.key] = SeriesState.SUPERSEDED
    by_root: dict[str, set[str]] = {r: set() for r in got.roots}
    for s in got.series_set.series:
        for root in series_roots(s):
            by_root.setdefault(root, set()).add(s.key)
    for stale in state.stale_keys(scope, by_root):
        state.mark_merged(scope, stale)
    outcome: dict[str, str] = {}
    for s in got.series_set.series:
        current = states[s.key]
        if current == SeriesState.COMPLETE and s.key in superseded:
            current = SeriesState.SUPERSEDED
        outcome[s.key] = current
    return outcome


def thread_root(m: RawMessage) -> str:
    """The thread a message was stored under (the same rule as routing_keys)."""
    if m.references:
        return m.references[0]
    return m.in_reply_to or m.message_id


def series_roots(s: Series) -> set[str]:
    """The thread roots holding the cover and patches of a series."""
    msgs = [p.message for p in s.patches] + ([s.cover] if s.cover else [])
    return {thread_root(m) for m in msgs}


def superseded_keys(series_set: SeriesSet) -> set[str]:
    """Keys of series that a later version in the same set revises."""
    return {s.revision_of for s in series_set.series if s.revision_of}


def pick(
    series_set: SeriesSet, key: str
) -> tuple[Series, tuple[Series, ...], tuple[Series, ...]] | None:
    """(the series with this key, its versions oldest first, the unrelated series).

    Not `assemble.select`: that picks the newest version of a chain, and the service
    reviews each version under its own key.
    """
    series = next((s for s in series_set.series if s.key == key), None)
    if series is None:
        return None
    versions = series_set.versions_of(key)
    linked = {v.key for v in versions}
    others = tuple(s for s in series_set.series if s.key not in linked)
    return series, versions, others


def build_result(
    state: State,
    scope: str,
    review: Review,
    *,
    partial: bool,
    dismissed: Dismissed | None = None,
) -> dict[str, Any]:
    """The stored form of a review: JSON document, text, and the comparison with the
    previous version's stored review when there is one. Findings `dismissed` covers
    (dismissed on an earlier version, say) are marked so and not counted."""
    from bot.report import render

    doc = json.loads(render(review, "json", dismissed=dismissed))
    result: dict[str, Any] = {
        "scope": scope,
        "key": review.series.key,
        "version": review.series.version,
        "revision": review.series.revision,
        "partial": partial,
        "missing": list(review.series.missing),
        "review": doc,
        "text": render(review, "text", dismissed=dismissed),
        "comparison": None,
        "previous": None,
    }
    earlier = [v for v in review.versions if v.version < review.series.version]
    for prev in reversed(earlier):
        old = state.result(scope, prev.key)
        if old is None:
            continue
        cmp = compare_reviews(old.get("review") or {}, review)
        if not cmp.old_version:
            cmp = type(cmp)(
                str(prev.revision), cmp.new_version, cmp.resolved, cmp.still_present, cmp.new
            )
        result["comparison"] = cmp.as_dict()
        result["comparison_text"] = cmp.summary()
        result["previous"] = prev.key
        break
    return result


def supersede_partial(
    result: dict[str, Any],
    partial: dict[str, Any],
    review: Review,
    *,
    reviewed_at: str | None = None,
) -> None:
    """Mark `result` (a complete series' review) as superseding the stored partial review:
    say so, name what was missing then, and sort the partial review's findings into
    resolved, still present and new (`bot.publish.compare`)."""
    cmp = compare_reviews(partial.get("review") or {}, review)
    missing = [int(n) for n in partial.get("missing") or ()]
    total = review.series.total
    named = ", ".join(f"{n}/{total}" for n in missing) or "some patches"
    verb = "was" if len(missing) == 1 else "were"
    note = textwrap.fill(
        f"This review of the complete series supersedes the partial review sent "
        f"while patch {named} {verb} missing.",
        width=72,
    )
    heading = "Compared with the partial review:"
    result["supersedes"] = {
        "partial": True,
        "missing": missing,
        "reviewed_at": float(reviewed_at) if reviewed_at else None,
        "comparison": cmp.as_dict(),
    }
    result["supersedes_text"] = f"{note}\n{cmp.summary(heading=heading)}"
    result["text"] = f"{result['supersedes_text']}\n\n{result['text']}"


def build_outbox(
    review: Review,
    result: dict[str, Any],
    lst: ListConfig,
    cfg: ServiceConfig,
    dismissed: Dismissed | None = None,
) -> dict[str, Any]:
    """Every delivery a review may lead to; the publisher applies the policy when sending."""
    from bot.report.checks import patchwork_checks
    from bot.report.mail import render_email_messages

    series = review.series
    by_id = {p.message.message_id: p.message for p in series.patches}
    if series.cover is not None:
        by_id[series.cover.message_id] = series.cover
    fallback = series.cover or (series.patches[0].message if series.patches else None)
    parts: list[dict[str, Any]] = []
    comparison = result.get("comparison_text")
    supersedes = result.get("supersedes_text")
    summary = (result.get("review") or {}).get("summary") or {}
    # a series with no finding gets no mail unless the list opts in; a review that
    # supersedes a partial one (which was mailed) is always sent
    replies = (
        render_email_messages(review, from_addr=cfg.from_addr, dismissed=dismissed)
        if summary.get("introduced") or lst.mail_clean or supersedes
        else []
    )
    for i, msg in enumerate(replies):
        irt = str(msg.get("In-Reply-To", "")).strip().strip("<>")
        parent = by_id.get(irt) or fallback
        if parent is None:
            continue
        if (comparison or supersedes) and i == 0:
            body = msg.get_content().rstrip()
            if supersedes:
                body = f"{supersedes}\n\n{body}"
            if comparison:
                body = f"{body}\n\n{comparison}"
            msg.set_content(body + "\n", charset="utf-8")
        rcpt = reply_recipients(
            parent,
            list_address=lst.address,
            cc_list=lst.cc_list,
            extra_cc=lst.cc,
            cc_thread=lst.cc_thread,
            own=(cfg.from_addr,),
        )
        # The renderer derives a reply's Message-ID from its text, and the complete
        # review may repeat a reply of the partial one word for word: archives would
        # drop it as a duplicate, so the superseding round gets Message-IDs of its own.
        own_id = None
        if supersedes:
            first_id = str(msg["Message-ID"]).strip().strip("<>")
            domain = first_id.rpartition("@")[2] or "mmlc-bot"
            own_id = stable_message_id(first_id, "supersedes-partial", domain=domain)
        thread_reply(msg, parent, from_addr=cfg.from_addr, recipients=rcpt, message_id=own_id)
        raw = msg.as_bytes()
        parts.append(email_part(raw))
        parts.append(maildir_part(raw))
    if cfg.patchwork is not None:
        url = f"{cfg.review_url.rstrip('/')}/{series.key}" if cfg.review_url else None
        for check in patchwork_checks(review, context=cfg.patchwork.context, target_url=url):
            parts.append(patchwork_part(str(check["msgid"]), check))
    return {"scope": result["scope"], "key": series.key, "parts": parts}


def build_push_outbox(
    result: dict[str, Any], repo: RepoConfig | None, cfg: ServiceConfig
) -> dict[str, Any]:
    """The deliveries of a push review: a maildir copy, and an email to the repository's
    configured addresses (the publisher skips it unless the repository opted in)."""
    from email.message import EmailMessage
    from email.utils import formatdate

    scope, key = str(result["scope"]), str(result["key"])
    before, _sep, after = key.partition("..")
    ref = str(result.get("ref") or "")
    name = scope.removeprefix("push:")
    findings = [
        f
        for f in (result.get("review") or {}).get("findings") or ()
        if isinstance(f, dict) and f.get("status", "introduced") == "introduced"
    ]
    msg = EmailMessage()
    msg["From"] = cfg.from_addr
    if repo is not None and repo.email_to:
        msg["To"] = ", ".join(repo.email_to)
    branch = ref.removeprefix("refs/heads/")
    where = f" {branch}" if branch else ""
    msg["Subject"] = (
        f"[review] {name}{where} {before[:12]}..{after[:12]}: "
        f"{len(findings)} finding{'s' if len(findings) != 1 else ''}"
    )
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    # one Message-ID per pushed range: a resend is recognisably the same mail
    msg["Message-ID"] = f"<{stable_message_id(scope, key)}>"
    msg.set_content(str(result.get("text") or ""), charset="utf-8")
    raw = msg.as_bytes()
    return {"scope": scope, "key": key, "parts": [maildir_part(raw), email_part(raw)]}


__all__ = [
    "Assembled",
    "assemble_roots",
    "build_outbox",
    "build_push_outbox",
    "build_result",
    "parse_stored",
    "pick",
    "route_threads",
    "series_fields",
    "supersede_partial",
    "superseded_keys",
]
