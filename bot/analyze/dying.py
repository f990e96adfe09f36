"""State bits that announce an object is going away, inferred from the code.

A flag is a *dying mark* when some function of the file sets it on an object
(`set_bit(PAGE_MIGRATED, &page->private)`) and then, further on, drops or frees
that same object (`put_page(page)`): whoever finds the object meanwhile tests
the flag to keep off it. Nothing here names a flag: the setter's own body says
what the flag means. Used by MMLC009 (`state-check-removed`): a test of such a
flag removed from a function that still works on the object (or on the object
it was found through) is a liveness check removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.analyze.api import PUT_ROLES, RELEASE_ROLES, Vocabulary
from bot.analyze.flow import Assign, Flow, base_name
from bot.analyze.flow_source import SourceView

# `test_bit(FLAG, &obj->field)` and its atomic test-and-change forms.
_FLAG_TEST = re.compile(
    r"\b(?:__)?(?:test_bit|test_and_set_bit|test_and_clear_bit)\s*\(\s*([A-Z][A-Z0-9_]*)\s*,"
    r"\s*&?\s*([A-Za-z_]\w*)"
)
_SETTERS = frozenset({"set_bit", "__set_bit", "test_and_set_bit", "set_bit_unlock"})


def flag_tests(cond: str) -> list[tuple[str, str]]:
    """(flag, object) for each flag test spelled in a condition."""
    return _FLAG_TEST.findall(cond)


def is_dying_flag(vocab: Vocabulary, view: SourceView, files: Iterable[str], flag: str) -> bool:
    """Some function of `files` sets `flag` on an object and later, in the same
    body, puts, frees or destroys that object."""
    for path in dict.fromkeys(files):
        for flow in view.flows_mentioning(path, flag):
            if _sets_then_releases(vocab, flow, flag):
                return True
    return False


def _sets_then_releases(vocab: Vocabulary, flow: Flow, flag: str) -> bool:
    calls = sorted(flow.calls, key=lambda c: c.line)
    for i, c in enumerate(calls):
        if c.name not in _SETTERS or len(c.args) < 2 or c.args[0].strip() != flag:
            continue
        obj = base_name(c.args[1])
        if obj and any(
            any(r.role in PUT_ROLES | RELEASE_ROLES for r in vocab.roles_of(d.name))
            and any(base_name(a) == obj for a in d.args)
            for d in calls[i + 1 :]
        ):
            return True
    return False


def found_through(flow: Flow, obj: str) -> set[str]:
    """`obj` and the variables it was computed from in `flow`
    (`page = virt_to_page(zhdr)` gives {page, zhdr})."""
    out = {obj}
    for n in flow.nodes.values():
        for ev in n.events:
            if isinstance(ev, Assign) and ev.lhs.strip() == obj:
                out |= set(re.findall(r"(?<![\w>.])([a-z_]\w*)\b(?!\s*\()", ev.rhs))
    return out


__all__ = ["flag_tests", "found_through", "is_dying_flag"]
