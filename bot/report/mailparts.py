"""Pieces of a reply that keep it short and safe to send (bot/report/mail.py).

    finding_lines(f, follow_up=...)   about 25 lines per finding, 78 columns
    partial_lines(review)             a partial review says so, naming the gaps
    reproduce_lines(review, msgid)    the whole command: --tree, base, Message-ID
    fit_quote(line)                   a quoted patch line cut to 78 columns
    scrub(lines, review)              no path of the bot's machine in mail

Mail carries the short form of everything: the text and JSON formats keep the
message, every evidence line and the whole trace.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath

from bot.model import Finding, Review
from bot.report.common import (
    MAIL_WIDTH,
    location,
    one_line,
    says_more,
    slot_label,
    trace_lines,
    version_label,
    wrap,
)
from bot.report.fingerprint import fingerprint, short

# Evidence bullets per finding in mail, and wrapped lines per bullet.
MAIL_EVIDENCE = 4
EVIDENCE_LINES = 2
# Trace rows kept (besides the two header lines); a longer trace keeps its
# start and its end (where the bug happens) around a `[...]` line.
TRACE_ROWS = 16
TRACE_HEAD = 4
# Lines of the "agrees" note under a second finding about the same function.
AGREE_LINES = 4
# Evidence lines that are the simulator's bookkeeping, not the reader's evidence.
_BOOKKEEPING = ("why an actor:", "explored ")
# Where the reproducer's tree is: a name for the reader's own checkout.
TREE_NAME = "linux"


def is_simulator(f: Finding) -> bool:
    return f.rule_id.startswith("SIM")


def rule_line(f: Finding) -> list[str]:
    """`[MMLC001 release-path-stops-destroy: error, medium confidence, at
    mm/slab.h:131 memcg_release_pages(); fingerprint 3f9c0a1b7d]`."""
    return wrap(
        f"[{one_line(f.rule_id)} {one_line(f.symbol)}: {f.severity.value}, "
        f"{f.confidence.value} confidence, at {location(f)}; "
        f"fingerprint {short(fingerprint(f))}]"
    )


def evidence_lines(f: Finding) -> list[str]:
    """A few bullets: the first MAIL_EVIDENCE lines that are evidence, each
    wrapped to at most EVIDENCE_LINES lines."""
    chosen = [e for e in f.evidence if not one_line(e).startswith(_BOOKKEEPING)]
    out: list[str] = []
    for ev in chosen[:MAIL_EVIDENCE]:
        lines = wrap(ev, indent="  - ", hanging="    ")
        if len(lines) > EVIDENCE_LINES:
            lines = lines[:EVIDENCE_LINES]
            lines[-1] = _cut(lines[-1] + " ...", MAIL_WIDTH)
        out += lines
    if len(chosen) > MAIL_EVIDENCE:
        out.append(f"  - and {len(chosen) - MAIL_EVIDENCE} more (in the text and JSON review)")
    return out


def trace_block(f: Finding) -> list[str]:
    """The simulator's interleaving, in columns, at most TRACE_ROWS rows."""
    if f.trace is None or not f.trace.steps:
        return []
    lines = trace_lines(f.trace, indent="  ", width=MAIL_WIDTH, hard=True)
    head, rows = lines[:2], lines[2:]
    if len(rows) > TRACE_ROWS:
        tail = TRACE_ROWS - TRACE_HEAD - 1
        left = len(rows) - TRACE_HEAD - tail
        rows = [*rows[:TRACE_HEAD], f"  [... {left} lines of the trace left out]", *rows[-tail:]]
    return [*head, *rows]


def finding_lines(f: Finding, *, follow_up: bool = False) -> list[str]:
    """One finding as a reviewer writes it under the quoted code.

    The question (or the message when there is none); the simulator's trace
    right under it, only when the simulator found it (the finding has a
    trace); a few lines of evidence; the rule, where, and the fingerprint to
    dismiss it by; the suggestion.
    A `follow_up` (a second finding about the same function under the same
    hunk) reads as support for the first, in at most AGREE_LINES lines.
    """
    if follow_up and (is_simulator(f) or not f.question):
        who = "The lifecycle simulator agrees" if is_simulator(f) else "Related"
        said = one_line(f.message)
        if said[:2].istitle():  # "After this..." reads on as "after this...", "CPU0" stays
            said = said[0].lower() + said[1:]
        lines = _capped(wrap(f"{who}: {said}"), AGREE_LINES)
    else:
        lines = wrap(f.question or f.message)
    if f.trace is not None and f.trace.steps:  # a trace is the simulator's finding
        lines += ["", *trace_block(f)]
        if says_more(f.trace.summary, f.message):
            lines += ["", *_capped(wrap(f.trace.summary), AGREE_LINES)]
    lines += ["", *evidence_lines(f), *rule_line(f)]
    if f.suggestion and not follow_up:
        lines += ["", *wrap(f.suggestion)]
    return lines


def partial_lines(review: Review) -> list[str]:
    """`This review is partial: 2/3 and 3/3 of v3 never arrived ...`."""
    s = review.series
    if not s.missing:
        return []
    gaps = [slot_label(n, s.total) for n in s.missing]
    named = gaps[0] if len(gaps) == 1 else ", ".join(gaps[:-1]) + " and " + gaps[-1]
    return wrap(
        f"This review is partial: patch {named} of {version_label(s)} never arrived, "
        "so the series was judged without "
        + ("it." if len(gaps) == 1 else "them.")
        + " A later review of the whole series will say what changed."
    )


def _tree_label(review: Review) -> str:
    """What the tree was, in words that name no directory of the bot's machine:
    the last component of the tree's path (`v3.15.5`, `mm-unstable`)."""
    tree = review.applied.tree
    if not tree:
        return ""
    name = PurePath(tree.rstrip("/\\") or "/").name
    return name if name and name not in (".", "..") else ""


def reproduce_lines(review: Review, msgid: str) -> list[str]:
    """The whole command, as a reader runs it in their own kernel tree.

    A command is never wrapped; it is broken with `\\` before the Message-ID,
    which is the only token that may pass 78 columns (it cannot be split).
    """
    tree, base = _tree_label(review), review.applied.base_commit
    if not review.applied.tree:
        return ["Reproduce with (a review of the diff alone):", f"  bot review {msgid}"]
    if tree == TREE_NAME:
        tree = ""
    if base:
        what = f"{TREE_NAME}: a kernel git tree" + (f" like {tree}" if tree else "")
        return [
            f"Reproduce with ({what}):",
            f"  git -C {TREE_NAME} checkout --detach {base[:12]}",
            f"  bot review --tree {TREE_NAME} \\",
            f"    {msgid}",
        ]
    what = f"{TREE_NAME}: a kernel tree" + (f" of {tree}" if tree else "")
    return [f"Reproduce with ({what}):", f"  bot review --tree {TREE_NAME} \\", f"    {msgid}"]


def fit_quote(line: str, width: int = MAIL_WIDTH) -> str:
    """A `> `-quoted patch line that fits `width` columns (tabs at 8): a longer
    one is cut and ends in ` [...]`."""
    if len(line.expandtabs(8)) <= width:
        return line
    out = ""
    for ch in line:
        if len((out + ch).expandtabs(8)) > width - 6:
            break
        out += ch
    return out.rstrip() + " [...]"


def scrub(lines: list[str], review: Review) -> list[str]:
    """The tree's path and the home directory of the bot's machine, wherever a
    note or message repeats them, become `the tree` and `~`."""
    tree = review.applied.tree
    paths: list[tuple[str, str]] = []
    if tree:
        paths += [(os.path.abspath(tree), "the tree")]
        if "/" in tree.strip("/"):  # a bare name ("linux") is no path worth hiding
            paths.append((tree.rstrip("/"), "the tree"))
    home = os.path.expanduser("~")
    if home not in ("", "/", "~"):
        paths.append((home, "~"))
    paths.sort(key=lambda p: -len(p[0]))
    if not paths:
        return lines
    pattern = re.compile("|".join(re.escape(p) for p, _ in paths))
    table = dict(paths)
    return [
        ln if ln.startswith(">") else pattern.sub(lambda m: table[m.group(0)], ln) for ln in lines
    ]


def _capped(lines: list[str], most: int) -> list[str]:
    if len(lines) <= most:
        return lines
    return [*lines[: most - 1], _cut(lines[most - 1] + " ...", MAIL_WIDTH)]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 4].rstrip() + " ..."


__all__ = [
    "finding_lines",
    "fit_quote",
    "partial_lines",
    "reproduce_lines",
    "rule_line",
    "scrub",
]
