"""Hunk placement with GNU patch semantics: offsets both ways, fuzz up to 2.

    locate_hunks(lines, hunks, max_fuzz) -> list[Placement]   (a dry run)
    apply_hunks(lines, hunks, max_fuzz)  -> (new lines, list[Placement])

As GNU patch does (patch.c `locate_hunk`): each hunk is searched for first at
its own line number shifted by the offset the previous hunk needed, then at
growing distances, later positions first; fuzz N ignores up to N context lines
at the start and end of the hunk (fewer when the hunk had less context there,
which only happens at the start or end of a file, where it must then match).
A hunk never moves above the end of the previous applied hunk. Lines compare
exactly. A hunk that does not fit is recorded and the rest still apply.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bot.model import Hunk, LineKind

__all__ = ["ALREADY", "MAX_FUZZ", "SEARCH_BOUND", "Placement", "apply_hunks", "locate_hunks"]

# GNU patch's default maximum fuzz; more lets a hunk land in the wrong place.
MAX_FUZZ = 2
# Reason prefix for the hunks of a file whose change is already there.
ALREADY = "already applied"
# The search's bound, proportional to its input: at most this many line
# comparisons per line of the file and of the hunks' pre-images (plus a floor).
# Real placements use a few per line; a hostile patch (hundreds of hunks of
# repeated lines against a file of the same line) needed hunks x lines x hunk
# length. Past it, the hunks not yet placed fail with SEARCH_BOUND.
WORK_PER_LINE = 256
WORK_FLOOR = 100_000
SEARCH_BOUND = "search bound reached"


class _Budget:
    """Line comparisons left for one file's search."""

    def __init__(self, lines: int, hunk_lines: int) -> None:
        self.left = WORK_FLOOR + WORK_PER_LINE * (lines + hunk_lines)

    def spend(self, n: int) -> bool:
        self.left -= n
        return self.left >= 0


@dataclass(frozen=True)
class Placement:
    """Where one hunk landed in the input (or why it did not)."""

    index: int
    applied: bool
    start: int | None = None  # 0-based input line of the hunk's first (untrimmed) line
    offset: int = 0  # start - stated start, as GNU patch reports it
    fuzz: int = 0
    prefix_trim: int = 0  # leading context lines ignored by fuzz
    suffix_trim: int = 0  # trailing context lines ignored by fuzz
    reason: str = ""


def positions(lines: Sequence[str], line: str) -> Iterator[int]:
    """Each index of `line` in `lines`, ascending (list.index does the scanning)."""
    i = -1
    while True:
        try:
            i = lines.index(line, i + 1)
        except ValueError:
            return
        yield i


@dataclass
class _Positions:
    """Where each line occurs in `lines` (0-based, ascending), found on first ask:
    a hunk search asks about a handful of lines, not every line of the file."""

    lines: Sequence[str]
    _seen: dict[str, list[int]] = field(default_factory=dict)

    _full: bool = False

    def of(self, line: str) -> list[int]:
        found = self._seen.get(line)
        if found is None and not self._full and len(self._seen) >= 8:
            # many hunks: index every line once (linear) rather than a scan each
            index: dict[str, list[int]] = {}
            for i, text in enumerate(self.lines):
                index.setdefault(text, []).append(i)
            self._seen, self._full = index, True
            found = index.get(line)
        if found is None:
            found = [] if self._full else list(positions(self.lines, line))
            self._seen[line] = found
        return found


def _context_run(hunk: Hunk, from_end: bool) -> int:
    """Context lines at the start (or end) of a hunk, before the first change."""
    lines = reversed(hunk.lines) if from_end else iter(hunk.lines)
    count = 0
    for line in lines:
        if line.kind is not LineKind.CONTEXT:
            break
        count += 1
    return count


def _old(hunk: Hunk) -> list[str]:
    return [ln.text for ln in hunk.lines if ln.kind is not LineKind.ADDED]


def _new(hunk: Hunk) -> list[str]:
    return [ln.text for ln in hunk.lines if ln.kind is not LineKind.REMOVED]


def _find(
    lines: Sequence[str],
    old: list[str],
    *,
    prefix: int,
    suffix: int,
    stated: int,
    guess: int,
    frozen: int,
    fuzz: int,
    at_line: _Positions,
    budget: _Budget,
) -> tuple[int, int, int] | bool | None:
    """Start (0-based, untrimmed) and the trims at which `old` matches with `fuzz`;
    `at_line` gives the (0-based) positions of a line in `lines`. False when the
    budget ran out before an answer."""
    n = len(lines)
    context = max(prefix, suffix)
    pfuzz = fuzz + prefix - context
    sfuzz = fuzz + suffix - context
    ptrim = max(pfuzz, 0)
    strim = max(sfuzz, 0)
    pattern = old[ptrim : len(old) - strim]
    if not pattern:
        return None
    if pfuzz < 0 and stated <= 0:
        # Less leading than trailing context: the hunk sits at the start of the file.
        starts = [0] if sfuzz >= 0 or len(old) == n else []
    elif sfuzz < 0:
        # Less trailing context: the hunk sits at the end of the file.
        starts = [n - len(old) + strim]
    else:
        # GNU order (guess, guess+1, guess-1, guess+2, ...) within [low, high], but
        # only where the pattern's first line occurs: no walk over the whole file.
        low, high = frozen - ptrim, n - len(old) + strim
        starts = [p - ptrim for p in at_line.of(pattern[0]) if low <= p - ptrim <= high]
        starts.sort(key=lambda s: (abs(s - guess), s < guess))
    first = pattern[0]
    for start in starts:
        pos = start + ptrim
        if start < 0 or pos < frozen or pos + len(pattern) > n:
            continue
        if lines[pos] == first:
            if not budget.spend(len(pattern)):
                return False
            if list(lines[pos : pos + len(pattern)]) == pattern:
                return start, ptrim, strim
    return None


def locate_hunks(
    lines: Sequence[str],
    hunks: Sequence[Hunk],
    max_fuzz: int = MAX_FUZZ,
    *,
    forward_only: bool = True,
) -> list[Placement]:
    """Where each hunk of one file would apply to `lines` (no newline characters).

    With `forward_only` (GNU `patch -N`), a first hunk that only matches reversed
    means the change is already there: every hunk of the file is skipped."""
    placements: list[Placement] = []
    last_offset = 0
    frozen = 0  # first input line a later hunk may touch
    n = len(lines)
    at_line = _Positions(lines)
    budget = _Budget(n, sum(len(h.lines) for h in hunks))
    for index, hunk in enumerate(hunks):
        old = _old(hunk)
        stated = max(hunk.source_start - 1, 0) if old else hunk.source_start
        if not old:
            # Pure insertion (a new file, or `@@ -N,0 +M,K @@`): after line N.
            where = min(max(stated + last_offset, frozen), n)
            placements.append(Placement(index, True, where, where - stated))
            last_offset = where - stated
            frozen = where
            continue
        prefix = _context_run(hunk, from_end=False)
        suffix = _context_run(hunk, from_end=True)
        found: Placement | None = None
        for fuzz in range(min(max_fuzz, max(prefix, suffix)) + 1):
            hit = _find(
                lines,
                old,
                prefix=prefix,
                suffix=suffix,
                stated=stated,
                guess=stated + last_offset,
                frozen=frozen,
                fuzz=fuzz,
                at_line=at_line,
                budget=budget,
            )
            if hit is False:
                return [*placements, *_bounded(index, len(hunks))]
            if hit is None and index == 0 and forward_only:
                back = _find(
                    lines,
                    _new(hunk),
                    prefix=prefix,
                    suffix=suffix,
                    stated=stated,
                    guess=stated,
                    frozen=frozen,
                    fuzz=fuzz,
                    at_line=at_line,
                    budget=budget,
                )
                if back is False:
                    return _bounded(0, len(hunks))
                if back:
                    reason = f"{ALREADY} (hunk 1 matches reversed); file skipped"
                    return [Placement(i, False, reason=reason) for i in range(len(hunks))]
            if hit:
                assert not isinstance(hit, bool)
                start, ptrim, strim = hit
                found = Placement(index, True, start, start - stated, fuzz, ptrim, strim)
                frozen = start + len(old) - strim
                break
        if found is None:
            placements.append(
                Placement(index, False, reason=f"context not found within fuzz {max_fuzz}")
            )
            continue
        last_offset = found.offset
        placements.append(found)
    return placements


def _bounded(first: int, total: int) -> list[Placement]:
    reason = f"{SEARCH_BOUND} ({WORK_PER_LINE} comparisons per line of input)"
    return [Placement(i, False, reason=reason) for i in range(first, total)]


def apply_hunks(
    lines: Sequence[str], hunks: Sequence[Hunk], max_fuzz: int = MAX_FUZZ
) -> tuple[list[str], list[Placement]]:
    """Apply every hunk that fits; return the new lines and where each hunk went."""
    placements = locate_hunks(lines, hunks, max_fuzz)
    out: list[str] = []
    cursor = 0
    for placement in placements:
        if not placement.applied or placement.start is None:
            continue
        hunk = hunks[placement.index]
        old = _old(hunk)
        new = _new(hunk)
        pos = placement.start + placement.prefix_trim
        out.extend(lines[cursor:pos])
        out.extend(new[placement.prefix_trim : len(new) - placement.suffix_trim])
        cursor = pos + len(old) - placement.prefix_trim - placement.suffix_trim
    out.extend(lines[cursor:])
    return out, placements
