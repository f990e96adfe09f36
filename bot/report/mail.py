"""The review as LKML replies: plain text, threaded, trimmed quotes, questions.

One short reply per patch that introduces something: the hunk it is about
quoted with `> `, the finding under it asked as a question, the simulator's
trace under the question (simulator findings only, capped), a few lines of
evidence, the rule and the fingerprint to dismiss it by (mailparts.py).
Findings about the series as a whole go to the cover letter. When nothing is
introduced, one short reply to the cover letter says so (and what the series
fixed). Every line fits 78 columns but a Message-ID too long to split; no path
of the bot's machine appears; the transfer encoding is always 8bit. The
publisher decides whether any of it is actually sent; this module only writes
the messages.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Any

from bot.errors import UsageError
from bot.model import FileDiff, Finding, Patch, RawMessage, Review, Status
from bot.report.common import (
    MAIL_WIDTH,
    TOOL_NAME,
    TOOL_VERSION,
    Dismissed,
    application_of,
    by_status,
    check_failure_line,
    dismissal_of,
    dismissed_introduced,
    first_sentence,
    images_of,
    introduced,
    location,
    one_line,
    patch_of,
    slot_label,
    version_label,
    wrap,
)
from bot.report.fingerprint import fingerprint, short
from bot.report.mailparts import (
    finding_lines,
    fit_quote,
    partial_lines,
    reproduce_lines,
    scrub,
)
from bot.report.quote import Anchor, group_anchors, locate, parse_diff, quote_hunk

DEFAULT_FROM = f"{TOOL_NAME} <bot@localhost>"

_ID_HEADERS = frozenset({"message-id", "in-reply-to", "references"})


class _MailPolicy(EmailPolicy):
    """Folds headers at 78 columns, but never RFC 2047-encodes a Message-ID.

    The stock policy encodes any token longer than a line, and kernel
    Message-IDs often are (`<40 hex>.<stamp>.git.<addr>`): an encoded
    In-Reply-To would silently break threading. IDs fold only between IDs.
    """

    def fold(self, name: str, value: Any) -> str:
        if name.lower() not in _ID_HEADERS:
            return str(super().fold(name, value))
        width = self.max_line_length or MAIL_WIDTH
        lines = [f"{name}:"]
        for ident in str(value).split():
            if len(lines[-1]) + 1 + len(ident) > width and lines[-1] != f"{name}:":
                lines.append("")
            lines[-1] += f" {ident}"
        return self.linesep.join(lines) + self.linesep

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() not in _ID_HEADERS:
            return bytes(super().fold_binary(name, value))
        return self.fold(name, value).encode("ascii")


# utf8=False so non-ASCII names are RFC 2047-encoded and the message goes
# through any 7-bit-clean relay.
_POLICY = _MailPolicy(max_line_length=MAIL_WIDTH)
# RFC 5322 forbids lines over 998 octets; a patch line that long forces QP.
_MAX_RAW_LINE = 998
# A real Message-ID: printable ASCII without space, < or >, with an @ (RFC 5322
# msg-id). Ingest synthesises "<source>#n" IDs for mail without one; replying
# "In-Reply-To" those would thread under nothing anyone has.
_MSGID_OK = re.compile(r"^[!-;=?-~]+@[!-;=?-~]+$")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Reply:
    """What one reply is about: the message it answers and what to say there."""

    def __init__(self, parent: RawMessage, patch: Patch | None) -> None:
        self.parent = parent
        self.patch = patch
        self.findings: list[Finding] = []  # introduced, asked about
        self.fixed: list[Finding] = []  # fixed by this patch: a positive note


def render_email_messages(
    review: Review, *, from_addr: str = DEFAULT_FROM, dismissed: Dismissed | None = None
) -> list[EmailMessage]:
    """One reply per patch that introduces a finding, or one summary to the cover.

    Series-wide findings (no patch number, or a MISSING patch's) go to the cover
    letter, or to the first patch when there is none. Findings `dismissed`
    covers are not asked about again. Raises UsageError when `from_addr` is not
    an address.
    """
    sender = _address(from_addr)
    if sender is None:
        raise UsageError(f"reply sender {from_addr!r} is not an email address")
    series = review.series
    first = series.patches[0].message if series.patches else None
    series_parent = series.cover or first
    replies: dict[str, _Reply] = {}

    def reply_for(number: int | None) -> _Reply | None:
        patch = patch_of(series, number)
        parent = patch.message if patch is not None else series_parent
        if parent is None:
            return None
        if parent.message_id not in replies:
            replies[parent.message_id] = _Reply(
                parent, patch if patch is not None else _patch_for(series.patches, parent)
            )
        return replies[parent.message_id]

    for f in introduced(review, dismissed):
        r = reply_for(f.patch_number)
        if r is not None:
            r.findings.append(f)
    if replies:
        for f in by_status(review.findings, Status.FIXED):
            patch = patch_of(series, f.patch_number)
            if patch is not None and patch.message.message_id in replies:
                replies[patch.message.message_id].fixed.append(f)
        ordered = sorted(replies.values(), key=lambda r: r.patch.number if r.patch else 0)
        return [
            _message(review, r, sender, scrub(_patch_body(review, r, dismissed), review))
            for r in ordered
        ]
    if series_parent is None:
        return []
    summary = _Reply(series_parent, _patch_for(series.patches, series_parent))
    body = scrub(_summary_body(review, dismissed), review)
    return [_message(review, summary, sender, body)]


def render_email(
    review: Review, *, from_addr: str = DEFAULT_FROM, dismissed: Dismissed | None = None
) -> str:
    """The replies as an mboxrd text, readable as-is and by any mail tool."""
    chunks = []
    for msg in render_email_messages(review, from_addr=from_addr, dismissed=dismissed):
        raw = msg.as_bytes(policy=_POLICY.clone(linesep="\n")).decode("utf-8", "replace")
        # mboxrd: a body line that looks like a From_ line gains one more ">".
        body = re.sub(r"(?m)^(>*From )", r">\1", raw)
        chunks.append("From mboxrd@z Thu Jan  1 00:00:00 1970\n" + body.rstrip("\n") + "\n")
    return "\n".join(chunks)


# --------------------------------------------------------------------------- bodies


def _patch_body(review: Review, reply: _Reply, dismissed: Dismissed | None) -> list[str]:
    lines = _attribution(reply.parent)
    patch = reply.patch
    files: tuple[FileDiff, ...] = ()
    if patch is not None:
        images = images_of(review, patch.number)
        files = images.files if images is not None and images.files else parse_diff(patch)
    anchored: list[tuple[Anchor, Finding]] = []
    loose: list[Finding] = []
    for f in reply.findings:
        a = locate(files, f) if f.patch_number is not None else None
        if a is None:
            loose.append(f)
        else:
            anchored.append((a, f))
    last_file: int | None = None
    for fi, hi, line_indexes in group_anchors([a for a, _ in anchored]):
        quoted = quote_hunk(files, fi, hi, line_indexes, with_file_header=fi != last_file)
        # the file is named by `diff --git`; its ---/+++ lines say it again
        lines += [fit_quote(q) for q in quoted if not q.startswith(("> --- ", "> +++ "))]
        last_file = fi
        asked: set[str] = set()
        for a, f in anchored:
            if (a.file_index, a.hunk_index) == (fi, hi):
                same_place = bool(f.function) and f.function in asked
                lines += ["", *finding_lines(f, follow_up=same_place), ""]
                asked.add(f.function or "")
    if loose:
        if anchored:
            lines.append("")
        for f in loose:
            if reply.patch is None or f.patch_number is None:
                where = "About the series as a whole" + (f" ({location(f)})" if f.file else "")
            elif f.file:
                where = f"In {location(f)}, which this patch does not change"
            else:
                where = "About this patch as a whole"
            lines += [*wrap(f"{where}:"), "", *finding_lines(f), ""]
    if reply.fixed:
        lines += wrap("On the plus side, with this patch applied these no longer trigger:")
        for f in reply.fixed:
            lines += wrap(f"{f.rule_id} {f.symbol} at {location(f)}", indent="  - ", hanging="    ")
        lines.append("")
    lines += _notes(review, reply.patch.number if reply.patch else None, dismissed)
    return _tidy(lines) + _signature(review, reply.parent, asked=bool(reply.findings))


def _summary_body(review: Review, dismissed: Dismissed | None) -> list[str]:
    s = review.series
    present = len(s.patches)
    where = "applied to a kernel tree" if review.applied.tree else "diff only"
    lines = wrap(
        f"I ran the mm object-lifecycle checks over {version_label(s)} of this series "
        f"({present} of {s.total} patch{'es' if s.total != 1 else ''}, {where}) and found "
        "nothing that the series introduces."
    )
    if s.missing:
        missing = ", ".join(slot_label(n, s.total) for n in s.missing)
        lines += ["", *wrap(f"Patch {missing} never arrived, so it was not reviewed.")]

    def listing(title: str, found: list[Finding]) -> list[str]:
        if not found:
            return []
        out = ["", *wrap(title)]
        for f in found:
            ref = f"[{slot_label(f.patch_number, s.total)}] " if f.patch_number else ""
            extra = (
                f" (fixed again by [{slot_label(f.fixed_by, s.total)}])"
                if f.status is Status.FIXED_IN_SERIES and f.fixed_by is not None
                else ""
            )
            out += wrap(
                f"{ref}{f.rule_id} {f.symbol} at {location(f)}{extra}: {first_sentence(f.message)}",
                indent="  - ",
                hanging="    ",
            )
        return out

    lines += listing(
        "The series removes these problems, which the checks see before it:",
        by_status(review.findings, Status.FIXED),
    )
    lines += listing(
        "Introduced and fixed again within the series (fine as it stands, but "
        "bisection will pass through the broken state):",
        by_status(review.findings, Status.FIXED_IN_SERIES),
    )
    lines += listing(
        "Already present before the series and not changed by it:",
        by_status(review.findings, Status.PRE_EXISTING),
    )
    lines.append("")
    lines += _notes(review, None, dismissed, every_patch=True, partial=False)
    parent = review.series.cover or review.series.patches[0].message
    return _tidy(lines) + _signature(review, parent, asked=False)


def _notes(
    review: Review,
    number: int | None,
    dismissed: Dismissed | None,
    *,
    every_patch: bool = False,
    partial: bool = True,
) -> list[str]:
    """What the reader must know to trust the reply: a partial series, apply
    trouble, failed checks, findings not asked again because dismissed."""
    lines: list[str] = partial_lines(review) if partial else []
    s = review.series
    numbers = [p.number for p in s.patches] if every_patch else ([number] if number else [])
    for n in numbers:
        app = application_of(review, n)
        if app is not None and not app.ok:
            failed = "; ".join(
                f"{one_line(h.file)} {one_line(h.hunk.split(' @@')[0])} @@"
                for h in app.failed_hunks[:2]
            )
            lines += wrap(
                f"Note: [{slot_label(n, s.total)}] did not apply to the tree "
                f"({app.method.value}{': ' + failed if failed else ''}); "
                "it was analysed on the diff's own context."
            )
    for c in review.checks:
        if not c.ok:
            lines += wrap("Note: " + check_failure_line(c.check, c.error) + ".")
    for f in dismissed_introduced(review, dismissed):
        if number is not None and f.patch_number != number:
            continue
        d = dismissal_of(f, dismissed)
        who = f" by {one_line(d.by)}" if d is not None and d.by else ""
        lines += wrap(
            f"Not asked again: {f.rule_id} {f.symbol} at {location(f)} "
            f"(fingerprint {short(fingerprint(f))}), dismissed{who}."
        )
    return [*lines, ""] if lines else []


def _attribution(parent: RawMessage) -> list[str]:
    who = one_line(parent.from_name) or one_line(parent.from_addr) or "you"
    if parent.date is None:
        return wrap(f"{who} wrote:")
    d = parent.date
    zone = d.strftime("%z") if d.tzinfo is not None else ""
    when = (
        f"{_DAYS[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day:02d}, {d.year} at "
        f"{d.hour % 12 or 12:02d}:{d.minute:02d}:{d.second:02d}{'AM' if d.hour < 12 else 'PM'}"
        + (f" {zone}" if zone else "")
    )
    return wrap(f"On {when}, {who} wrote:")


def _signature(review: Review, parent: RawMessage, *, asked: bool) -> list[str]:
    msgid = parent.message_id if _MSGID_OK.match(parent.message_id) else ""
    lines = ["-- ", f"{TOOL_NAME} {TOOL_VERSION}: automated object-lifecycle review of mm patches."]
    if asked:
        lines.append("Not a bug? Reply with a line 'bot: not-a-bug <fingerprint>'.")
    if msgid:
        # A command, not prose: broken only with `\`, so it can be pasted as is.
        lines += reproduce_lines(review, msgid)
    return lines


def _tidy(lines: list[str]) -> list[str]:
    """No runs of blank lines, one blank line before the signature."""
    out: list[str] = []
    for raw in lines:
        ln = raw if raw.startswith(">") else raw.rstrip()
        if ln == "" and (not out or out[-1] == ""):
            continue
        out.append(ln)
    while out and out[-1] == "":
        out.pop()
    return [*out, ""]


# --------------------------------------------------------------------------- headers


def _message(review: Review, reply: _Reply, sender: Address, body: list[str]) -> EmailMessage:
    parent = reply.parent
    msg = EmailMessage(policy=_POLICY)
    subject = one_line(parent.subject) or one_line(review.series.name)
    if not re.match(r"(?i)^re:", subject):
        subject = f"Re: {subject}"
    msg["From"] = sender
    author = _address(f"{parent.from_name} <{parent.from_addr}>") or _address(parent.from_addr)
    if author is not None:
        msg["To"] = author
    cc = _cc_list(
        parent,
        skip={sender.addr_spec.lower()}
        | ({author.addr_spec.lower()} if author is not None else set()),
    )
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    text = "\n".join(body) + "\n"
    if _MSGID_OK.match(parent.message_id):
        msg["In-Reply-To"] = f"<{parent.message_id}>"
        refs = [r for r in parent.references if _MSGID_OK.match(r)] + [parent.message_id]
        msg["References"] = " ".join(f"<{r}>" for r in dict.fromkeys(refs))
    # Deterministic: the same reply to the same message gets the same Message-ID,
    # so an outbox can tell a retry from a second review.
    digest = hashlib.sha256(f"{parent.message_id}\n{text}".encode()).hexdigest()[:24]
    domain = sender.domain or "localhost"
    msg["Message-ID"] = f"<{TOOL_NAME}.{digest}@{domain}>"
    msg["X-Mailer"] = f"{TOOL_NAME} {TOOL_VERSION}"
    # One transfer encoding for every reply: 8bit (lines are short, see
    # fit_quote; a line RFC 5322 would refuse is cut here, never re-encoded).
    if any(len(ln.encode()) > _MAX_RAW_LINE for ln in body):
        text = "\n".join(_cut_raw(ln) for ln in body) + "\n"
    msg.set_content(text, charset="utf-8", cte="8bit")
    return msg


def _cut_raw(line: str) -> str:
    raw = line.encode()
    if len(raw) <= _MAX_RAW_LINE:
        return line
    return raw[: _MAX_RAW_LINE - 6].decode("utf-8", "ignore") + " [...]"


def _address(text: str) -> Address | None:
    name, addr = parseaddr(one_line(text))
    if "@" not in addr:
        return None
    try:
        return Address(display_name=name, addr_spec=addr)
    except (ValueError, IndexError, TypeError):
        return None


def _cc_list(parent: RawMessage, *, skip: set[str]) -> list[Address]:
    """Reply-all: everyone the original went to, minus the author and the bot."""
    out: list[Address] = []
    seen = set(skip)
    for name, addr in getaddresses([one_line(x) for x in (*parent.to, *parent.cc)]):
        if "@" not in addr or addr.lower() in seen:
            continue
        try:
            out.append(Address(display_name=name, addr_spec=addr))
        except (ValueError, IndexError, TypeError):
            continue
        seen.add(addr.lower())
    return out


def _patch_for(patches: tuple[Patch, ...], msg: RawMessage) -> Patch | None:
    return next((p for p in patches if p.message.message_id == msg.message_id), None)
