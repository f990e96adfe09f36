"""Quote only the part of a patch a finding is about, as a reviewer trims a reply.

`locate` finds the hunk (and the line inside it) a finding points at; `quote`
turns a set of such anchors into `> `-prefixed lines in patch order: file header,
hunk header, the changed lines around each anchor with a few lines of context,
and `> [...]` wherever something was left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.errors import InputError
from bot.model import FileDiff, Finding, Hunk, HunkLine, LineKind, Patch

# Lines of unchanged context kept on each side of the change a finding sits in.
CONTEXT_LINES = 3
# A hunk this short is quoted whole: cutting it would save less than it costs.
WHOLE_HUNK_LINES = 14
ELIDED = "> [...]"


@dataclass(frozen=True)
class Anchor:
    """Where in a patch's diff a finding points: file, hunk, line within the hunk."""

    file_index: int
    hunk_index: int
    line_index: int


def parse_diff(patch: Patch) -> tuple[FileDiff, ...]:
    """The patch's own diff as FileDiffs, for when the apply stage left no images.

    It is the apply stage's parser, so a quote reads the same with images or
    without; a diff it refuses quotes nothing rather than failing the whole reply.
    """
    from bot.analyze.diff import parse_diff as parse_unified

    try:
        return parse_unified(patch.diff, f"patch {patch.number}")
    except InputError:
        return ()


def _changed(line: HunkLine) -> bool:
    return line.kind is not LineKind.CONTEXT


def _first_changed(hunk: Hunk) -> int:
    return next((i for i, ln in enumerate(hunk.lines) if _changed(ln)), 0)


def locate(files: Sequence[FileDiff], finding: Finding) -> Anchor | None:
    """The hunk and line a finding points at, or None when its file is not in the diff.

    The finding's line is matched against post-image numbers first (what the patch
    makes), then pre-image numbers (what it removed); failing that, the hunk that
    names the function, then the file's first hunk.
    """
    matches = [
        (fi, f)
        for fi, f in enumerate(files)
        if finding.file and finding.file in (f.new_path, f.old_path) and f.hunks
    ]
    if not matches:
        return None
    if finding.line is not None:
        for attr in ("target_line", "source_line"):
            for fi, f in matches:
                for hi, hunk in enumerate(f.hunks):
                    for li, line in enumerate(hunk.lines):
                        if getattr(line, attr) == finding.line:
                            return Anchor(fi, hi, li)
        for fi, f in matches:
            for hi, hunk in enumerate(f.hunks):
                end = hunk.target_start + max(hunk.target_length, 1)
                if hunk.target_start <= finding.line < end:
                    return Anchor(fi, hi, _first_changed(hunk))
    if finding.function:
        name = finding.function
        for fi, f in matches:
            for hi, hunk in enumerate(f.hunks):
                if name in hunk.section:
                    return Anchor(fi, hi, _first_changed(hunk))
                for li, line in enumerate(hunk.lines):
                    if f"{name}(" in line.text:
                        return Anchor(fi, hi, li)
    fi, f = matches[0]
    return Anchor(fi, 0, _first_changed(f.hunks[0]))


def _window(hunk: Hunk, index: int) -> tuple[int, int]:
    """The run of changed lines at (or next to) `index`, widened by CONTEXT_LINES.

    An anchor on an unchanged line pulls in the nearest change within reach:
    the question is about what the patch did there, so that is what to quote.
    """
    lines = hunk.lines
    lo = hi = index
    if not _changed(lines[index]):
        near = [
            i
            for i in range(index - CONTEXT_LINES, index + CONTEXT_LINES + 1)
            if 0 <= i < len(lines) and _changed(lines[i])
        ]
        if near:
            closest = min(near, key=lambda i: abs(i - index))
            lo, hi = min(index, closest), max(index, closest)
    if _changed(lines[lo]):
        while lo > 0 and _changed(lines[lo - 1]):
            lo -= 1
    if _changed(lines[hi]):
        while hi + 1 < len(lines) and _changed(lines[hi + 1]):
            hi += 1
    return max(0, lo - CONTEXT_LINES), min(len(lines) - 1, hi + CONTEXT_LINES)


def _trim_blank(hunk: Hunk, lo: int, hi: int) -> tuple[int, int]:
    """Drop blank context lines at the edges of a cut: `[...]` says enough there."""

    def blank(i: int) -> bool:
        line = hunk.lines[i]
        return line.kind is LineKind.CONTEXT and not line.text.strip()

    while lo < hi and blank(lo):
        lo += 1
    while hi > lo and blank(hi):
        hi -= 1
    return lo, hi


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 2:  # a one-line gap is not worth "[...]"
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def quote_line(line: HunkLine) -> str:
    """`> ` + the diff marker + the line, tabs kept: a quoted patch must stay a patch."""
    return f"> {line.kind.value}{line.text}".rstrip("\r\n")


def file_header(diff: FileDiff) -> list[str]:
    old = f"a/{diff.old_path}" if diff.old_path else "/dev/null"
    new = f"b/{diff.new_path}" if diff.new_path else "/dev/null"
    a = diff.old_path or diff.new_path or ""
    b = diff.new_path or diff.old_path or ""
    return [f"> diff --git a/{a} b/{b}", f"> --- {old}", f"> +++ {new}"]


def quote_hunk(
    files: Sequence[FileDiff],
    file_index: int,
    hunk_index: int,
    line_indexes: Sequence[int],
    *,
    with_file_header: bool = True,
) -> list[str]:
    """One hunk `> `-quoted: header lines, then the spans around `line_indexes`."""
    diff = files[file_index]
    hunk = diff.hunks[hunk_index]
    out = file_header(diff) if with_file_header else []
    out.append(f"> {hunk.header}")
    if not hunk.lines:
        return out
    if len(hunk.lines) <= WHOLE_HUNK_LINES:
        spans = [(0, len(hunk.lines) - 1)]
    else:
        spans = [
            _trim_blank(hunk, lo, hi)
            for lo, hi in _merge([_window(hunk, i) for i in line_indexes or [_first_changed(hunk)]])
        ]
    for lo, hi in spans:
        if lo > 0 and out[-1] != ELIDED:
            out.append(ELIDED)
        out += [quote_line(ln) for ln in hunk.lines[lo : hi + 1]]
        if hi < len(hunk.lines) - 1:
            out.append(ELIDED)
    return out


def group_anchors(anchors: Sequence[Anchor]) -> list[tuple[int, int, list[int]]]:
    """Anchors grouped per hunk, in patch order: (file index, hunk index, line indexes)."""
    by_hunk: dict[tuple[int, int], list[int]] = {}
    for a in anchors:
        by_hunk.setdefault((a.file_index, a.hunk_index), []).append(a.line_index)
    return [(fi, hi, lines) for (fi, hi), lines in sorted(by_hunk.items())]


def quote(files: Sequence[FileDiff], anchors: Sequence[Anchor]) -> list[str]:
    """`> `-quoted lines for every anchored hunk, in patch order, trimmed around anchors."""
    out: list[str] = []
    last_file: int | None = None
    for fi, hi, lines in group_anchors(anchors):
        if fi == last_file and out and out[-1] != ELIDED:
            out.append(ELIDED)
        out += quote_hunk(files, fi, hi, lines, with_file_header=fi != last_file)
        last_file = fi
    return out
