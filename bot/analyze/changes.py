"""What a series changes, as the rules read it: the lines a diff removes, adds
and shows, where a pre-image line is in the post-image, the calls the series
adds and removes, and one finding per rule and line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from bot.analyze.flow import Call
from bot.analyze.flow_source import flow_of
from bot.model import FileDiff, Finding, FunctionChange, LineKind, Status

# diff -> its changed lines: every rule asks of every file diff of a series
_CHANGED: dict[int, tuple[FileDiff, tuple[frozenset[int], frozenset[int]]]] = {}


def changed_lines(diff: FileDiff | None) -> tuple[frozenset[int], frozenset[int]]:
    """The pre-image lines `diff` removes and the post-image lines it adds."""
    if diff is None:
        return frozenset(), frozenset()
    hit = _CHANGED.get(id(diff))
    if hit is not None and hit[0] is diff:
        return hit[1]
    if len(_CHANGED) > 256:
        _CHANGED.clear()  # a worker's memo stays small: the last series' diffs
    found = _changed_lines(diff)
    _CHANGED[id(diff)] = (diff, found)
    return found


def _changed_lines(diff: FileDiff) -> tuple[frozenset[int], frozenset[int]]:
    removed = {
        hl.source_line
        for h in diff.hunks
        for hl in h.lines
        if hl.kind is LineKind.REMOVED and hl.source_line is not None
    }
    added = {
        hl.target_line
        for h in diff.hunks
        for hl in h.lines
        if hl.kind is LineKind.ADDED and hl.target_line is not None
    }
    return frozenset(removed), frozenset(added)


def shown_lines(diff: FileDiff | None) -> tuple[frozenset[int], frozenset[int]]:
    """Lines of the pre and post image the diff shows (a partial image knows
    nothing of the others)."""
    if diff is None:
        return frozenset(), frozenset()
    pre = {hl.source_line for h in diff.hunks for hl in h.lines if hl.source_line is not None}
    post = {hl.target_line for h in diff.hunks for hl in h.lines if hl.target_line is not None}
    return frozenset(pre), frozenset(post)


def post_line_of_removed(diff: FileDiff | None, pre_line: int) -> int | None:
    """The post-image line where a removed pre-image line used to be (the next
    surviving line of the hunk, else the previous one)."""
    if diff is None:
        return None
    delta = 0
    for hunk in diff.hunks:
        end = hunk.source_start + max(hunk.source_length, 1)
        if pre_line < hunk.source_start:
            break
        if pre_line >= end:
            delta = (hunk.target_start + hunk.target_length) - end
            continue
        lines = hunk.lines
        for i, hl in enumerate(lines):
            if hl.source_line != pre_line:
                continue
            if hl.kind is not LineKind.REMOVED:
                return hl.target_line
            after = next((x.target_line for x in lines[i + 1 :] if x.target_line), None)
            if after is not None:
                return after
            return next((x.target_line for x in reversed(lines[:i]) if x.target_line), None)
    return pre_line + delta


def changed_calls(
    changes: Iterable[FunctionChange],
) -> tuple[list[tuple[str, Call]], list[tuple[str, Call]]]:
    """Calls the series adds (post minus pre) and removes (pre minus post), per
    touched function: (function, call)."""
    added: list[tuple[str, Call]] = []
    removed: list[tuple[str, Call]] = []
    for ch in changes:
        pre = flow_of(ch.pre) if ch.pre is not None else None
        post = flow_of(ch.post) if ch.post is not None else None
        before = Counter((c.name, c.args) for c in pre.calls) if pre else Counter()
        after = Counter((c.name, c.args) for c in post.calls) if post else Counter()
        for c in post.calls if post else ():
            if before[(c.name, c.args)] > 0:
                before[(c.name, c.args)] -= 1
            else:
                added.append((ch.name, c))
        for c in pre.calls if pre else ():
            if after[(c.name, c.args)] > 0:
                after[(c.name, c.args)] -= 1
            else:
                removed.append((ch.name, c))
    return added, removed


def one_per_line(findings: list[Finding]) -> list[Finding]:
    """Two matchers of one rule reporting the same line of the same patch say one
    thing twice (a leak on a new exit seen by the path walk and by the path
    comparison): the first is kept, matchers running in rule.yaml's order."""
    seen: set[tuple[int | None, str, int, Status]] = set()
    out: list[Finding] = []
    for f in findings:
        if f.line is not None:
            key = (f.patch_number, f.file, f.line, f.status)
            if key in seen:
                continue
            seen.add(key)
        out.append(f)
    return out


__all__ = [
    "changed_calls",
    "changed_lines",
    "one_per_line",
    "post_line_of_removed",
    "shown_lines",
]
