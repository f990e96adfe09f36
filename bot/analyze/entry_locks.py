"""Locks a function holds when it starts: what its own code says about them.

A function that releases a lock it never took on the way there was entered with
that lock held: its callers took it (`__releases()`, a lock handed down), or,
in a partial image (a diff-only review), the function took it in lines the
diff does not show. Either way the calls before that unlock ran with the lock
held, and a patch that moves work from before the unlock to after it moves it
out of the lock. The readers of lock sections (MMLC006's free under a lock,
MMLC008's access moved out of a section) start their walks from this.

Which names are a function's parameters, when a partial image does not show
its head: the hunk header's section (`@@ ... @@ void f(struct inode *inode)`)
names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bot.analyze.api import Vocabulary
from bot.analyze.cfunc import function_name_from_section
from bot.analyze.flow import Call, Flow, norm_object
from bot.model import FileDiff

if TYPE_CHECKING:
    from bot.analyze.rules_match import Side

# Calls that take a lock by their name (wrappers the vocabulary does not list).
LOCKISH = re.compile(r"(^|_)(lock|relock|write_lock|read_lock|down_read|down_write|trylock)(_|$)")


def side_body(side: Side) -> str:
    """The text of a side's function, from its first line to its last call."""
    flow = side.flow
    if flow is None:
        return ""
    lines = side.view.lines(side.file)
    if not lines:
        return ""
    last = max((c.line for c in flow.calls), default=flow.start_line)
    return "\n".join(lines[max(flow.start_line - 1, 0) : last + 1])


__all__ = [
    "LOCKISH",
    "entry_held",
    "held_before_release",
    "held_on_entry",
    "section_params",
    "side_body",
]


def entry_held(
    flow: Flow,
    is_lock: Callable[[Call], bool],
    is_unlock: Callable[[Call], bool],
) -> dict[str, int]:
    """Lock objects that `flow` releases (a call `is_unlock` accepts, on its
    first argument) at a line no call taking the same object (`is_lock`)
    precedes -> the line of that first release. Source order stands for path
    order: an unlock in one branch and the lock in a later one do not pair."""
    taken: set[str] = set()
    out: dict[str, int] = {}
    for c in sorted(flow.calls, key=lambda c: (c.line, c.name)):
        if not c.args:
            continue
        obj = norm_object(c.args[0])
        if not obj:
            continue
        if is_unlock(c):
            if obj not in taken and obj not in out:
                out[obj] = c.line
        elif is_lock(c):
            taken.add(obj)
    return out


def held_on_entry(flow: Flow, vocab: Vocabulary) -> dict[str, int]:
    """entry_held() for the vocabulary's `lock`/`unlock` roles."""

    def role(c: Call) -> str:
        r = vocab.role_of(c.name)
        return r.role if r is not None and r.kind == "lock" else ""

    return entry_held(flow, lambda c: role(c) == "lock", lambda c: role(c) == "unlock")


def held_before_release(
    flow: Flow,
    held: Mapping[str, int],
    visited: Mapping[int, bool],
    lines: tuple[str, ...] | None,
    shown: frozenset[int] | None = None,
) -> list[int]:
    """Indexes of `flow.calls` that run with a lock of `held` (object -> line of
    its first release) held, beyond what a walk from the entry saw (`visited`:
    index -> held on every path it reached): a call the walk never reached
    (below a label hidden gotos jump to) that precedes the release; in a
    partial image (`lines`: its text, hidden lines blank) a call before the
    release with no hidden line between them, where a hidden lock could be: a
    blank line, unless `shown` (the line numbers the diff shows) has it."""
    out: list[int] = []
    for i, c in enumerate(flow.calls):
        if lines is None and i in visited:
            continue
        for end in held.values():
            if c.line < end and (lines is None or not _hidden(lines, c.line, end - 1, shown)):
                out.append(i)
                break
    return out


def _hidden(lines: tuple[str, ...], lo: int, hi: int, shown: frozenset[int] | None) -> bool:
    """Whether a line of lines[lo:hi] (line numbers lo+1..hi) is one the diff hides."""
    return any(
        not lines[j].strip() and (shown is None or j + 1 not in shown)
        for j in range(lo, min(hi, len(lines)))
    )


_PARAM_NAME = re.compile(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*$")


def section_params(diff: FileDiff | None, function: str) -> frozenset[str] | None:
    """The parameter names of `function` as a hunk header's section shows its
    head, or None when no hunk of `diff` names it with a full parameter list."""
    if diff is None:
        return None
    for hunk in diff.hunks:
        section = hunk.section.strip()
        if function_name_from_section(section) != function:
            continue
        open_at = section.find("(")
        close_at = section.rfind(")")
        if open_at < 0 or close_at < open_at:
            continue  # the header is cut before its parameter list ends
        inner = section[open_at + 1 : close_at].strip()
        if inner in ("", "void"):
            return frozenset()
        names: set[str] = set()
        for part in inner.split(","):
            m = _PARAM_NAME.search(part.strip())
            if m is not None and m.group(1) not in ("void", "..."):
                names.add(m.group(1))
        return frozenset(names)
    return None
