"""A get that used to be limited by its count, now taken without the limit.

`get-limit-dropped` (MMLC002): the function called a helper on an object that
took a reference only while the object's count stayed under a limit
(`if (kref_read(&n->kref) < REFCOUNT_MAX) { n_get(n); return n; }`, otherwise
a fresh copy); the patch stops calling the helper and takes the reference
itself, with no such test. A count that reaches its limit saturates
(refcount_t) or wraps (atomics), and a saturated count never drops back to
zero: the object leaks, or a wrapped one is freed while still used.

Count reads are the vocabulary's `count_read` role (`kref_read()`,
`refcount_read()`, `page_ref_count()`...); a limit is a relational test of one
against a constant. A get is the vocabulary's `get` role or a lifecycle name
(`*_get`, bot.analyze.infer). The same change inside one function is
`get-now-unconditional` (bot.analyze.hoisted). Registered into
bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re

from bot.analyze.flow import Call, Flow, base_name
from bot.analyze.naming import split_verb
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side, _loc

_RELATION = re.compile(r"(?<![<>=!])(?:<=?|>=?)(?![<>=])")
_CONSTANT = re.compile(r"\b(?:[A-Z][A-Z0-9_]*|\d+)\b")
_CALLED = re.compile(r"([A-Za-z_]\w*)\s*\(")


def _is_get(env: Env, call: Call) -> bool:
    if any(r.role == "get" for r in env.vocab.roles_of(call.name)):
        return True
    verb = split_verb(call.name)
    return verb is not None and verb[0] == "get"


def _limit(env: Env, cond: str) -> bool:
    """`cond` compares a count read with a constant (`kref_read(&x->kref) <
    REFCOUNT_MAX`, `page_ref_count(page) <= 0`)."""
    reads = env.vocab.names_with_role("count_read")
    return (
        any(name in reads for name in _CALLED.findall(cond))
        and _RELATION.search(cond) is not None
        and _CONSTANT.search(_CALLED.sub("(", cond)) is not None
    )


def _limited_get(env: Env, helper: Flow, param: str) -> tuple[Call, str] | None:
    """The get `helper` makes on `param` under a count limit, and that limit."""
    for k in helper.calls:
        if not _is_get(env, k) or not k.args or base_name(k.args[0]) != param:
            continue
        guard = next((g for g in k.guards if _limit(env, g)), None)
        if guard is not None:
            return k, guard
    return None


def _dropped_helper(
    env: Env, pre: Side, get: Call, obj: str, still: set[str]
) -> tuple[Call, Call, str] | None:
    """The call the patch removed that passed `obj` to a helper taking its
    reference under a count limit: (that call, the helper's get, the limit)."""
    for c in pre.flow.calls if pre.flow is not None else ():
        if c.line not in pre.removed_lines or c.name in still or c.name == get.name:
            continue
        idx = next((i for i, a in enumerate(c.args) if base_name(a) == obj), None)
        if idx is None:
            continue
        for helper in pre.view.definitions(c.name, pre.file):
            if idx < len(helper.params) and helper.params[idx]:
                found = _limited_get(env, helper, helper.params[idx])
                if found is not None:
                    return c, found[0], found[1]
    return None


def get_limit_dropped(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A reference the function now takes itself, without the count limit the
    helper it stopped calling took it under."""
    if pre.flow is None or post.flow is None or pre.flow.name != post.flow.name:
        return []
    if not pre.removed_lines or not post.removed_lines:
        return []
    still = {c.name for c in post.flow.calls}
    hits: list[Hit] = []
    for g in post.flow.calls:
        if g.line not in post.removed_lines or not g.args or not _is_get(env, g):
            continue
        if any(_limit(env, cond) for cond in g.guards):
            continue
        obj = base_name(g.args[0])
        dropped = _dropped_helper(env, pre, g, obj, still)
        if dropped is None:
            continue
        c, inner, guard = dropped
        hits.append(
            Hit(
                key=("get-limit-dropped", g.name, obj),
                line=g.line,
                removed_line=c.line,
                fields={
                    "function": post.flow.name,
                    "object": obj,
                    "call": g.text,
                    "helper": c.name,
                    "condition": guard,
                },
                evidence=(
                    f"before: `{c.text}` at {_loc(pre.file, c)}; {c.name}() took "
                    f"the reference with `{inner.text}` only while `{guard}`",
                    f"after: `{g.text}` at {_loc(post.file, g)}, with no such test",
                ),
                variant="get-limit-dropped",
            )
        )
    return hits


MATCHERS["get-limit-dropped"] = Matcher(
    "get-limit-dropped", "change", get_limit_dropped, get_limit_dropped.__doc__ or ""
)

__all__ = ["get_limit_dropped"]
