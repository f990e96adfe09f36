"""Deferred-work, RCU and lock matchers (MMLC004, MMLC005, MMLC006).

They register themselves into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re

from bot.analyze.api import GET_ROLES, ApiRole
from bot.analyze.contract import held_on_entry
from bot.analyze.flow import (
    Assign,
    Call,
    Event,
    Flow,
    Return,
    base_name,
    mentions,
    norm_object,
)
from bot.analyze.flow_source import (
    Reached,
    SourceView,
    container_of_arg,
    lock_sites,
    reach,
)
from bot.analyze.rules_match import (
    MATCHERS,
    Env,
    Hit,
    Matcher,
    Side,
    _alias_source,
    _object_arg,
    _PathHits,
)

# --------------------------------------------------------------------------- deferred work


def _deferred(role: ApiRole) -> bool:
    return role.kind == "deferred"


def unguarded_schedule(env: Env, pre: Side, post: Side) -> list[Hit]:
    """Work (or a timer) the pre-image queued only after checking its owner is still
    live, or under the lock teardown takes, that the post-image queues without."""
    if pre.flow is None or post.flow is None:
        return []
    pre_locked = lock_sites(pre.flow, env.vocab)
    post_locked = lock_sites(post.flow, env.vocab)

    def guards(flow: Flow, locked: frozenset[int]) -> dict[tuple[str, str], list[tuple[str, Call]]]:
        out: dict[tuple[str, str], list[tuple[str, Call]]] = {}
        for i, c in enumerate(flow.calls):
            role = env.vocab.role_of(c.name)
            if role is None or not _deferred(role) or role.role != "schedule":
                continue
            arg = _object_arg(c, role) or ""
            owner = base_name(arg)
            # Only a check of the owner's own state counts as a guard; a lock alone
            # is often dropped on purpose, so it only adds to the evidence.
            g = [x for x in c.guards if owner and mentions(x, owner)]
            if g and i in locked:
                g.append("a lock held")
            out.setdefault((c.name, norm_object(arg)), []).extend((x, c) for x in (g or [""]))
        return out

    before = guards(pre.flow, pre_locked)
    after = guards(post.flow, post_locked)
    hits: list[Hit] = []
    for key, gs in after.items():
        bare = [c for g, c in gs if not g]
        if not bare:
            continue
        prev = before.get(key)
        if not prev or any(not g for g, _ in prev):
            continue
        call = bare[0]
        cond = " and ".join(dict.fromkeys(g for g, _ in prev))
        hits.append(
            Hit(
                key=("unguarded-schedule", *key),
                line=call.line,
                fields={
                    "function": post.flow.name,
                    "schedule": call.text,
                    "guard": cond,
                    "work": key[1],
                },
                evidence=(
                    f"before: {call.name}() on {key[1]} ran only with {cond}",
                    f"after: {call.text} at {post.file}:{call.line} runs without that check",
                ),
                variant="unguarded-schedule",
            )
        )
    return hits


def pending_work_at_free(env: Env, side: Side, other: Side) -> list[Hit]:
    """An object freed while work, a timer or an RCU callback on it may be pending
    (scheduled on the path, or never cancelled/flushed before the free), or work
    queued after the cancel or free that was meant to end it."""
    flow = side.flow
    if flow is None:
        return []
    vocab = env.vocab
    # Work items this function (either image) cancels or flushes: their owner's
    # free must come after the cancel.
    needs_cancel: set[str] = set()
    for fl in (flow, other.flow):
        for c in fl.calls if fl is not None else ():
            role = vocab.role_of(c.name)
            if role is not None and _deferred(role) and role.role in ("cancel", "flush"):
                arg = _object_arg(c, role)
                if arg is not None and container_of_arg(arg) != norm_object(arg):
                    needs_cancel.add(norm_object(arg))
    hits = _PathHits(flow)
    # (scheduled works, cancelled works, freed objects)
    State = tuple[frozenset[str], frozenset[str], frozenset[str]]

    def on_event(state: State, ev: Event) -> State:
        sched, cancelled, freed = state
        if isinstance(ev, Assign):
            lhs = norm_object(ev.lhs)
            return sched, cancelled, frozenset(f for f in freed if f != lhs)
        if not isinstance(ev, Call):
            return state
        for role in vocab.roles_of(ev.name):
            arg = _object_arg(ev, role)
            if arg is None:
                continue
            if _deferred(role) and role.role == "schedule":
                work = norm_object(arg)
                owner = container_of_arg(arg)
                if work in cancelled:
                    hits.add(
                        ("schedule-after-cancel", work),
                        ev.line,
                        {"work": work, "schedule": ev.text},
                        (
                            f"{ev.text} at {side.file}:{ev.line} queues {work} again after it "
                            "was cancelled on this path",
                        ),
                    )
                if owner in freed:
                    hits.add(
                        ("schedule-after-free", work),
                        ev.line,
                        {"work": work, "schedule": ev.text, "object": owner},
                        (
                            f"{ev.text} at {side.file}:{ev.line} queues work on {owner} after "
                            "it was freed on this path",
                        ),
                    )
                return sched | {work}, cancelled - {work}, freed
            if _deferred(role) and role.role in ("cancel", "flush"):
                work = norm_object(arg)
                return sched - {work}, cancelled | {work}, freed
            if role.role in ("free", "destroy") and not _deferred(role):
                obj = container_of_arg(arg) if arg.strip().startswith("&") else norm_object(arg)
                for work in sorted(sched | needs_cancel):
                    if container_of_arg("&" + work) != obj or work in cancelled:
                        continue
                    hits.add(
                        ("free-pending-work", obj, work),
                        ev.line,
                        {"object": obj, "work": work, "free": ev.text},
                        (
                            f"{ev.text} at {side.file}:{ev.line} frees {obj}",
                            f"{work} may still be pending: no cancel or flush of it before "
                            "the free on this path",
                        ),
                    )
                return sched, cancelled, freed | {obj}
        return state

    start: State = (frozenset(), frozenset(), frozenset())
    return hits.walk(start, on_event)


# --------------------------------------------------------------------------- RCU


def _strip_cast(text: str) -> str:
    """`(struct x *)f(y)` -> `f(y)`; text without spaces."""
    m = re.fullmatch(r"\([^()]*\)(.+)", text)
    return m.group(1) if m and re.match(r"\w", m.group(1)) else text


def rcu_lookup_unprotected(env: Env, side: Side, other: Side) -> list[Hit]:
    """A lookup whose result only RCU keeps alive, made outside rcu_read_lock() (and
    outside any lock that excludes its updaters), or its result used
    after rcu_read_unlock() without a tryget."""
    flow = side.flow
    if flow is None:
        return []
    if (
        # an implementation of a vocabulary lookup has the contract of the lookup
        "requires_rcu_read_lock" in env.vocab.effects_of(flow.name)
        or held_on_entry(flow, side.view, side.file, env.vocab)
    ):
        return []
    vocab = env.vocab

    # A lookup whose result the function returns (a lookup wrapper) leaves the read
    # section to its caller, as the API it wraps does.
    def bare(text: str) -> str:
        return _strip_cast("".join(text.split()))

    returned = {
        bare(e.expr)
        for n in flow.nodes.values()
        for e in n.events
        if isinstance(e, Return) and e.expr
    }
    # `return mem_cgroup_from_css(css);` hands back what `css = lookup()` found
    returned |= {src for r in returned if (src := _alias_source(r))}
    handed_back = {
        bare(e.rhs)
        for n in flow.nodes.values()
        for e in n.events
        if isinstance(e, Assign) and e.lhs in returned
    }

    def wrapper_lookup(call: Call) -> bool:
        text = "".join(call.text.split())
        return text in returned or text in handed_back

    hits = _PathHits(flow)
    # (rcu depth, locks held, looked-up vars still protected, expired vars)
    State = tuple[int, frozenset[str], frozenset[tuple[str, str]], frozenset[tuple[str, str]]]
    pending: dict[str, str] = {}

    def on_event(state: State, ev: Event) -> State:
        depth, locks, live, expired = state
        if isinstance(ev, Assign):
            for text, api in list(pending.items()):
                if text in ev.rhs and re.fullmatch(r"[A-Za-z_]\w*", ev.lhs):
                    live = live | {(ev.lhs, api)}
            expired = frozenset(e for e in expired if e[0] != ev.lhs)
            for var, api in expired:
                if mentions(ev.rhs, var) and re.search(re.escape(var) + r"\s*->", ev.rhs):
                    _use(var, api, ev.rhs, ev.line)
            return depth, locks, live, expired
        if not isinstance(ev, Call):
            return state
        for var, api in expired:
            if any(mentions(a, var) for a in ev.args):
                _use(var, api, ev.text, ev.line)
        for role in vocab.roles_of(ev.name):
            if role.role == "rcu_read_lock":
                return min(depth + 1, 3), locks, live, expired
            if role.role == "rcu_read_unlock":
                depth = max(depth - 1, 0)
                if depth == 0 and not locks:
                    expired = expired | live
                    live = frozenset()
                return depth, locks, live, expired
            # Any lock counts: a spinlock holds off the grace period, and a mutex
            # is how updaters of an ID table or xarray exclude each other.
            if role.kind == "lock" and ev.args:
                obj = norm_object(ev.args[0])
                locks = locks | {obj} if role.role == "lock" else locks - {obj}
                return depth, locks, live, expired
            if role.role in GET_ROLES:
                arg = _object_arg(ev, role) or ""
                live = frozenset(x for x in live if not mentions(arg, x[0]))
                expired = frozenset(x for x in expired if not mentions(arg, x[0]))
        if "requires_rcu_read_lock" in vocab.effects_of(ev.name):
            pending[ev.text] = ev.name
            if depth == 0 and not locks and not wrapper_lookup(ev):
                key = ("lookup-outside-rcu", ev.name)
                hits.add(
                    key,
                    ev.line,
                    {"lookup": ev.text, "lookup_name": ev.name},
                    (
                        f"{ev.text} at {side.file}:{ev.line} returns an object only RCU "
                        "keeps alive",
                        "no rcu_read_lock() (or lock) is held on this path",
                    ),
                )
        return depth, locks, live, expired

    def _use(var: str, api: str, text: str, line: int) -> None:
        key = ("rcu-use-after-unlock", api, var)
        hits.add(
            key,
            line,
            {"lookup": api, "object": var, "use": text},
            (
                f"{var} came from {api}() inside an RCU read section",
                f"{text} at {side.file}:{line} uses it after rcu_read_unlock() with no tryget",
            ),
        )

    start: State = (0, frozenset(), frozenset(), frozenset())
    del other
    return hits.walk(start, on_event)


def free_without_grace_period(env: Env, side: Side, other: Side) -> list[Hit]:
    """An object unpublished from an RCU-visible structure and freed on the same path
    without a grace period (synchronize_rcu, call_rcu, kfree_rcu)."""
    flow = side.flow
    if flow is None:
        return []
    hits = _PathHits(flow)
    State = frozenset[tuple[str, str, int]]

    def on_event(state: State, ev: Event) -> State:
        if not isinstance(ev, Call):
            return state
        for role in env.vocab.roles_of(ev.name):
            if role.role in ("grace_period", "barrier"):
                return frozenset()
            arg = _object_arg(ev, role)
            if arg is None:
                continue
            if role.role == "unpublish":
                return state | {(container_of_arg(arg), ev.text, ev.line)}
            if role.role in ("free", "destroy"):
                obj = norm_object(arg)
                for o, text, line in state:
                    if o == obj or base_name(o) == obj:
                        key = ("free-without-grace-period", ev.name, obj)
                        hits.add(
                            key,
                            ev.line,
                            {"object": obj, "free": ev.text, "unpublish": text},
                            (
                                f"{text} at {side.file}:{line} unpublishes {obj}; RCU "
                                "readers may still hold it",
                                f"{ev.text} at {side.file}:{ev.line} frees it with no "
                                "grace period in between",
                            ),
                        )
        return state

    empty: State = frozenset()
    del other
    return hits.walk(empty, on_event)


def rcu_free_downgraded(env: Env, pre: Side, post: Side) -> list[Hit]:
    """An object the pre-image freed after a grace period (kfree_rcu, call_rcu) that
    the post-image frees immediately."""
    if pre.flow is None or post.flow is None:
        return []

    def objs(flow: Flow, roles: set[str]) -> dict[str, Call]:
        out: dict[str, Call] = {}
        for c in flow.calls:
            for role in env.vocab.roles_of(c.name):
                arg = _object_arg(c, role)
                if role.role in roles and arg is not None:
                    out.setdefault(
                        container_of_arg(arg)
                        if role.role == "rcu_free" and arg.strip().startswith("&")
                        else norm_object(arg),
                        c,
                    )
        return out

    before = objs(pre.flow, {"rcu_free"})
    after_rcu = objs(post.flow, {"rcu_free", "grace_period"})
    after_free = objs(post.flow, {"free"})
    if any(env.vocab.has_role(c.name, "grace_period", "barrier") for c in post.flow.calls):
        return []
    hits: list[Hit] = []
    for obj, call in before.items():
        if obj in after_rcu or obj not in after_free:
            continue
        free = after_free[obj]
        hits.append(
            Hit(
                key=("rcu-free-downgraded", obj),
                line=free.line,
                fields={
                    "function": post.flow.name,
                    "object": obj,
                    "free": free.text,
                    "unpublish": call.text,
                },
                evidence=(
                    f"before: {call.text} freed {obj} after a grace period",
                    f"after: {free.text} at {post.file}:{free.line} frees it at once",
                ),
                variant="free-without-grace-period",
            )
        )
    return hits


# --------------------------------------------------------------------------- locks


def free_moved_out_of_lock(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A free or destroy (direct or through a helper) that the pre-image did with a
    lock held on every path, which the post-image can reach with no lock held."""
    if pre.flow is None or post.flow is None:
        return []

    def key_of(r: Reached) -> tuple[str, str]:
        # by family: `__free_foo()` under the lock, `free_foo()` after it
        return (r.role.family, norm_object(_object_arg(r.terminal, r.role) or ""))

    def final(flow: Flow, view: SourceView) -> list[Reached]:
        return [
            r
            for r in reach(flow, view, env.vocab, env.depth)
            if r.role.role in ("free", "destroy") and r.role.kind == "free"
        ]

    before: dict[tuple[str, str], list[Reached]] = {}
    for r in final(pre.flow, pre.view):
        before.setdefault(key_of(r), []).append(r)
    moved: list[Reached] = []
    for r in final(post.flow, post.view):
        prev = before.get(key_of(r))
        if r.under_lock or not prev or not all(p.under_lock for p in prev):
            continue
        if all(key_of(m) != key_of(r) for m in moved):
            moved.append(r)
    if not moved or held_on_entry(post.flow, post.view, post.file, env.vocab):
        return []
    # One finding per function: the frees reached through one unlocked call are
    # one problem, however many kfree()s the helper makes.
    first = moved[0]
    site = first.site
    frees = ", ".join(dict.fromkeys(f"{m.terminal.name}()" for m in moved))
    return [
        Hit(
            key=("free-outside-lock",),
            line=site.line,
            fields={
                "function": post.flow.name,
                "free": first.terminal.text,
                "site": site.text,
                "frees": frees,
            },
            evidence=(
                f"before: {frees} ran with a lock held on every path",
                *(
                    f"after: {m.site.text} at {post.file}:{m.site.line} reaches "
                    f"{m.terminal.text} with no lock held"
                    for m in moved[:3]
                ),
            ),
            variant="free-outside-lock",
        )
    ]


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "unguarded-schedule", "change", unguarded_schedule, unguarded_schedule.__doc__ or ""
        ),
        Matcher(
            "pending-work-at-free",
            "state",
            pending_work_at_free,
            pending_work_at_free.__doc__ or "",
        ),
        Matcher(
            "rcu-lookup-unprotected",
            "state",
            rcu_lookup_unprotected,
            rcu_lookup_unprotected.__doc__ or "",
        ),
        Matcher(
            "free-without-grace-period",
            "state",
            free_without_grace_period,
            free_without_grace_period.__doc__ or "",
        ),
        Matcher(
            "rcu-free-downgraded", "change", rcu_free_downgraded, rcu_free_downgraded.__doc__ or ""
        ),
        Matcher(
            "free-moved-out-of-lock",
            "change",
            free_moved_out_of_lock,
            free_moved_out_of_lock.__doc__ or "",
        ),
    )
)

__all__ = [
    "free_moved_out_of_lock",
    "free_without_grace_period",
    "pending_work_at_free",
    "rcu_free_downgraded",
    "rcu_lookup_unprotected",
    "unguarded_schedule",
]
