"""Ownership matchers that compare what a function sets up before and after a patch.

`init-removed`: a reference count's initialisation (`kref_init`, `refcount_set`,
`percpu_ref_init`, or any call the vocabulary gives the `init` role in a
refcount family) is gone from a function, and the series sets that count up
nowhere else. The later put then tests a count that was never set: it never
reaches zero (a leak) or reaches it too early (a use after free).

A `goto` retargeted within an unwind ladder needs no matcher of its own: the
flow follows gotos, so path-reference-leak sees the release a path now skips
and double-put the one it now runs twice.

Registered into bot.analyze.rules_match.MATCHERS; rules name them in rule.yaml.
"""

from __future__ import annotations

from collections import Counter

from bot.analyze.flow import Call, Flow, norm_object
from bot.analyze.flow_source import member_tail
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side, _object_arg


def _inits(env: Env, flow: Flow) -> list[tuple[Call, str, str]]:
    """(call, family, object) of every refcount initialisation in `flow`."""
    out: list[tuple[Call, str, str]] = []
    for c in flow.calls:
        for role in env.vocab.roles_of(c.name):
            if role.role != "init" or role.kind != "refcount" or not role.balance:
                continue
            arg = _object_arg(c, role)
            if arg is not None:
                out.append((c, role.family, norm_object(arg)))
    return out


def init_removed(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A refcount initialisation the function made before the patch and no longer
    makes, with no other initialisation of that count added by the series."""
    if pre.flow is None or post.flow is None:
        return []
    after = Counter((fam, member_tail(obj)) for _, fam, obj in _inits(env, post.flow))
    hits: list[Hit] = []
    seen: set[tuple[str, str]] = set()
    for call, fam, obj in _inits(env, pre.flow):
        key = (fam, member_tail(obj))
        if after[key] > 0:
            after[key] -= 1
            continue
        if key in seen or (pre.removed_lines and call.line not in pre.removed_lines):
            continue
        seen.add(key)
        if env.series_adds(call.name, member_tail(obj), besides=pre.flow.name):
            continue
        hits.append(
            Hit(
                key=("init-removed", fam, member_tail(obj)),
                line=None,
                removed_line=call.line,
                fields={
                    "function": pre.flow.name,
                    "object": obj,
                    "removed": call.text,
                    "family": fam,
                },
                evidence=(
                    f"removed: {call.text} at {pre.file}:{call.line}",
                    f"no other {call.name}() of ...{member_tail(obj)} is added by the series",
                ),
                variant="init-removed",
            )
        )
    return hits


def matchers() -> tuple[Matcher, ...]:
    return (Matcher("init-removed", "change", init_removed, init_removed.__doc__ or ""),)


MATCHERS.update((m.name, m) for m in matchers())


__all__ = ["init_removed", "matchers"]
