"""Lifecycle knowledge inferred from the code: what a function does to objects.

rules/api lists the kernel's well-known lifecycle calls (seeds and overrides).
Everything else a series calls is judged here, from two sources, so the bot
knows a subsystem's own `foo_new()`/`foo_destroy()` or a helper that ends in
`folio_put()` without anyone writing them down:

* **the body**, when the view (the series' images, the tree) has it: a
  per-function `Summary` of which parameters it releases (on every path, or on
  some), takes a reference on, or hands off (stores in a field, a global, a
  list), and whether it returns a new object or a new reference. Summaries are
  transitive through the callees the view defines, to `depth` levels, the way
  smatch and Infer keep per-function facts and apply them at call sites.
* **the name**, when no body is visible (diff-only reviews, headers): an API
  family by convention (`foo_alloc`/`foo_free`, `foo_get`/`foo_put`,
  `get_foo`/`put_foo`), accepted only when its counterpart also appears in the
  visible code, so a lone `*_get()` that is a getter stays unknown.

`extend_vocabulary` turns both into vocabulary families (`inferred:<stem>`) for
the names a series calls; the matchers then treat them like the data ones.
Nothing here names a kernel function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from bot.analyze.api import (
    GET_ROLES,
    PUT_ROLES,
    RELEASE_ROLES,
    ApiFamily,
    ApiRole,
    Vocabulary,
)
from bot.analyze.csource import lexicon
from bot.analyze.flow import Assign, Call, Event, Flow, Return, base_name, explore
from bot.analyze.flow_source import SourceView
from bot.analyze.naming import (
    ACQUIRE_VERBS,
    GET_VERBS,
    LOGGING,
    PUT_VERBS,
    REG_VERBS,
    STATE_STEM,
    STORING_CALL,
    WORD,
    counterparts,
    split_verb,
)
from bot.analyze.summaries import recorded, summarise

# Bound on names summarised per series and on (node, state) visits per body:
# summaries are cheap, but a hostile series may call thousands of names.
MAX_NAMES = 4000
_MAX_VISITS = 4000


@dataclass(frozen=True)
class Summary:
    """What one function does to its parameters and what it returns."""

    name: str
    known: bool  # a body was read (False: nothing is known)
    releases_always: frozenset[int] = frozenset()  # params released on every path out
    releases_maybe: frozenset[int] = frozenset()  # params released on some path
    release_kind: str = ""  # "put" (a reference) or "free" (the object)
    release_family: str = ""
    gets: frozenset[int] = frozenset()  # params it takes a reference on (every path)
    gets_maybe: frozenset[int] = frozenset()  # params it takes a reference on (some path)
    hands_off: frozenset[int] = frozenset()  # params it stores where others find them
    returns: str = ""  # "new" (allocated), "ref" (referenced), "" (nothing owned)
    returns_family: str = ""


_UNKNOWN = Summary(name="", known=False)


@dataclass
class Inference:
    """Summaries of the functions a series reaches, computed once per series."""

    vocab: Vocabulary
    views: tuple[SourceView, ...]
    depth: int
    visible: frozenset[str] = frozenset()  # every name called or defined in view
    _memo: dict[str, Summary] = field(default_factory=dict)
    _active: set[str] = field(default_factory=set)
    _asked: list[list[object]] = field(default_factory=list)  # see bot.analyze.summaries
    # what extend_vocabulary learnt: names given a role by body / by name, and
    # names the series calls whose body no view shows
    by_body: int = 0
    by_convention: int = 0
    unknown: int = 0

    def note(self) -> str:
        """One line on where the callees' knowledge came from ("" if nothing new)."""
        if not (self.by_body or self.by_convention or self.unknown):
            return ""
        return (
            f"lifecycle knowledge inferred from the code: {self.by_body} callee(s) from "
            f"their bodies, {self.by_convention} by API naming; {self.unknown} callee(s) "
            "with no body visible (an object passed to one is taken as handed off)"
        )

    # ------------------------------------------------------------------ bodies

    def definitions(self, name: str, near: str) -> tuple[Flow, ...]:
        for view in self.views:
            found = view.definitions(name, near)
            if found:
                return found
        return ()

    def seen_in_part(self, name: str, near: str) -> bool:
        """The body of `name` comes from a partial image (a diff-only review): the
        hunks may hide the very lines that release or take something."""
        for view in self.views:
            if view.definitions(name, near):
                return view.partial
        return False

    @recorded
    def summary(self, name: str, near: str, depth: int | None = None) -> Summary:
        """The summary of `name` (memoised per series; recursion is unknown)."""
        if name in self._memo:
            return self._memo[name]
        if name in self._active or (depth if depth is not None else self.depth) < 0:
            return _UNKNOWN
        d = self.depth if depth is None else depth
        # an empty body is a config stub (`static inline void f(...) {}` under
        # #ifndef CONFIG_X), not what the function does when it is built
        # (a view holding only the stub gives way to the next that has a body)
        flows: tuple[Flow, ...] = ()
        for view in self.views:
            flows = tuple(f for f in view.definitions(name, near) if not _stub(f))
            if flows:
                break
        if not flows:
            self._memo[name] = _UNKNOWN
            return _UNKNOWN
        self._active.add(name)
        try:
            s = summarise(self, flows[0], d)  # stored by content in bot.cache
        finally:
            self._active.discard(name)
        self._memo[name] = s
        return s

    def _callee(self, call: Call, flow: Flow, depth: int) -> Summary:
        if depth <= 0 or self.vocab.roles_of(call.name) or call.name == flow.name:
            return _UNKNOWN
        return self.summary(call.name, flow.file, depth - 1)

    def _summarise(self, flow: Flow, depth: int) -> Summary:
        # stored by bot.analyze.summaries: what this reads besides the flow, the
        # vocabulary and the depth must come through a @recorded method
        params = flow.params
        index = {p: i for i, p in enumerate(params) if p}
        release_kind = release_family = ""
        maybe: set[int] = set()
        hands: set[int] = set()
        allocated: dict[str, tuple[str, str]] = {}  # local -> (kind, family)
        escaped: set[str] = set()
        returns = returns_family = ""

        def param_of(expr: str) -> int | None:
            return index.get(base_name(expr))

        # each call's callee summary, asked once: the walk below visits a
        # call's event on every path through it
        callees: dict[int, Summary] = {}

        def callee(ev: Call) -> Summary:
            s = callees.get(id(ev))
            if s is None:
                s = callees[id(ev)] = self._callee(ev, flow, depth)
            return s

        def released_by(ev: Call) -> list[tuple[int, str, str]]:
            out: list[tuple[int, str, str]] = []
            for role in self.vocab.roles_of(ev.name):
                if role.role not in PUT_ROLES | RELEASE_ROLES or not role.balance:
                    continue
                arg = _arg(ev, role)
                i = param_of(arg) if arg is not None and _whole(arg) else None
                if i is not None:
                    kind = "put" if role.role in PUT_ROLES else "free"
                    out.append((i, kind, role.family))
            if not out:
                s = callee(ev)
                for j in s.releases_always:
                    if j < len(ev.args) and _whole(ev.args[j]):
                        i = param_of(ev.args[j])
                        if i is not None:
                            out.append((i, s.release_kind, s.release_family))
            return out

        def callee_gets(ev: Call, *, maybe: bool) -> set[int]:
            """Params a helper `ev` calls takes a reference on (always, or on
            some path with `maybe`), through the helper's own summary."""
            s = callee(ev)
            out: set[int] = set()
            for j in s.gets | s.gets_maybe if maybe else s.gets:
                if j < len(ev.args) and _whole(ev.args[j]):
                    i = param_of(ev.args[j])
                    if i is not None:
                        out.add(i)
            return out

        def got_on(ev: Call) -> set[int]:
            """Params `ev` takes a reference on unconditionally (not a tryget
            whose result a branch tests), itself or through a helper's body."""
            out: set[int] = set()
            if ev.in_condition:
                return out
            for role in self.vocab.roles_of(ev.name):
                arg = _arg(ev, role)
                if role.role == "get" and role.balance and arg is not None:
                    pg = param_of(arg)
                    if pg is not None:
                        out.add(pg)
            if not out:
                out = callee_gets(ev, maybe=False)
            return out

        # one walk: which params are released, and which referenced, on each
        # path out (a helper that does either on some paths only does neither)
        exits: list[tuple[frozenset[int], frozenset[int]]] = []
        State = tuple[frozenset[int], frozenset[int]]

        def on_event(state: State, ev: Event) -> State:
            if isinstance(ev, Call):
                released = {i for i, _, _ in released_by(ev)}
                got = got_on(ev)
                if released or got:
                    return state[0] | released, state[1] | got
            return state

        empty: State = (frozenset(), frozenset())
        complete = explore(flow, empty, on_event, on_exit=exits.append, max_visits=_MAX_VISITS)
        always = (
            frozenset.intersection(*(e[0] for e in exits)) if exits and complete else frozenset()
        )
        gets_always = (
            frozenset.intersection(*(e[1] for e in exits)) if exits and complete else frozenset()
        )
        gets_maybe = frozenset().union(*(e[1] for e in exits)) if exits else frozenset()
        # a helper that takes a reference on some of its paths (an isolation
        # that gets the page only when it was on a list) takes one maybe here too
        gets_maybe |= frozenset().union(*(callee_gets(c, maybe=True) for c in flow.calls))

        for call in flow.calls:
            for ri, kind, fam in released_by(call):
                maybe.add(ri)
                if not release_kind or kind == "free":
                    release_kind, release_family = kind, fam
            if self.vocab.roles_of(call.name):
                continue
            storing = STORING_CALL.search(call.name) and not LOGGING.search(call.name)
            for a_i, a in enumerate(call.args):
                pi = param_of(a)
                if pi is None:
                    if storing:
                        # `pagevec_add(pvec, mlock_new(page))`: what is stored is
                        # made from the parameter, and goes with its reference
                        hands.update(index[w] for w in WORD.findall(a) if w in index)
                    continue
                if storing:
                    hands.add(pi)
                    continue
                if a_i in self._callee(call, flow, depth).hands_off and _whole(a):
                    hands.add(pi)
        # events in source order (node ids follow the builder, not the text)
        ordered = sorted((ev for n in flow.nodes.values() for ev in n.events), key=lambda e: e.line)
        for ev in ordered:
            if isinstance(ev, Assign):
                rhs = " ".join(ev.rhs.split())
                pa = param_of(rhs)
                lhs_simple = re.fullmatch(r"[A-Za-z_]\w*", ev.lhs) is not None
                if pa is not None and _whole(rhs) and not lhs_simple:
                    hands.add(pa)  # stored in a field or a global
                got = self._acquired_by(rhs, flow, depth)
                if got is not None and lhs_simple:
                    allocated[ev.lhs] = got
                elif lhs_simple and ev.lhs in allocated:
                    allocated.pop(ev.lhs, None)
                for local in list(allocated):
                    if not lhs_simple and _whole(rhs) and base_name(rhs) == local:
                        escaped.add(local)
            elif isinstance(ev, Call):
                for role in self.vocab.roles_of(ev.name):
                    arg = _arg(ev, role)
                    took = role.role in GET_ROLES and role.balance and arg is not None
                    if took and (base_name(arg or "") in allocated or role.role == "get"):
                        b = base_name(arg or "")
                        if b and b not in index:
                            allocated.setdefault(b, ("ref", role.family))
                storing = not any(
                    r.role in GET_ROLES | PUT_ROLES | RELEASE_ROLES
                    for r in self.vocab.roles_of(ev.name)
                )
                if storing and STORING_CALL.search(ev.name):
                    for a in ev.args:
                        b = base_name(a)
                        if b in allocated:
                            escaped.add(b)
        for ev in ordered:
            if not isinstance(ev, Return) or not ev.expr:
                continue
            expr = " ".join(ev.expr.split())
            direct = self._acquired_by(expr, flow, depth)
            if direct is not None:
                returns, returns_family = direct
                continue
            b = base_name(expr)
            if _whole(expr) and b in allocated and b not in escaped:
                returns, returns_family = allocated[b]
        if returns and returns_family == "":
            returns_family = flow.name
        return Summary(
            name=flow.name,
            known=True,
            releases_always=always,
            releases_maybe=frozenset(maybe),
            release_kind=release_kind,
            release_family=release_family,
            gets=gets_always,
            gets_maybe=gets_maybe,
            hands_off=frozenset(hands),
            returns=returns,
            returns_family=returns_family,
        )

    def _acquired_by(self, rhs: str, flow: Flow, depth: int) -> tuple[str, str] | None:
        """(kind, family) when `rhs` is a call returning a new object or reference."""
        m = re.match(r"(?:\([^()]*\)\s*)?([A-Za-z_]\w*)\s*\(", rhs)
        if m is None:
            return None
        name = m.group(1)
        for role in self.vocab.roles_of(name):
            if role.returns_object and role.role in ("create", "get", "tryget", "lookup"):
                if role.role == "lookup" and role.kind != "refcount":
                    continue
                return ("new" if role.role == "create" else "ref", role.family)
        if self.vocab.roles_of(name):
            return None
        if depth <= 0 or name == flow.name:
            return None
        s = self.summary(name, flow.file, depth - 1)
        if s.returns:
            return s.returns, s.returns_family
        if not s.known:
            by_name = self.by_name(name)
            if by_name is not None and by_name.returns_object:
                return ("new" if by_name.role == "create" else "ref", by_name.family)
        return None

    # ------------------------------------------------------------------ names

    @recorded
    def by_name(self, name: str) -> ApiRole | None:
        """The role a bodiless name plays by convention, when its counterpart is
        visible (`foo_alloc` with `foo_free`) or it is a put, else None."""
        sv = split_verb(name)
        if sv is None:
            return None
        verb, stem = sv
        if len(stem) < 3 or STATE_STEM.search(stem):
            return None  # get_cpu_var/put_cpu_var pin preemption, not an object
        if verb not in ("put", "unref") and not any(
            c in self.visible for c in counterparts(verb, stem)
        ):
            # `put_*`/`*_put` drops a reference by the kernel's own convention, seen
            # or not; other verbs are believed only beside their counterpart
            return None
        fam = f"inferred:{stem.replace('_*_', '_')}"
        if verb in ("unregister", "remove"):
            return ApiRole(fam, "free", "destroy", 0, None)
        if (verb in ("register", "create") and verb not in ACQUIRE_VERBS) or "_*_" in stem:
            return None  # a registration on its arguments: its undo is what counts
        if verb in ACQUIRE_VERBS:
            return ApiRole(fam, "free", "create", None, None, returns_object=True)
        if verb in GET_VERBS:
            role = "tryget" if verb == "tryget" else "get"
            return ApiRole(fam, "refcount", role, 0, None)
        kind = "put" if verb in PUT_VERBS else "free"
        return ApiRole(fam, "refcount" if kind == "put" else "free", kind, 0, None)


def _plausible_by_name(role: ApiRole, name: str, flows: Iterable[Flow]) -> bool:
    """A role read off a name fits how the code calls it: a get or release on
    argument 0 is only believed for one-argument calls that are statements (a
    `*_free()` tested in a condition is a predicate, `put_user(x, p)` is not a
    put of x); registrations take several arguments by nature."""
    if role.returns_object or role.object_arg is None:
        return True
    sv = split_verb(name)
    if sv is not None and (sv[0] in REG_VERBS or sv[0] in REG_VERBS.values()):
        return True
    for f in flows:
        for c in f.calls:
            if c.name == name and (len(c.args) != 1 or c.in_condition):
                return False
    return not _result_used(name, flows)


def _silent(s: Summary) -> bool:
    """A summary that saw the function release, take, store and return nothing."""
    return not (s.releases_maybe or s.gets or s.hands_off or s.returns)


def _stub(flow: Flow) -> bool:
    """A body that calls nothing and assigns nothing (`{}`, `{ return 0; }`)."""
    return not flow.calls and not any(
        isinstance(ev, Assign) for n in flow.nodes.values() for ev in n.events
    )


def _arg(call: Call, role: ApiRole) -> str | None:
    idx = role.object_arg if role.object_arg is not None else role.work_arg
    if idx is None or idx >= len(call.args):
        return None
    return call.args[idx]


def _whole(expr: str) -> bool:
    """`expr` is a pointer itself (`x`, a cast of `x`), not a member of it."""
    e = "".join(expr.split())
    return re.fullmatch(r"(\([^()]*\))?[A-Za-z_]\w*", e) is not None


def _result_used(name: str, flows: Iterable[Flow]) -> bool:
    """Some call of `name` in `flows` has its result assigned (a getter that
    returns the object) rather than called for its effect."""
    pat = re.compile(rf"^\s*(?:\([^()]*\)\s*)?{re.escape(name)}\s*\(")
    for f in flows:
        for n in f.nodes.values():
            for ev in n.events:
                if isinstance(ev, Assign) and pat.match(ev.rhs):
                    return True
    return False


def visible_names(views: Iterable[SourceView], flows: Iterable[Flow]) -> frozenset[str]:
    """Every identifier followed by `(` in the series' texts and the given flows:
    the names a convention-based family may pair with."""
    out: set[str] = set()
    for view in views:
        for text in view.files.values():
            if text:
                out.update(lexicon(text).called)  # every `name(`, scanned once per text
    for f in flows:
        out.update(c.name for c in f.calls)
        out.add(f.name)
    return frozenset(out)


def extend_vocabulary(
    vocab: Vocabulary,
    views: Iterable[SourceView],
    flows: Iterable[Flow],
    depth: int,
    extra_visible: Iterable[str] = (),
) -> tuple[Vocabulary, Inference]:
    """`vocab` plus inferred families for every non-vocabulary name `flows` call
    (bodies first, then names), and the inference that made them."""
    flows = list(flows)
    views = tuple(views)
    inf = Inference(vocab=vocab, views=views, depth=depth)
    # one level into the callees the views define: what a helper calls is named
    # there (`get_dev_pagemap()` beside `put_dev_pagemap()`), and a put reached
    # through a helper is judged by the roles of that helper's callees too
    inner: list[Flow] = []
    looked: set[str] = set()
    for f in flows:
        for c in f.calls:
            if c.name in looked or vocab.roles_of(c.name) or len(looked) >= MAX_NAMES:
                continue
            looked.add(c.name)
            inner.extend(d for d in inf.definitions(c.name, f.file)[:1] if not _stub(d))
    inf.visible = visible_names(views, [*flows, *inner]) | frozenset(extra_visible)
    added: dict[str, list[ApiRole]] = {}
    seen: set[str] = set()
    for f in [*flows, *inner]:
        for c in f.calls:
            name = c.name
            if name in seen or vocab.roles_of(name) or len(seen) >= MAX_NAMES:
                continue
            seen.add(name)
            summary = inf.summary(name, f.file)
            role = _role_from_summary(summary, name)
            if role is not None:
                inf.by_body += 1
            elif not summary.known or (_silent(summary) and inf.seen_in_part(name, f.file)):
                inf.unknown += 1
                role = inf.by_name(name)
                if (
                    role is not None
                    and role.role in GET_ROLES
                    and _result_used(name, [*flows, *inner])
                ):
                    role = replace(role, object_arg=None, returns_object=True)
                if role is not None and not _plausible_by_name(role, name, [*flows, *inner]):
                    role = None
                if role is not None:
                    inf.by_convention += 1
            if role is not None:
                added.setdefault(name, []).append(role)
    if not added:
        return vocab, inf
    return merge(vocab, added), inf


def merge(vocab: Vocabulary, added: Mapping[str, list[ApiRole]]) -> Vocabulary:
    """`vocab` with the roles in `added` (names the data does not list)."""
    by_family: dict[str, dict[str, list[str]]] = {}
    kinds: dict[str, str] = {}
    for name, roles in sorted(added.items()):
        for r in roles:
            by_family.setdefault(r.family, {}).setdefault(r.role, []).append(name)
            kinds.setdefault(r.family, r.kind)
    families = tuple(vocab.families) + tuple(
        ApiFamily(
            name=fam,
            kind=kinds[fam],
            object=None,
            roles={role: tuple(ns) for role, ns in roles.items()},
            source="inferred",
        )
        for fam, roles in sorted(by_family.items())
    )
    by_name = dict(vocab._by_name)
    for name, roles in added.items():
        by_name[name] = tuple(by_name.get(name, ())) + tuple(roles)
    return Vocabulary(families=families, _by_name=by_name, _effects=vocab._effects)


def _role_from_summary(s: Summary, name: str) -> ApiRole | None:
    if not s.known:
        return None
    if s.returns:
        fam = f"inferred:{s.returns_family}"
        if s.returns == "new":
            return ApiRole(fam, "free", "create", None, None, returns_object=True)
        return ApiRole(fam, "refcount", "get", None, None, returns_object=True)
    if len(s.releases_always) == 1:
        (i,) = s.releases_always
        fam = f"inferred:{s.release_family or name}"
        if s.release_kind == "put":
            return ApiRole(fam, "refcount", "put", i, None)
        return ApiRole(fam, "free", "free", i, None)
    if len(s.gets) == 1 and not s.gets & s.hands_off:
        # a helper that takes a reference on a parameter and stores it (in a
        # batch, a list, a field) passes the reference on: no get for its caller
        (i,) = s.gets
        return ApiRole(f"inferred:{name}", "refcount", "get", i, None)
    return None


__all__ = [
    "MAX_NAMES",
    "Inference",
    "Summary",
    "extend_vocabulary",
    "merge",
    "split_verb",
]
