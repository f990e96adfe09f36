"""A pin replaced by a weaker reference (rule MMLC002 `pin-weakened`).

Some objects carry two counters: one that keeps what the object holds usable
(an mm_struct's users keep its address space) and one that only keeps the
structure (mm_count). In the vocabulary they are two families on the same
object type. A function that pinned the object with a tryget of the first
counter (`mmget_not_zero()`: the address space has not started going away)
and now takes the second (`mmgrab()`) instead, while it still works on the
object, no longer knows that what it works on is there: the other counter does
not stop the teardown the tryget checked for.

Reported when, in one function, the patch removes a tryget of family F on an
object (or the member a local was loaded from) and a put of F on it, adds a get
of another family G whose object type is F's, and the post-image still passes
the object to calls that are not its gets or puts.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re
from collections import Counter

from bot.analyze.api import GET_ROLES, PUT_ROLES, ApiRole
from bot.analyze.flow import Assign, Call, Flow, mentions, norm_object
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side, _object_arg

__all__ = ["pin_weakened"]

_ASKS = re.compile(r"^_*(?:test_|is_|has_|can_|atomic_read|READ_ONCE)")


def _aliases(flow: Flow, obj: str) -> set[str]:
    """`obj` and what a local named `obj` is loaded from (`mm = p->mm`), and
    the locals loaded from `obj`."""
    out = {obj}
    for n in flow.nodes.values():
        for ev in n.events:
            if not isinstance(ev, Assign):
                continue
            lhs, rhs = norm_object(ev.lhs), norm_object(ev.rhs)
            if lhs == obj and rhs:
                out.add(rhs)
            elif rhs == obj and lhs:
                out.add(lhs)
    return out


def _refcount_calls(env: Env, flow: Flow, roles: frozenset[str]) -> list[tuple[Call, ApiRole]]:
    out: list[tuple[Call, ApiRole]] = []
    for c in flow.calls:
        for r in env.vocab.roles_of(c.name):
            if r.role in roles and r.kind == "refcount" and r.balance and not r.returns_object:
                out.append((c, r))
    return out


def _object_type(env: Env, family: str) -> str:
    fam = env.vocab.family(family)
    return (fam.object or "") if fam is not None else ""


def pin_weakened(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A tryget pin and its put removed, a get of another counter of the same
    object type added, and the object still used: the pin became weaker."""
    if pre.flow is None or post.flow is None or pre.flow.name != post.flow.name:
        return []
    kept = Counter((c.name, c.args) for c in post.flow.calls)
    was = Counter((c.name, c.args) for c in pre.flow.calls)
    removed = [
        (c, r)
        for c, r in _refcount_calls(env, pre.flow, frozenset({"tryget"}))
        if kept[(c.name, c.args)] == 0
    ]
    if not removed:
        return []
    puts_gone = [
        (c, r) for c, r in _refcount_calls(env, pre.flow, PUT_ROLES) if kept[(c.name, c.args)] == 0
    ]
    added_gets = [
        (c, r) for c, r in _refcount_calls(env, post.flow, GET_ROLES) if was[(c.name, c.args)] == 0
    ]
    hits: list[Hit] = []
    for pin, role in removed:
        arg = _object_arg(pin, role)
        if arg is None:
            continue
        objs = _aliases(pre.flow, norm_object(arg)) | _aliases(post.flow, norm_object(arg))
        otype = _object_type(env, role.family)

        def on_obj(c: Call, r: ApiRole) -> bool:
            a = _object_arg(c, r)
            return a is not None and norm_object(a) in objs  # noqa: B023

        put = next((c for c, r in puts_gone if r.family == role.family and on_obj(c, r)), None)
        if put is None or not otype:
            continue
        same_family_kept = any(
            r.family == role.family and on_obj(c, r)
            for c, r in _refcount_calls(env, post.flow, GET_ROLES | PUT_ROLES)
        )
        weaker = next(
            (
                (c, r)
                for c, r in added_gets
                if r.family != role.family and _object_type(env, r.family) == otype and on_obj(c, r)
            ),
            None,
        )
        if same_family_kept or weaker is None:
            continue
        uses = [
            u
            for u in post.flow.calls
            if not any(r.kind == "refcount" for r in env.vocab.roles_of(u.name))
            and any(mentions(a, o) for a in u.args for o in objs)
        ]
        if not uses:
            continue
        # a flag test reads the structure the new reference keeps: name a call
        # that works on the object rather than one that asks about it
        use = next((u for u in uses if not _ASKS.match(u.name)), uses[0])
        obj = norm_object(arg)
        hits.append(
            Hit(
                key=("pin-weakened", role.family, obj),
                line=weaker[0].line,
                fields={
                    "function": post.flow.name,
                    "object": obj,
                    "pin": pin.text,
                    "removed": f"`{put.text}`",
                    "weaker": weaker[0].text,
                    "use": use.text,
                },
                evidence=(
                    f"removed: {pin.text} and {put.text} ({role.family})",
                    f"added: {weaker[0].text} at {post.file}:{weaker[0].line} "
                    f"({weaker[1].family}, another counter of {otype})",
                    f"still used: {use.text} at {post.file}:{use.line}",
                ),
                variant="pin-weakened",
            )
        )
    return hits


MATCHERS["pin-weakened"] = Matcher(
    "pin-weakened", "change", pin_weakened, pin_weakened.__doc__ or ""
)
