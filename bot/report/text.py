"""The terminal review: what was reviewed, how it applied, what the series introduces.

Introduced findings come first and in full (message, evidence, suggestion, trace);
pre-existing and fixed ones follow, one line each; then failed checks and notes.
Colour (rich) only when asked for; the words are the same either way.
"""

from __future__ import annotations

import io

from bot.model import Finding, Review, Severity, Status
from bot.report.common import (
    TOOL_NAME,
    TOOL_VERSION,
    Dismissed,
    application_lines,
    application_of,
    author_of,
    by_status,
    check_failure_line,
    counts,
    describe_version,
    dismissal_line,
    dismissal_of,
    dismissed_introduced,
    first_sentence,
    headline,
    introduced,
    location,
    one_line,
    patch_ref,
    says_more,
    slot_label,
    trace_lines,
    version_label,
    wrap,
)
from bot.report.fingerprint import fingerprint, short

_SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
# Prose in the terminal wraps like mail does: reviews get pasted into replies.
_WIDTH = 78
# A check's notes (bounds reached, functions without a role) can run to dozens;
# the terminal shows the first few, JSON keeps them all.
_NOTES_PER_CHECK = 5


# What rich's Text drops from plain text (bell, backspace, VT, FF, CR): the plain
# rendering, built without rich, drops the same.
_STRIP_CONTROL = dict.fromkeys((7, 8, 11, 12, 13))


class _Out:
    """Lines of styled text; rendered plain, or through rich (imported only then:
    it costs ~25 ms) at the end."""

    def __init__(self) -> None:
        # Each line: (whole-line style or None for a line built from parts, parts).
        self.lines: list[tuple[str | None, tuple[tuple[str, str], ...]]] = []

    def add(self, text: str = "", style: str = "") -> None:
        self.lines.append((style, ((text, style),)))

    def parts(self, *parts: tuple[str, str]) -> None:
        self.lines.append((None, parts))

    def render(self, color: bool) -> str:
        if not color:
            plain = "\n".join("".join(text for text, _ in parts) for _, parts in self.lines)
            return plain.translate(_STRIP_CONTROL) + "\n"
        from rich.console import Console
        from rich.text import Text

        texts: list[Text] = []
        for line_style, parts in self.lines:
            if line_style is not None:
                texts.append(Text(parts[0][0], style=line_style))
                continue
            line = Text()
            for text, style in parts:
                line.append(text, style=style)
            texts.append(line)
        whole = Text("\n").join(texts)
        buf = io.StringIO()
        console = Console(
            file=buf,
            force_terminal=True,
            color_system="standard",
            no_color=False,  # the caller asked for colour: NO_COLOR is the CLI's to honour
            width=10_000,  # never let rich re-wrap: we wrapped already
            highlight=False,
            markup=False,
            emoji=False,
        )
        console.print(whole, soft_wrap=True)
        return buf.getvalue()


def render_text(review: Review, *, color: bool = False, dismissed: Dismissed | None = None) -> str:
    """The whole review as terminal text; ANSI colour only when `color` is True."""
    out = _Out()
    s = review.series
    plural = "es" if s.total != 1 else ""
    title = f"{one_line(s.name)} ({version_label(s)}, {s.total} patch{plural})"
    out.parts(("Series: ", "bold"), (title, "bold"))
    out.add(f"Author: {author_of(s)}")
    out.add(f"Key:    {one_line(s.key)}")
    versions = review.versions or (s,)
    out.add("Versions found:")
    for v in versions:
        line = describe_version(v)
        mark = "  <- reviewed" if v.key == s.key else ""
        out.parts(("  " + line, "red" if v.missing else ""), (mark, "dim"))
    tree = review.applied.tree
    if tree:
        base = f" (base {review.applied.base_commit})" if review.applied.base_commit else ""
        out.add(f"Tree:   {one_line(tree)}{base}")
    else:
        out.add("Tree:   none (diff-only review)")

    out.add()
    out.add("How each patch applied:", "bold")
    for slot in s.slots:
        label = f"  [{slot_label(slot.number, s.total)}] "
        if slot.patch is None:
            out.parts((label, ""), ("MISSING", "bold red"), (" (never arrived; not reviewed)", ""))
            continue
        app = application_of(review, slot.number)
        style = "" if app is not None and app.ok else "red"
        out.parts((label, ""), (one_line(slot.patch.title), ""))
        head, *rest = application_lines(app)
        for ln in wrap(head, _WIDTH, indent="      ", hanging="        "):
            out.add(ln, style)
        for ln in rest:  # file and @@ header whole: they are searched for
            out.add(f"      {ln}", style)

    counted = introduced(review, dismissed)
    out.add()
    if counted:
        out.add("Findings introduced by this series:", "bold")
        groups: dict[int | None, list[Finding]] = {}
        for f in counted:
            groups.setdefault(f.patch_number, []).append(f)
        for number, found in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            out.add()
            out.add(f"{patch_ref(s, number)}", "bold")
            for f in found:
                _full_finding(out, f)
    else:
        out.add("No lifecycle finding introduced by this series.", "green")

    gone = dismissed_introduced(review, dismissed)
    _short_section(out, review, "Dismissed (not counted; bot dismiss --list):", gone, "dim")
    for f in gone:
        d = dismissal_of(f, dismissed)
        if d is not None:
            for ln in wrap(dismissal_line(d), _WIDTH, indent="      ", hanging="        "):
                out.add(ln, "dim")
    _short_section(
        out,
        review,
        "Fixed within the series (a later patch undoes it):",
        by_status(review.findings, Status.FIXED_IN_SERIES),
        "green",
    )
    _short_section(
        out,
        review,
        "Pre-existing (present before the series, not introduced by it):",
        by_status(review.findings, Status.PRE_EXISTING),
        "",
    )
    _short_section(
        out,
        review,
        "Fixed by this series (good):",
        by_status(review.findings, Status.FIXED),
        "green",
    )

    failed = [c for c in review.checks if not c.ok]
    noted = [c for c in review.checks if c.ok and c.notes]
    if failed or noted:
        out.add()
        out.add("Checks:", "bold")
        for c in failed:
            line = check_failure_line(c.check, c.error)
            for ln in wrap(line, _WIDTH, indent="  ", hanging="    "):
                out.add(ln, "red")
        for c in noted:
            for note in c.notes[:_NOTES_PER_CHECK]:
                out.add(f"  {one_line(c.check)}: {one_line(note)}", "dim")
            if len(c.notes) > _NOTES_PER_CHECK:
                more = len(c.notes) - _NOTES_PER_CHECK
                out.add(f"  {one_line(c.check)}: ... {more} more note(s) in --format json", "dim")
    if review.notes:
        out.add()
        out.add("Notes:", "bold")
        for note in review.notes:
            for ln in wrap(note, _WIDTH, indent="  - ", hanging="    "):
                out.add(ln)
    if review.other_series:
        out.add()
        out.add("Also in the input, not reviewed (use --series KEY):", "bold")
        for other in review.other_series:
            out.add(f"  {one_line(other.key)}: {one_line(other.name)} ({version_label(other)})")

    n = counts(review, dismissed)
    out.add()
    out.add(
        f"Summary: {n.introduced} introduced, {n.pre_existing} pre-existing, "
        f"{n.fixed} fixed, {n.fixed_in_series} fixed in series"
        + (f", {n.dismissed} dismissed" if n.dismissed else "")
        + (f", {n.checks_failed} check(s) failed" if n.checks_failed else "")
        + f" ({TOOL_NAME} {TOOL_VERSION})",
        "bold",
    )
    return out.render(color)


def _full_finding(out: _Out, f: Finding) -> None:
    out.add()
    out.parts(
        ("  " + location(f) + ": ", "bold"),
        (one_line(f"{f.rule_id} {f.symbol}"), _SEVERITY_STYLE[f.severity]),
        (f" [{f.severity.value}, {f.confidence.value} confidence, {f.status.value}]", ""),
    )
    out.add(f"    fingerprint {short(fingerprint(f))}", "dim")
    for ln in wrap(f.message, _WIDTH, indent="    "):
        out.add(ln)
    if f.question and f.question != f.message:
        out.add()
        for ln in wrap(f.question, _WIDTH, indent="    Question: ", hanging="    "):
            out.add(ln)
    if f.evidence:
        out.add("    Evidence:")
        for ev in f.evidence:
            for ln in wrap(ev, _WIDTH, indent="      - ", hanging="        "):
                out.add(ln, "dim")
    if f.suggestion:
        for ln in wrap(f.suggestion, _WIDTH, indent="    Suggestion: ", hanging="    "):
            out.add(ln, "green")
    if f.trace is not None and f.trace.steps:
        out.add("    Trace (lifecycle simulator):")
        for ln in trace_lines(f.trace, indent="      "):
            out.add(ln)
        if says_more(f.trace.summary, f.message):
            for ln in wrap(f.trace.summary, _WIDTH, indent="    "):
                out.add(ln)


def _short_section(out: _Out, review: Review, title: str, found: list[Finding], style: str) -> None:
    if not found:
        return
    out.add()
    out.add(title, "bold")
    for f in found:
        where = (
            f"[{slot_label(f.patch_number, review.series.total)}] "
            if f.patch_number is not None
            else ""
        )
        extra = ""
        if f.status is Status.FIXED_IN_SERIES and f.fixed_by is not None:
            extra = f" (fixed by [{slot_label(f.fixed_by, review.series.total)}])"
        out.add(f"  {where}{headline(f)}{extra}", style)
        first = first_sentence(f.message)
        if first:
            for ln in wrap(first, _WIDTH, indent="      "):
                out.add(ln, "dim")
