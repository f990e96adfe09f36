"""Reference and ownership matchers that walk every path of one function.

path-reference-leak, get-after-publish, double-put, put-without-get and
use-after-release (see docs/rules.md). They register themselves into
bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.analyze.api import GET_ROLES, PUT_ROLES, RELEASE_ROLES, ApiRole, Vocabulary
from bot.analyze.callee_moves import reference_moved_out_of_callee
from bot.analyze.flow import (
    Assign,
    Assume,
    Call,
    Event,
    Return,
    base_name,
    mentions,
    norm_object,
)
from bot.analyze.flow_build import LOOP_MACRO
from bot.analyze.flow_source import (
    container_of_arg,
)
from bot.analyze.infer import Summary
from bot.analyze.rules_match import (
    _LOGGING,
    _STORING_CALL,
    MATCHERS,
    Env,
    Hit,
    Matcher,
    Side,
    _alias_source,
    _aliases,
    _cond_polarity,
    _drop_call,
    _globals_of,
    _is_null_test,
    _object_arg,
    _PathHits,
)


@dataclass(frozen=True)
class _Held:
    obj: str
    family: str
    api: str
    line: int
    aliases: frozenset[str]
    kind: str = "ref"  # "ref": a reference taken; "new": an object this function made


def path_reference_leak(env: Env, side: Side, other: Side) -> list[Hit]:
    """A reference taken into a local (get, successful tryget, iterator) that some
    path returns without dropping, storing or returning (an iterator left by `break`
    without its *_iter_break is one)."""
    flow = side.flow
    if flow is None:
        return []
    vocab = env.vocab
    hits = _PathHits(flow)
    Links = frozenset[tuple[str, str]]  # `a = b` between locals, still in force
    State = tuple[frozenset[_Held], frozenset[tuple[str, str, str, int]], Links]

    globals_ = _globals_of(side)

    def acquire(
        held: frozenset[_Held], links: Links, obj: str, role: ApiRole, call: Call
    ) -> frozenset[_Held]:
        b = base_name(obj)
        if not b or b in flow.params or not re.fullmatch(r"[A-Za-z_]\w*", obj):
            return held  # references on parameters or fields belong to someone else
        if b in globals_:
            return held  # a global's count or object is owned by the file, not the call
        # names that already hold the same pointer (`css = pos;` before the tryget)
        same = {x for x, y in links if y == obj} | {y for x, y in links if x == obj}
        kind = "new" if role.role == "create" else "ref"
        return held | {_Held(obj, role.family, call.name, call.line, frozenset({obj, *same}), kind)}

    def release_matching(held: frozenset[_Held], arg: str, family: str | None) -> frozenset[_Held]:
        out = set(held)
        for h in held:
            if (family is None or h.family == family) and any(mentions(arg, a) for a in h.aliases):
                out.discard(h)
        return frozenset(out)

    def on_event(state: State, ev: Event) -> State:
        held, pending, links = state
        if isinstance(ev, Call):
            all_roles = vocab.roles_of(ev.name)
            roles = [r for r in all_roles if r.balance and r.kind in _OWNED_KINDS]
            for role in roles:
                if role.role == "iter":
                    for a in ev.args:
                        held = release_matching(held, a, role.family)
                if role.role in PUT_ROLES or role.role in RELEASE_ROLES:
                    arg = _object_arg(ev, role)
                    if arg is not None:
                        held = release_matching(held, arg, None)
                    continue
                if role.role == "create" and role.returns_object:
                    pending = pending | {(ev.text, role.family, ev.name, ev.line)}
                    continue
                if role.role in ("get", "tryget", "iter"):
                    if role.returns_object:
                        pending = pending | {(ev.text, role.family, ev.name, ev.line)}
                        continue
                    arg = _object_arg(ev, role)
                    if arg is None:
                        continue
                    obj = container_of_arg(arg)
                    if role.role == "tryget" and ev.in_condition:
                        pending = pending | {(ev.text, role.family, ev.name, ev.line)}
                        continue
                    held = acquire(held, links, obj, role, ev)
            if not all_roles:
                # a helper of this tree that returns a reference is a get
                fam = env.helper_returns_ref(ev, side.view, side.file)
                if fam:
                    pending = pending | {(ev.text, fam, ev.name, ev.line)}
                released = env.helper_releases(ev, side.view, side.file) if held else frozenset()
                for i in released:
                    if i < len(ev.args):
                        held = release_matching(held, ev.args[i], None)
                if _STORING_CALL.search(ev.name):
                    for h in list(held):
                        if any(any(mentions(a, al) for al in h.aliases) for a in ev.args):
                            held = held - {h}
            if all(r.returns_object for r in all_roles):
                # a constructor may also take over what it is given (`name`)
                held = _handed_off(env, side, ev, held)
            return held, pending, links
        if isinstance(ev, Assign):
            lhs = ev.lhs
            simple = re.fullmatch(r"[A-Za-z_]\w*", lhs) is not None
            if simple:
                links = frozenset(p for p in links if lhs not in p)
                src = _alias_source(ev.rhs)
                if src and src != lhs:
                    links = links | {(lhs, src)}
            for h in list(held):
                if any(_aliases(ev.rhs, a) for a in h.aliases):
                    if simple and lhs not in globals_:
                        held = (held - {h}) | {
                            _Held(h.obj, h.family, h.api, h.line, h.aliases | {lhs}, h.kind)
                        }
                    else:
                        # stored in a structure or a global: someone else owns it
                        held = held - {h}
                elif simple and lhs in h.aliases:
                    rest = h.aliases - {lhs}
                    held = held - {h}
                    if rest:
                        held = held | {_Held(h.obj, h.family, h.api, h.line, rest)}
                    elif side.shows(h.line, ev.line) and not _manages_refs(vocab, ev.rhs):
                        overwritten(h, ev)
            # after the kills above: `x = iter(root, x)` re-takes what it dropped
            for text, family, api, line in list(pending):
                if text in "".join(ev.rhs.split()) or text in ev.rhs:
                    pending = pending - {(text, family, api, line)}
                    if simple and lhs not in flow.params and lhs not in globals_:
                        made = any(r.role == "create" for r in vocab.roles_of(api))
                        held = held | {
                            _Held(
                                lhs, family, api, line, frozenset({lhs}), "new" if made else "ref"
                            )
                        }
            return held, pending, links
        if isinstance(ev, Return):
            leave(held, ev.expr, ev.line)
            return frozenset(), frozenset(), links
        return state

    last_line = max((c.line for c in flow.calls), default=flow.start_line)

    def overwritten(h: _Held, ev: Assign) -> None:
        """The last name holding the reference gets a new value (the loop's next
        turn, `x = other`) while the reference is still held: nothing can drop it."""
        loop = LOOP_MACRO.search(ev.rhs.split("(")[0]) is not None
        how = "the loop's next turn" if loop else f"`{ev.lhs} = {' '.join(ev.rhs.split())}`"
        hits.add(
            ("leak-overwritten", h.family, h.obj),
            ev.line,
            {
                "object": h.obj,
                "get": h.api,
                "get_line": str(h.line),
                "overwrite": how,
                "family": h.family,
                "drop": _drop_call(vocab, h.family),
            },
            (
                f"{h.api}() at {side.file}:{h.line} takes a reference on {h.obj}",
                f"{how} at {side.file}:{ev.line} replaces {h.obj} while the reference "
                "is still held, not dropped, stored or returned",
            ),
        )

    def leave(held: frozenset[_Held], expr: str | None, line: int | None) -> None:
        """The function returns `expr` (None: falls off its end) holding `held`."""
        for h in held:
            if expr and any(mentions(expr, a) for a in h.aliases):
                continue
            if line is not None and not side.shows(h.line, line):
                continue  # the path crosses lines the diff does not show
            ret = " ".join((expr or "").split())
            # an object this function made is keyed by what leaks, not by the
            # exit's text: a path added beside one that already leaked it is the
            # same problem, not a new one
            key = (
                ("leak", h.family, h.obj, ret) if h.kind == "ref" else ("leak-new", h.family, h.obj)
            )
            exit_text = f"return {ret}".strip() if expr is not None else "the end of the function"
            hits.add(
                key,
                line if line is not None else last_line,
                {
                    "object": h.obj,
                    "get": h.api,
                    "get_line": str(h.line),
                    "exit": exit_text,
                    "family": h.family,
                    "drop": _drop_call(vocab, h.family),
                },
                (
                    f"{h.api}() at {side.file}:{h.line} "
                    + ("takes a reference on " if h.kind == "ref" else "returns a new ")
                    + h.obj,
                    f"the path leaving at {side.file}:{line if line is not None else last_line} "
                    f"({exit_text}) does not drop, free, store or return it",
                ),
            )

    def on_exit(state: State) -> None:
        # the end of a body rebuilt from hunks is where the diff stops showing it
        if side.shown_lines is None:
            leave(state[0], None, None)

    def on_assume(state: State, a: Assume) -> State | None:
        held, pending, links = state
        for text, family, api, line in list(pending):
            call = Call(api, (), line, text)
            pol = _cond_polarity(a.cond, call)
            if pol is None:
                continue
            pending = pending - {(text, family, api, line)}
            if pol == a.value:
                m = re.match(r"\w+\((.*)\)$", "".join(text.split()))
                arg = m.group(1).split(",")[0] if m else ""
                role = vocab.role_of(api)
                if role is not None and arg:
                    obj = container_of_arg(arg)
                    held = acquire(held, links, obj, role, Call(api, (arg,), line, text))
        for h in list(held):
            if _is_null_test(a.cond, h.aliases, a.value):
                held = held - {h}
        return held, pending, links

    start: State = (frozenset(), frozenset(), frozenset())
    return [
        h
        for h in hits.walk(start, on_event, on_assume=on_assume, on_exit=on_exit)
        if h.key[0] != "leak"
        or not reference_moved_out_of_callee(
            env, side, other, h.fields["object"], int(h.fields["get_line"])
        )
    ]


def _manages_refs(vocab: Vocabulary, rhs: str) -> bool:
    """The new value comes from a call of the vocabulary (an iterator that drops
    the previous position's reference as it takes the next: `mem_cgroup_iter()`,
    `for_each_mem_cgroup_tree()`), which looks after the old reference itself."""
    m = re.match(r"\s*([A-Za-z_]\w*)\s*\(", rhs)
    return m is not None and bool(vocab.roles_of(m.group(1)))


# Vocabulary kinds whose objects a function owns until it drops, frees or hands them on.
_OWNED_KINDS = frozenset({"refcount", "iter", "free"})


def _whole_ptr(arg: str, aliases: frozenset[str]) -> bool:
    """`arg` is one of `aliases` itself (or a cast of it), not a member of it."""
    a = "".join(arg.split())
    return any(re.fullmatch(rf"(\([^()]*\))?{re.escape(al)}", a) for al in aliases)


def _taken_by(summary: Summary | None) -> frozenset[int]:
    """Parameters a summarised callee stores or releases (on some path)."""
    return summary.hands_off | summary.releases_maybe if summary is not None else frozenset()


def _handed_off(env: Env, side: Side, call: Call, held: frozenset[_Held]) -> frozenset[_Held]:
    """Objects this function made that `call` (no vocabulary role) takes over:
    passed whole to a callee whose body stores or releases that parameter, or
    whose body we cannot read (ownership may move; saying nothing is safer)."""
    owned = [h for h in held if h.kind == "new"]
    if not owned or _LOGGING.search(call.name):
        return held
    summary = env.infer.summary(call.name, side.file) if env.infer is not None else None
    out = set(held)
    for h in owned:
        for i, a in enumerate(call.args):
            if not _whole_ptr(a, h.aliases):
                continue
            keeps = summary is not None and summary.known
            if not keeps or i in _taken_by(summary):
                out.discard(h)
    return frozenset(out)


def get_after_publish(env: Env, side: Side, other: Side) -> list[Hit]:
    """A count or reference taken after the object was made visible to others
    (fd_install, rcu_assign_pointer, list_add_rcu...): another CPU may already have
    found it and dropped the count it expected to be there."""
    flow = side.flow
    if flow is None:
        return []
    hits = _PathHits(flow)
    State = frozenset[tuple[str, str, int]]

    def on_event(state: State, ev: Event) -> State:
        if not isinstance(ev, Call):
            return state
        for role in env.vocab.roles_of(ev.name):
            if role.role == "publish":
                return state | {(ev.name, ev.text, ev.line)}
            if role.role in ("get", "init") and role.kind in ("refcount", "counter") and state:
                arg = _object_arg(ev, role) or ""
                for pub, pub_text, pub_line in state:
                    key = ("get-after-publish", ev.name, norm_object(arg), pub)
                    hits.add(
                        key,
                        ev.line,
                        {"get": ev.text, "publish": pub_text, "object": norm_object(arg)},
                        (
                            f"{pub_text} at {side.file}:{pub_line} makes the object "
                            "visible to other tasks",
                            f"{ev.text} at {side.file}:{ev.line} only runs after that",
                        ),
                    )
        return state

    empty: State = frozenset()
    del other
    return hits.walk(empty, on_event)


# Waiting for the last users to go away (the object lives until they have).
_DRAIN_WAIT = re.compile(
    r"(wait_for_completion\w*|wait_event\w*|wait_var_event\w*|synchronize_\w+)$"
)
_CAST = re.compile(r"^\((?:const|volatile|unsigned|signed|struct|union|enum|\w)[\w\s*]*\)")


def double_put(env: Env, side: Side, other: Side) -> list[Hit]:
    """The same reference dropped twice on one path with no get in between."""
    flow = side.flow
    if flow is None:
        return []
    hits = _PathHits(flow)
    State = frozenset[tuple[str, str, int]]

    def on_event(state: State, ev: Event) -> State:
        if isinstance(ev, Assign):
            # a new value for the object, its base, or a variable in it (`page + i`
            # after `i++`: the next subpage) names another object from here on
            lhs = norm_object(ev.lhs)
            plain = re.fullmatch(r"[A-Za-z_]\w*", lhs) is not None
            return frozenset(
                s
                for s in state
                if base_name(s[0]) != base_name(ev.lhs) and not (plain and mentions(s[0], lhs))
            )
        if not isinstance(ev, Call):
            return state
        for role in env.vocab.roles_of(ev.name):
            if not role.balance or role.kind not in ("refcount", "free"):
                continue
            arg = _object_arg(ev, role)
            if arg is None:
                continue
            obj = norm_object(arg)
            if role.role == "destroy" and len(ev.args) > 1:
                # tearing down a registration: what it undoes is named by every
                # argument (`remove_group(kobj, &a)` then `(kobj, &b)` is two)
                obj = ", ".join(norm_object(a) for a in ev.args)
            obj = _CAST.sub("", obj)  # `(struct pid *)t->id` is t->id
            if re.search(r"\[[^\]]*[A-Za-z_]", obj):
                continue  # `put(ids[i])` in a loop: another element each time round
            if role.role in GET_ROLES or role.role == "create":
                return frozenset(s for s in state if s[0] != obj)
            if role.role in ("put", "free", "destroy") and not ev.in_condition:
                prev = next((s for s in state if s[0] == obj and s[1] == role.family), None)
                if prev is not None:
                    variant = "double-put" if role.role == "put" else "double-free"
                    key = (variant, role.family, obj)
                    hits.add(
                        key,
                        ev.line,
                        {"object": obj, "put": ev.name},
                        (
                            f"first release at {side.file}:{prev[2]}",
                            f"second {ev.text} at {side.file}:{ev.line}",
                        ),
                    )
                return state | {(obj, role.family, ev.line)}
        return state

    empty: State = frozenset()
    del other
    return hits.walk(empty, on_event)


def put_without_get(env: Env, side: Side, other: Side) -> list[Hit]:
    """A path that drops a reference on a local it never took on that path (an
    error path jumping to the put before the get), where the function does take
    that reference on other paths and the pointer is not known to be NULL."""
    flow = side.flow
    if flow is None:
        return []
    vocab = env.vocab

    def is_local(obj: str) -> bool:
        return re.fullmatch(r"[A-Za-z_]\w*", obj) is not None and obj not in flow.params

    # Locals this function takes a reference on somewhere: only their puts are judged.
    gettable: set[str] = set()
    get_texts: set[str] = set()
    for c in flow.calls:
        for role in vocab.roles_of(c.name):
            if not role.balance or role.kind != "refcount" or role.role not in GET_ROLES:
                continue
            if role.returns_object:
                get_texts.add(c.text)
            elif (arg := _object_arg(c, role)) is not None:
                gettable.add(container_of_arg(arg))
    for node in flow.nodes.values():
        for ev in node.events:
            if isinstance(ev, Assign) and any(t in ev.rhs for t in get_texts):
                gettable.add(ev.lhs)
    gettable = {g for g in gettable if is_local(g)}
    if not gettable:
        return []
    hits = _PathHits(flow)
    State = tuple[frozenset[str], frozenset[str]]  # (got on this path, known NULL)

    def on_event(state: State, ev: Event) -> State:
        got, nulls = state
        if isinstance(ev, Assign):
            lhs = ev.lhs
            got = got - {lhs}
            nulls = nulls - {lhs}
            if "".join(ev.rhs.split()) in ("NULL", "0"):
                nulls = nulls | {lhs}
            elif any(t in ev.rhs for t in get_texts) or _alias_source(ev.rhs) in got:
                got = got | {lhs}
            return got, nulls
        if not isinstance(ev, Call):
            return state
        for role in vocab.roles_of(ev.name):
            if not role.balance or role.kind != "refcount":
                continue
            arg = _object_arg(ev, role)
            if arg is None:
                continue
            obj = container_of_arg(arg)
            if role.role in GET_ROLES:
                got = got | {obj}
            elif role.role == "put" and not ev.in_condition and obj in gettable:
                if obj not in got and obj not in nulls:
                    key = ("put-without-get", role.family, obj)
                    hits.add(
                        key,
                        ev.line,
                        {"object": obj, "put": ev.name},
                        (
                            f"{ev.text} at {side.file}:{ev.line} drops a reference on {obj}",
                            "this path reaches it without taking one; other paths of "
                            f"{flow.name}() do",
                        ),
                    )
                got = got - {obj}
        return got, nulls

    def on_assume(state: State, a: Assume) -> State | None:
        got, nulls = state
        c = "".join(a.cond.split())
        for g in gettable:
            if (c == g and not a.value) or (c in (f"!{g}", f"{g}==NULL") and a.value):
                nulls = nulls | {g}
            elif (c == g and a.value) or (c in (f"!{g}", f"{g}==NULL") and not a.value):
                nulls = nulls - {g}
        return got, nulls

    start: State = (frozenset(), frozenset())
    del other
    return hits.walk(start, on_event, on_assume=on_assume)


# --------------------------------------------------------------------------- use after put


def use_after_release(env: Env, side: Side, other: Side) -> list[Hit]:
    """An object used (dereferenced or passed on) after a put/free/destroy of it on
    the same path."""
    flow = side.flow
    if flow is None:
        return []
    hits = _PathHits(flow)
    State = frozenset[tuple[str, str, str, int]]  # (object, api, call text, line)

    def uses(text: str, obj: str) -> bool:
        if not mentions(text, obj):
            return False
        if "->" in obj or "." in obj:
            return True
        t = "".join(text.split())
        o = norm_object(obj)
        return re.search(r"(?<![\w>.])" + re.escape(o) + r"(->|\.|\[)", t) is not None or t == o

    def on_event(state: State, ev: Event) -> State:
        if isinstance(ev, Assign):
            for s in state:
                if uses(ev.rhs, s[0]):
                    _report(s, ev.rhs, ev.line, "assignment")
            lhs = norm_object(ev.lhs)
            # A new value for the object, its base or an index in it (`table[i]`
            # after `i--`) means later text no longer names the released object.
            return frozenset(
                s
                for s in state
                if lhs not in (s[0], base_name(s[0]))
                and not (re.fullmatch(r"[A-Za-z_]\w*", lhs) and mentions(s[0], lhs))
            )
        if isinstance(ev, Return):
            for s_ in state:
                if ev.expr and uses(ev.expr, s_[0]) and re.search(r"->|\.|\[", ev.expr):
                    _report(s_, f"return {ev.expr}", ev.line, "return")
            return state
        if not isinstance(ev, Call):
            return state
        roles = env.vocab.roles_of(ev.name)
        released_here: set[str] = set()
        for role in roles:
            # Plain counters (atomic_dec) count users of something else; dropping
            # one says nothing about the lifetime of the struct they sit in.
            if not role.balance or role.kind not in ("refcount", "free", "rcu"):
                continue
            if role.role in PUT_ROLES | RELEASE_ROLES and role.role != "iter_break":
                arg = _object_arg(ev, role)
                if arg is not None:
                    released_here.add(container_of_arg(arg))
        logging = _LOGGING.match(ev.name) is not None
        if _DRAIN_WAIT.match(ev.name):
            # drop our reference, then wait for the others to drain: the object
            # outlives the wait by design (kill-and-wait teardown)
            return state
        for s in state:
            if s[0] in released_here:
                continue  # double put: another rule's business
            if ev.line == s[3]:
                # the releasing statement again, on the loop's next turn: the
                # code drops one of several references it holds each time round
                continue
            for a in ev.args:
                if logging and norm_object(a) == s[0]:
                    continue  # printing the pointer's value does not touch the object
                if uses(a, s[0]):
                    _report(s, ev.text, ev.line, ev.name)
                    break
        if ev.in_condition:
            return state  # `if (refcount_dec_and_test())`: released only on one branch
        return state | {(o, ev.name, ev.text, ev.line) for o in released_here}

    def _report(s: tuple[str, str, str, int], use: str, line: int, user: str) -> None:
        del user  # the key must survive a renamed caller (printk -> pr_err)
        key = ("use-after-release", s[1], s[0])
        hits.add(
            key,
            line,
            {"object": s[0], "release": s[2], "use": use},
            (
                f"{s[2]} at {side.file}:{s[3]} drops the object",
                f"then {use} at {side.file}:{line} still uses {s[0]}",
            ),
            variant="",
        )

    empty: State = frozenset()
    del other
    return hits.walk(empty, on_event)


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "path-reference-leak", "state", path_reference_leak, path_reference_leak.__doc__ or ""
        ),
        Matcher("get-after-publish", "state", get_after_publish, get_after_publish.__doc__ or ""),
        Matcher("double-put", "state", double_put, double_put.__doc__ or ""),
        Matcher("put-without-get", "state", put_without_get, put_without_get.__doc__ or ""),
        Matcher("use-after-release", "state", use_after_release, use_after_release.__doc__ or ""),
    )
)

__all__ = [
    "double_put",
    "get_after_publish",
    "path_reference_leak",
    "put_without_get",
    "use_after_release",
]
