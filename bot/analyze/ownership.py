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

import re
from collections import Counter

from bot.analyze.api import PUT_ROLES, RELEASE_ROLES
from bot.analyze.flow import Assign, Call, Flow, Return, base_name, mentions, norm_object
from bot.analyze.flow_source import member_tail
from bot.analyze.naming import split_verb
from bot.analyze.rules_match import (
    _LOGGING,
    MATCHERS,
    Env,
    Hit,
    Matcher,
    Side,
    _acquisition_removed,
    _globals_of,
    _object_arg,
    calls_by_object,
)


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


def local_release_lost(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A free or destroy of an object the function holds in a local (not a
    parameter, not a global) that the patch removes, while the object stays in
    the function and nothing else on the post side frees, stores, returns or
    hands it on, and the series frees that family nowhere else."""
    if pre.flow is None or post.flow is None:
        return []
    globals_ = _globals_of(pre) | _globals_of(post)
    after = Counter((c.name, tuple(norm_object(a) for a in c.args)) for c in post.flow.calls)
    hits: list[Hit] = []
    for c in pre.flow.calls:
        for role in env.vocab.roles_of(c.name):
            if role.role not in ("free", "destroy") or role.kind != "free" or not role.balance:
                continue
            arg = _object_arg(c, role)
            if arg is None or not re.fullmatch(r"[A-Za-z_]\w*", norm_object(arg)):
                continue
            obj = norm_object(arg)
            if obj in pre.flow.params or obj in globals_:
                continue
            k = (c.name, tuple(norm_object(a) for a in c.args))
            if after[k] > 0:
                after[k] -= 1
                continue
            if pre.removed_lines and c.line not in pre.removed_lines:
                continue
            if not _still_owned(env, post, obj, _anchor(pre.flow, post.flow, c)):
                continue
            if _acquisition_removed(env, pre, post, c) or _origin_changed(env, pre, post, obj):
                continue
            if env.series_adds_role(RELEASE_ROLES, role.family, besides=pre.flow.name):
                continue
            hits.append(
                Hit(
                    key=("lost-free", role.family, obj),
                    line=None,
                    removed_line=c.line,
                    fields={
                        "function": pre.flow.name,
                        "object": obj,
                        "removed": c.text,
                        "family": role.family,
                    },
                    evidence=(
                        f"removed: {c.text} at {pre.file}:{c.line}",
                        f"{obj} is still used after the patch, and nothing there frees, "
                        "stores or returns it",
                    ),
                    variant="lost-free",
                )
            )
            break
    return hits


_CALLED = re.compile(r"([A-Za-z_]\w*)\s*\(")


def _origin_changed(env: Env, pre: Side, post: Side, obj: str) -> bool:
    """The local no longer comes from where it did: the patch removes an
    assignment that made it (an allocation, by role or by name) and what it is
    assigned now makes nothing (`page = alloc_page()` -> `page = pfn_to_page()`):
    the free went with the allocation, not lost."""
    assert pre.flow is not None and post.flow is not None

    def sources(flow: Flow) -> set[str]:
        return {
            " ".join(e.rhs.split())
            for n in flow.nodes.values()
            for e in n.events
            if isinstance(e, Assign) and norm_object(e.lhs) == obj
        }

    def makes(rhs: str) -> bool:
        for name in _CALLED.findall(rhs):
            if any(r.role in ("create", "get", "tryget") for r in env.vocab.roles_of(name)):
                return True
            sv = split_verb(name)
            if sv is not None and sv[0] in ("alloc", "new", "create", "dup", "clone", "zalloc"):
                return True
        return False

    before, after = sources(pre.flow), sources(post.flow)
    gone, new = before - after, after - before
    return any(makes(r) for r in gone) and not any(makes(r) for r in new)


def _anchor(pre: Flow, post: Flow, removed: Call) -> int:
    """The post-image line where `removed` used to run: just after the last call
    before it that both images make (0 when there is none)."""
    post_lines: dict[tuple[str, str], list[int]] = {}
    for c in post.calls:
        post_lines.setdefault((c.name, c.text), []).append(c.line)
    anchor = 0
    for c in pre.calls:
        if c.line >= removed.line:
            break
        lines = post_lines.get((c.name, c.text))
        if lines:
            anchor = max(anchor, min((n for n in lines if n >= anchor), default=anchor))
    return anchor


def _still_owned(env: Env, post: Side, obj: str, after: int) -> bool:
    """`obj` is still in the post-image, which from line `after` on neither
    releases, stores, returns nor passes it whole to another function."""
    assert post.flow is not None
    used = False
    for node in post.flow.nodes.values():
        for ev in node.events:
            if ev.line <= after:
                if isinstance(ev, Call) and any(mentions(a, obj) for a in ev.args):
                    used = True
                continue
            if isinstance(ev, Return) and ev.expr and mentions(ev.expr, obj):
                return False
            if isinstance(ev, Assign):
                if mentions(ev.rhs, obj):
                    used = True
                    if norm_object(ev.rhs) == obj:
                        return False  # aliased or stored: followed elsewhere
                if norm_object(ev.lhs) == obj:
                    used = True
            if isinstance(ev, Call) and any(mentions(a, obj) for a in ev.args):
                used = True
                roles = env.vocab.roles_of(ev.name)
                if any(r.role in RELEASE_ROLES | PUT_ROLES for r in roles):
                    return False
                whole = any(norm_object(a) == obj for a in ev.args)
                setup = any(r.role in ("create", "init") for r in roles)
                if whole and not setup and not _LOGGING.search(ev.name):
                    return False  # handed to a callee: it may own it now
    return used


_UNLINK_ROLES = frozenset({"unlink", "unpublish"})
# The calls that put an object on a list or tree by one of its members (the
# counterparts of the vocabulary's `unlink` role, which has no `link` role).
_LINK_CALL = re.compile(r"list_add\w*|hlist_add\w*|rb_link_node|list_move\w*")


def _unlinked(env: Env, flow: Flow) -> dict[str, Call]:
    """Objects `flow` takes off a list, tree or table (by base name) -> the call."""
    return calls_by_object(env, flow, _UNLINK_ROLES)


def _linkage_gone(unlink: Call, pre: Side, post: Side) -> bool:
    """The file links objects by the member `unlink` takes them off with
    (`list_add(&x->node, ...)`) before the patch and not after: the list went."""
    if not unlink.args:
        return False
    member = member_tail(norm_object(unlink.args[0]))
    if not member:
        return False
    link = re.compile(rf"\b(?:{_LINK_CALL.pattern})\s*\(\s*&[^,]*->{re.escape(member)}\b")
    pre_text, post_text = pre.view.text(pre.file) or "", post.view.text(post.file) or ""
    return link.search(pre_text) is not None and link.search(post_text) is None


def _link_removed_too(env: Env, unlink: Call) -> bool:
    """The series also removes the call that linked what `unlink` takes off
    (`list_add(&x->node, ...)` of the very `&x->node`), in any function, and
    adds none back: it stops linking the object at all, so there is nothing
    left to take it off."""
    if not unlink.args:
        return False
    target = norm_object(unlink.args[0])
    for _fn, c in env.removed:
        published = [r for r in env.vocab.roles_of(c.name) if r.role == "publish"]
        if not c.args or (not published and _LINK_CALL.fullmatch(c.name) is None):
            continue
        arg = (_object_arg(c, published[0]) if published else None) or c.args[0]
        if norm_object(arg) == target and not env.series_adds(c.name, member_tail(target)):
            return True
    return False


def unlink_removed_before_free(env: Env, pre: Side, post: Side) -> list[Hit]:
    """An object the function frees that it used to take off its list, tree or
    table first, and no longer does: whoever walks that structure next follows a
    pointer to freed memory."""
    if pre.flow is None or post.flow is None:
        return []
    before = _unlinked(env, pre.flow)
    if not before:
        return []
    after = _unlinked(env, post.flow)
    hits: list[Hit] = []
    for c in post.flow.calls:
        for role in env.vocab.roles_of(c.name):
            if role.role not in ("free", "destroy", "rcu_free") or not role.balance:
                continue
            arg = _object_arg(c, role)
            obj = base_name(arg) if arg is not None else ""
            if not obj or obj in after or obj not in before:
                continue
            unlink = before[obj]
            if pre.removed_lines and unlink.line not in pre.removed_lines:
                continue
            if _linkage_gone(unlink, pre, post) or _link_removed_too(env, unlink):
                continue  # the series stops linking these objects at all
            if env.series_adds(unlink.name, member_tail(unlink.args[0]) if unlink.args else ""):
                continue
            hits.append(
                Hit(
                    key=("unlink-removed", obj, unlink.name),
                    line=c.line,
                    fields={
                        "function": post.flow.name,
                        "object": obj,
                        "unlink": unlink.text,
                        "free": c.text,
                    },
                    evidence=(
                        f"removed: {unlink.text} at {pre.file}:{unlink.line}",
                        f"{c.text} at {post.file}:{c.line} still frees {obj}",
                    ),
                    variant="unlink-removed",
                )
            )
    return hits


def release_before_unlink(env: Env, pre: Side, post: Side) -> list[Hit]:
    """An object the function used to take off its list, tree, table or RCU
    pointer before releasing it, now released first: between the two another
    CPU can still find it through the structure and use freed memory."""
    if pre.flow is None or post.flow is None:
        return []
    pre_unlink, post_unlink = _unlinked(env, pre.flow), _unlinked(env, post.flow)
    released = RELEASE_ROLES | PUT_ROLES
    pre_rel = calls_by_object(env, pre.flow, released, balanced=True)
    post_rel = calls_by_object(env, post.flow, released, balanced=True)
    hits: list[Hit] = []
    for obj, rel in post_rel.items():
        rel_line = rel.line
        unlink = post_unlink.get(obj)
        before_unlink = pre_unlink.get(obj)
        before_rel = pre_rel.get(obj)
        if unlink is None or before_unlink is None or before_rel is None:
            continue
        if not (before_unlink.line < before_rel.line and rel_line < unlink.line):
            continue
        hits.append(
            Hit(
                key=("release-before-unlink", obj, rel.name, unlink.name),
                line=rel_line,
                fields={
                    "function": post.flow.name,
                    "object": obj,
                    "unlink": unlink.text,
                    "free": rel.text,
                },
                evidence=(
                    f"before: {before_unlink.text} came first, then {before_rel.text}",
                    f"after: {rel.text} at {post.file}:{rel_line} runs before "
                    f"{unlink.text} at {post.file}:{unlink.line}",
                ),
                variant="release-before-unlink",
            )
        )
    return hits


# Compensating actions by name: what an error path runs to take back a
# reservation, a charge or a state change before it releases the object.
_REINIT = re.compile(r"^(INIT_LIST_HEAD|INIT_HLIST_HEAD|list_del_init|list_splice_init)$")
_EMPTIES = re.compile(r"(^|_)(free|put|release|destroy|drain)(_|$)")


def list_reinit_removed(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A list head the caller owns (a parameter) that the function empties by
    freeing its entries (`free_pages_list(head)`) and used to re-initialise
    afterwards, and no longer does: the caller's head still points at the
    freed entries, and its next walk or list_add touches freed memory."""
    del env
    if pre.flow is None or post.flow is None:
        return []
    params = {p for p in pre.flow.params if p}
    kept = Counter((c.name, c.args) for c in post.flow.calls)
    hits: list[Hit] = []
    for c in pre.flow.calls:
        if not _REINIT.match(c.name) or not c.args or kept[(c.name, c.args)] > 0:
            continue
        head = norm_object(c.args[0])
        if base_name(head) not in params and pre.flow.params != ("",):
            continue
        if pre.removed_lines and c.line not in pre.removed_lines:
            continue
        empties = next(
            (
                d
                for d in post.flow.calls
                if _EMPTIES.search(d.name) and any(norm_object(a) == head for a in d.args)
            ),
            None,
        )
        if empties is None:
            continue
        hits.append(
            Hit(
                key=("list-reinit-removed", head),
                line=None,
                removed_line=c.line,
                fields={
                    "function": pre.flow.name,
                    "object": head,
                    "removed": c.text,
                    "free": empties.text,
                },
                evidence=(
                    f"removed: {c.text} at {pre.file}:{c.line}",
                    f"{empties.text} still frees what {head} links, and {head} belongs to "
                    "the caller",
                ),
                variant="list-reinit-removed",
            )
        )
    return hits


def matchers() -> tuple[Matcher, ...]:
    return (
        Matcher("init-removed", "change", init_removed, init_removed.__doc__ or ""),
        Matcher(
            "local-release-lost", "change", local_release_lost, local_release_lost.__doc__ or ""
        ),
        Matcher(
            "list-reinit-removed", "change", list_reinit_removed, list_reinit_removed.__doc__ or ""
        ),
        Matcher(
            "release-before-unlink",
            "change",
            release_before_unlink,
            release_before_unlink.__doc__ or "",
        ),
        Matcher(
            "unlink-removed-before-free",
            "change",
            unlink_removed_before_free,
            unlink_removed_before_free.__doc__ or "",
        ),
    )


MATCHERS.update((m.name, m) for m in matchers())


__all__ = [
    "init_removed",
    "list_reinit_removed",
    "local_release_lost",
    "matchers",
    "release_before_unlink",
    "unlink_removed_before_free",
]
