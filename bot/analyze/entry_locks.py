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
from collections.abc import Callable

from bot.analyze.cfunc import function_name_from_section
from bot.analyze.flow import Call, Flow, norm_object
from bot.model import FileDiff

__all__ = ["entry_held", "section_params"]


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
