"""A step a patch moves out of a callee it stops calling, into the caller.

`page_handle_poison(p)` took a reference on `p` (and kept it on purpose); a
patch calls its inner variant `__page_handle_poison(p)` instead and takes the
reference itself (`page_ref_inc(p)`). The caller now holds a reference no path
drops, exactly as it did before through the callee: nothing is introduced.

The removed callee took the same reference when its summary (its body, read
through bot.analyze.infer) says it gets that parameter on some path (a helper
that fails before the get hands its failure back: the caller's get is then
under the same test); or, when no body is
visible (a diff-only review), when the caller now calls a variant of the same
name on the object (`__foo`, `foo_locked`, `foo` for `__foo`): the patch split
the callee, and its steps went on either side of the split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.analyze.flow import Call, norm_object

if TYPE_CHECKING:  # rules_match loads the matcher modules, which import this one
    from bot.analyze.rules_match import Env, Side


def same_step_name(a: str, b: str) -> bool:
    """`a` and `b` name one step: equal without leading underscores, or one is
    the other with a suffix (`foo`, `foo_locked`)."""
    x, y = a.lstrip("_"), b.lstrip("_")
    if a == b or not x or not y:
        return False
    return x == y or x.startswith(y + "_") or y.startswith(x + "_")


def _whole_arg(call: Call, obj: str) -> int | None:
    for i, a in enumerate(call.args):
        if norm_object(a) == obj:
            return i
    return None


def reference_moved_out_of_callee(
    env: Env, side: Side, other: Side, obj: str, get_line: int
) -> bool:
    """The get at `get_line` on `obj` is one the patch moved out of a callee the
    other image called on `obj` and this one no longer calls (see above)."""
    if side.flow is None or other.flow is None or get_line not in side.removed_lines:
        return False
    here = {c.name for c in side.flow.calls}
    for gone in other.flow.calls:
        if gone.name in here or env.vocab.roles_of(gone.name):
            continue
        idx = _whole_arg(gone, obj)
        if idx is None:
            continue
        summary = env.infer.summary(gone.name, other.file) if env.infer is not None else None
        if summary is not None and summary.known:
            if idx in summary.gets | summary.gets_maybe:
                return True
            continue
        if any(
            same_step_name(c.name, gone.name) and _whole_arg(c, obj) is not None
            for c in side.flow.calls
        ):
            return True
    return False


__all__ = ["reference_moved_out_of_callee", "same_step_name"]
