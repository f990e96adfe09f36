"""Wording shared by every renderer: locations, headlines, slots, wrapping, traces.

Renderers word what the analysis found; they never analyse. Everything here is a
pure function of the model types, so each format says the same thing the same way.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import __version__
from bot.model import (
    ApplyMethod,
    Finding,
    Patch,
    PatchApplication,
    PatchImages,
    Review,
    Series,
    Severity,
    Status,
    Trace,
)
from bot.report.fingerprint import fingerprint

if TYPE_CHECKING:
    from bot.dismiss import Dismissal

# What a renderer is told about dismissals: fingerprint -> the dismissal that
# covers it (bot.dismiss.dismissed_in). A dismissed introduced finding is shown
# as dismissed and does not count against the series.
Dismissed = Mapping[str, "Dismissal"]

TOOL_NAME = "mm-lifecycle-bot"
TOOL_VERSION = __version__

# Prose in mail is wrapped here: the width kernel mail has used since the 80-column
# terminal, minus room for two levels of "> " quoting by the next replier.
MAIL_WIDTH = 78

# Columns of a simulator trace start at least this far apart, so short steps line
# up the way hand-written changelog traces do ("CPU0 ... CPU1" at 34 columns),
# and at most this far: each row holds one actor's step, so a long step may run
# past the next column's start without colliding, as in kernel changelogs, and
# three actors still fit a mail reader's screen.
TRACE_MIN_COLUMN = 34
TRACE_MAX_COLUMN = 44
TRACE_GAP = 4
# The last column keeps at least this much room before a row wraps.
TRACE_MIN_ROOM = 40

SEVERITY_RANK = {Severity.ERROR: 2, Severity.WARNING: 1, Severity.INFO: 0}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def one_line(text: str) -> str:
    """Collapse whitespace and drop control characters: hostile text stays on one line."""
    return " ".join(_CONTROL.sub(" ", text).split())


def slot_label(number: int, total: int) -> str:
    """`2/4`, the way a series marker names a slot (0 is the cover letter)."""
    return f"{number}/{total}"


def version_label(series: Series) -> str:
    """`v3`, or `v5.1` for a partial reroll."""
    return f"v{series.revision or series.version}"


def present_and_missing(series: Series) -> tuple[list[str], list[str]]:
    """Slot labels that arrived (cover first, as 0/N) and those that are MISSING."""
    present = [slot_label(0, series.total)] if series.cover is not None else []
    present += [slot_label(s.number, series.total) for s in series.slots if not s.missing]
    missing = [slot_label(n, series.total) for n in series.missing]
    return present, missing


def describe_version(series: Series) -> str:
    """`v1: 0/4 3/4 4/4 present, 1/4 2/4 MISSING`."""
    present, missing = present_and_missing(series)
    parts = []
    if present:
        parts.append(" ".join(present) + " present")
    if missing:
        parts.append(" ".join(missing) + " MISSING")
    return f"{version_label(series)}: " + (", ".join(parts) or "nothing arrived")


def author_of(series: Series) -> str:
    """`Name <addr>`, or whichever half is known."""
    name, addr = one_line(series.author_name), one_line(series.author_addr)
    if name and addr:
        return f"{name} <{addr}>"
    return name or (f"<{addr}>" if addr else "unknown author")


def location(finding: Finding) -> str:
    """`mm/slab.h:131 memcg_release_pages()`: file, line and function as far as known."""
    where = one_line(finding.file) or "(series)"
    if finding.line is not None:
        where += f":{finding.line}"
    if finding.function:
        where += f" {one_line(finding.function)}()"
    return where


def first_sentence(text: str) -> str:
    """The first sentence of a paragraph, for the short listings."""
    flat = one_line(text)
    head, sep, _ = flat.partition(". ")
    return head + "." if sep else flat


def says_more(extra: str, already: str) -> bool:
    """Whether `extra` adds to `already`: a trace summary often restates the message.

    A leading `label:` ("leak: ...") is ignored when comparing.
    """
    flat = one_line(extra).rstrip(".")
    if not flat:
        return False
    head, sep, rest = flat.partition(": ")
    if sep and " " not in head:
        flat = rest
    return flat.lower() not in one_line(already).lower()


def tags(finding: Finding) -> str:
    """`error, high confidence, introduced`."""
    f = finding
    return f"{f.severity.value}, {f.confidence.value} confidence, {f.status.value}"


def headline(finding: Finding) -> str:
    """`mm/slab.h:131 f(): MMLC001 some-symbol [error, high confidence, introduced]`."""
    rule = one_line(f"{finding.rule_id} {finding.symbol}")
    return f"{location(finding)}: {rule} [{tags(finding)}]"


def patch_of(series: Series, number: int | None) -> Patch | None:
    """The patch in slot `number`, None when missing or not a patch number."""
    if number is None:
        return None
    return next((s.patch for s in series.slots if s.number == number), None)


def application_of(review: Review, number: int) -> PatchApplication | None:
    return next((a for a in review.applied.applications if a.number == number), None)


def images_of(review: Review, number: int) -> PatchImages | None:
    return next((i for i in review.applied.images if i.number == number), None)


def patch_ref(series: Series, number: int | None) -> str:
    """`[1/3] title` for a patch, `the series` when a finding has no patch."""
    if number is None:
        return "the series as a whole"
    patch = patch_of(series, number)
    label = f"[{slot_label(number, series.total)}]"
    return f"{label} {one_line(patch.title)}" if patch else f"{label} MISSING"


def by_status(findings: Iterable[Finding], *statuses: Status) -> list[Finding]:
    return [f for f in findings if f.status in statuses]


def worst_severity(findings: Sequence[Finding]) -> Severity | None:
    if not findings:
        return None
    return max((f.severity for f in findings), key=lambda s: SEVERITY_RANK[s])


def dismissal_of(finding: Finding, dismissed: Dismissed | None) -> Dismissal | None:
    """The dismissal covering `finding`, if any."""
    return dismissed.get(fingerprint(finding)) if dismissed else None


def introduced(review: Review, dismissed: Dismissed | None = None) -> list[Finding]:
    """Introduced findings that count: those no dismissal covers."""
    return [
        f
        for f in by_status(review.findings, Status.INTRODUCED)
        if dismissal_of(f, dismissed) is None
    ]


def dismissed_introduced(review: Review, dismissed: Dismissed | None) -> list[Finding]:
    """Introduced findings a dismissal covers: shown as dismissed, not counted."""
    return [
        f
        for f in by_status(review.findings, Status.INTRODUCED)
        if dismissal_of(f, dismissed) is not None
    ]


def dismissal_line(d: Dismissal) -> str:
    """`dismissed #3 by alice on 2026-12-07 (everywhere): reason`."""
    scope = " (everywhere)" if d.everywhere else ""
    why = f": {one_line(d.reason)}" if d.reason else ""
    return f"dismissed #{d.id} by {one_line(d.by) or 'someone'} on {d.at[:10]}{scope}{why}"


@dataclass(frozen=True)
class Counts:
    """How many findings of each status a review holds (introduced: not dismissed)."""

    introduced: int
    pre_existing: int
    fixed: int
    fixed_in_series: int
    checks_failed: int
    dismissed: int = 0


def counts(review: Review, dismissed: Dismissed | None = None) -> Counts:
    fs = review.findings
    return Counts(
        introduced=len(introduced(review, dismissed)),
        pre_existing=len(by_status(fs, Status.PRE_EXISTING)),
        fixed=len(by_status(fs, Status.FIXED)),
        fixed_in_series=len(by_status(fs, Status.FIXED_IN_SERIES)),
        checks_failed=sum(1 for c in review.checks if not c.ok),
        dismissed=len(dismissed_introduced(review, dismissed)),
    )


def application_lines(app: PatchApplication | None) -> list[str]:
    """How a patch went onto the tree: a headline, then one line per failed hunk.

    Hunks that moved are listed only when the apply stage left no message of
    its own (which already summarises offsets and fuzz).
    """
    if app is None:
        return ["not attempted"]
    if app.method is ApplyMethod.NO_TREE:
        head = "no tree given: analysed on the diff's own context"
    elif app.ok:
        head = f"applied ({app.method.value})"
    else:
        head = f"did not apply ({app.method.value})"
    if app.message and one_line(app.message) != head:
        head += f": {one_line(app.message)}"
    lines = [head]
    if not app.message:
        lines += [
            f"moved: {one_line(h.file)} {one_line(h.hunk)} offset {h.offset} fuzz {h.fuzz}"
            for h in app.hunks
            if h.applied and (h.offset or h.fuzz)
        ]
    lines += [
        f"failed hunk: {one_line(h.file)} {one_line(h.hunk)}"
        + (f" ({one_line(h.reason)})" if h.reason else "")
        for h in app.failed_hunks
    ]
    if app.skipped:
        lines.append("skipped: " + ", ".join(one_line(s) for s in app.skipped))
    return lines


def describe_application(app: PatchApplication | None) -> str:
    """The same on one line, for mail notes and check summaries."""
    return "; ".join(application_lines(app))


def check_failure_line(check: str, error: str) -> str:
    why = one_line(error) or "no message"
    return f"check {one_line(check)} failed: {why}; the other checks ran"


def wrap(
    text: str, width: int = MAIL_WIDTH, *, indent: str = "", hanging: str | None = None
) -> list[str]:
    """Wrap prose to `width` columns, paragraph by paragraph (blank lines kept).

    Words longer than a line are split rather than let a line overflow; runs of
    whitespace inside a paragraph collapse, so hostile text cannot smuggle layout.
    """
    rest = indent if hanging is None else hanging
    out: list[str] = []
    paragraphs = re.split(r"\n\s*\n", text.strip())
    for i, para in enumerate(paragraphs):
        if i:
            out.append("")
        flat = one_line(para)
        if not flat:
            continue
        out.extend(
            textwrap.wrap(
                flat,
                width=width,
                initial_indent=indent if i == 0 else rest,
                subsequent_indent=rest,
                break_long_words=True,
                break_on_hyphens=False,
            )
        )
    return out


def trace_lines(
    trace: Trace, *, indent: str = "  ", width: int = MAIL_WIDTH, hard: bool = False
) -> list[str]:
    """Lay a counterexample out as kernel changelogs do: one column per actor.

    Each actor's column names the function it is in (`fn()`) when that changes and
    the step text indented under it; rows keep the interleaving order top-down.
    Rows hold one actor's step each, so the columns can sit closer than their
    longest text; a row that would run past `width` wraps inside its own column
    (continuation lines indented two more), so the trace stays readable in a
    78-column mail reader even with three actors. With `hard`, a token too
    long for its column is split too, so no line passes `width` (mail).
    """
    actors = list(trace.actors)
    for step in trace.steps:
        if step.actor not in actors:
            actors.append(step.actor)
    if not actors:
        return []
    rows: list[tuple[int, str]] = []
    current: dict[str, str] = {}
    for step in trace.steps:
        col = actors.index(step.actor)
        fn = one_line(step.function) or (
            one_line(trace.actor_roles.get(step.actor, "")) if step.actor not in current else ""
        )
        text = one_line(step.text)
        if fn and fn != current.get(step.actor):
            current[step.actor] = fn
            label = fn if fn.endswith(")") else f"{fn}()"
            rows.append((col, label))
            if text in (fn, label):
                continue
        if step.line and not text.endswith(f":{step.line}"):
            text = f"{text} :{step.line}"
        rows.append((col, f"  {text}" if current.get(step.actor) else text))
    widths = [len(one_line(a)) for a in actors]
    for col, text in rows:
        widths[col] = max(widths[col], len(text))
    starts = [0]
    for w in widths[:-1]:
        starts.append(starts[-1] + min(max(w + TRACE_GAP, TRACE_MIN_COLUMN), TRACE_MAX_COLUMN))
    # Squeeze the columns so the last one keeps TRACE_MIN_ROOM characters of room.
    room = width - len(indent)
    if len(actors) > 1 and starts[-1] > room - TRACE_MIN_ROOM:
        step_w = max(
            len(max(actors, key=len)) + TRACE_GAP, (room - TRACE_MIN_ROOM) // (len(actors) - 1)
        )
        starts = [i * step_w for i in range(len(actors))]
    header = ""
    underline = ""
    for col, actor in enumerate(actors):
        header = header.ljust(starts[col]) + one_line(actor)
        underline = underline.ljust(starts[col]) + "-" * len(one_line(actor))
    out = [indent + header.rstrip(), indent + underline.rstrip()]
    for col, text in rows:
        pad = " " * starts[col]
        avail = max(room - starts[col], 12)
        body = text.lstrip(" ")
        lead = " " * (len(text) - len(body))
        pieces = textwrap.wrap(
            body,
            width=max(avail - len(lead), 8),
            subsequent_indent="  ",
            break_long_words=hard,
            break_on_hyphens=False,
        ) or [""]
        if len(pieces) > 1 and len(pieces[0]) < 6:
            # never leave a bare `if` above the condition it starts
            pieces = [f"{pieces[0]} {pieces[1].lstrip()}", *pieces[2:]]
        out += [(indent + pad + lead + piece).rstrip() for piece in pieces]
    return out
