"""The matchers rules are written in: each finds one lifecycle shape in a function.

A rule's `rule.yaml` names matchers from `MATCHERS`; the engine runs them on the
pre- and post-image of every function a patch touches. Two kinds:

* **state** matchers (`kind="state"`) look at one image and walk its paths with an
  abstract state (references held, objects released, RCU depth, ...). The engine
  runs them on both images and compares the hits' keys: a key only after the patch
  is introduced, only before is fixed, on both sides pre-existing.
* **change** matchers (`kind="change"`) compare the two images themselves (a destroy
  the function no longer reaches, a guard that went away). Run pre->post they give
  introduced hits; run post->pre, fixed ones.

Matchers know roles and families from rules/api/, never kernel function names.
Hits carry a key without line numbers, so the same problem matches across patches.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bot.analyze.api import GET_ROLES, PUT_ROLES, RELEASE_ROLES, ApiRole, Vocabulary
from bot.analyze.contract import held_on_entry
from bot.analyze.flow import (
    Assign,
    Assume,
    Call,
    Event,
    Flow,
    Return,
    base_name,
    explore,
    mentions,
    norm_object,
)
from bot.analyze.flow_source import (
    Reached,
    SourceView,
    container_of_arg,
    lock_sites,
    member_tail,
    reach,
)
from bot.analyze.infer import Inference, Summary, declared_names, file_scope_names

# A function is a release path by name when one of these words is in it.
_RELEASE_WORDS = (
    "release", "free", "put", "destroy", "exit", "teardown", "offline", "uncharge",
    "unregister", "remove", "kill", "drop", "cleanup", "shutdown", "reap",
)  # fmt: skip
# Deferred callbacks: what they run is usually the tail of a release.
_CALLBACK_NAME = re.compile(r"(_workfn|_work_func|_work_fn|_rcu_cb|_rcu_free)$")


def _named_release(name: str) -> bool:
    """A word of the name (split at `_`) starts with a release word:
    `pool_release_pages`, `kmem_freepages`, `css_offline`; not `output_page`."""
    if _CALLBACK_NAME.search(name):
        return True
    return any(w.startswith(_RELEASE_WORDS) for w in name.lower().split("_"))


# Work items whose name says what they are for: scheduling one is scheduling destruction.
_DESTROY_WORK = re.compile(r"(destroy|release|free|reap|kill|teardown|cleanup|dealloc|offline)")
# Calls that may store a pointer they are given (so a reference passed in escapes).
_STORING_CALL = re.compile(
    r"(add|insert|install|store|assign|set|push|enqueue|publish|attach|hash|link|list_|xa_|"
    r"idr_|rb_|hlist_|rcu_assign|WRITE_ONCE|swap|replace|move)",
    re.IGNORECASE,
)
# Logging and tracing: passing a pointer to them prints its value, never uses it.
_LOGGING = re.compile(
    r"(printk|pr_\w+|dev_(err|warn|info|dbg|notice)\w*|WARN\w*|BUG\w*|trace_\w+|"
    r"seq_printf|no_printk|netdev_\w+|pr_cont)$"
)


@dataclass(frozen=True)
class Hit:
    """One match, before the engine turns it into a Finding."""

    key: tuple[str, ...]  # stable across patches: no line numbers
    line: int | None  # line in the image the matcher ran on
    fields: Mapping[str, str]  # template values
    evidence: tuple[str, ...] = ()
    variant: str = ""  # which message of the rule (rule.yaml `variants:`)
    removed_line: int | None = None  # pre-image line of a removed call (change matchers)


@dataclass
class Side:
    """One image of a touched function, and the source around it."""

    flow: Flow | None
    view: SourceView
    file: str
    # Lines of this image the patch removes (pre) or adds (post); empty when unknown.
    removed_lines: frozenset[int] = frozenset()
    # Functions the patch touches (their bodies differ between the two images).
    changed_functions: frozenset[str] = frozenset()
    # Lines of a partial image the diff shows (None: the whole image is known).
    shown_lines: frozenset[int] | None = None

    def shows(self, first: int, last: int) -> bool:
        """Every line from `first` to `last` is known on this side."""
        if self.shown_lines is None:
            return True
        lo, hi = min(first, last), max(first, last)
        return all(n in self.shown_lines for n in range(lo, hi + 1))


@dataclass
class Env:
    """What every matcher may consult."""

    vocab: Vocabulary
    depth: int
    # Calls the series adds (post minus pre, per touched function), anywhere.
    added: Sequence[tuple[str, Call]] = ()  # (function, call)
    # Summaries of the series' callees (bot.analyze.infer); None: names only.
    infer: Inference | None = None
    _helper_cache: dict[tuple[int, str], frozenset[int]] = field(default_factory=dict)
    _returns_cache: dict[tuple[int, str], str] = field(default_factory=dict)

    def series_adds(self, name: str, tail: str = "", *, besides: str = "") -> bool:
        """True when the series adds a call to `name` in a function other than
        `besides` (on an object whose last member is `tail`, when one is given)."""
        for fn, call in self.added:
            if fn == besides or call.name != name:
                continue
            if not tail or any(member_tail(a) == tail for a in call.args):
                return True
        return False

    def series_adds_role(self, roles: Iterable[str], family: str, *, besides: str = "") -> bool:
        wanted = set(roles)
        for fn, call in self.added:
            if fn == besides:
                continue
            if any(r.role in wanted and r.family == family for r in self.vocab.roles_of(call.name)):
                return True
        return False

    def helper_returns_ref(self, call: Call, view: SourceView, file: str) -> str:
        """The API family of the reference a (non-vocabulary) helper returns, by its
        body (`o = find(); kref_get(&o->ref); return o;`), or ""."""
        key = (id(view), "returns:" + call.name)
        if key in self._returns_cache:
            return self._returns_cache[key]
        family = ""
        for callee in view.definitions(call.name, file):
            returned = {
                e.expr.strip()
                for n in callee.nodes.values()
                for e in n.events
                if isinstance(e, Return) and e.expr
            }
            for c in callee.calls:
                for role in self.vocab.roles_of(c.name):
                    if role.role not in GET_ROLES or not role.balance or role.returns_object:
                        continue
                    arg = _object_arg(c, role)
                    if arg is not None and container_of_arg(arg) in returned:
                        family = role.family
        self._returns_cache[key] = family
        return family

    def helper_releases(self, call: Call, view: SourceView, file: str) -> frozenset[int]:
        """Argument indexes a (non-vocabulary) helper puts or frees, by its body."""
        key = (id(view), call.name)
        if key in self._helper_cache:
            return self._helper_cache[key]
        out: set[int] = set()
        for callee in view.definitions(call.name, file):
            for r in reach(callee, view, self.vocab, max(self.depth - 1, 0)):
                if r.role.role not in PUT_ROLES | RELEASE_ROLES:
                    continue
                arg = _object_arg(r.terminal, r.role)
                if arg is None:
                    continue
                base = base_name(arg)
                if base in callee.params:
                    out.add(callee.params.index(base))
        result = frozenset(out)
        self._helper_cache[key] = result
        return result


def _object_arg(call: Call, role: ApiRole) -> str | None:
    idx = role.object_arg if role.object_arg is not None else role.work_arg
    if idx is None or idx >= len(call.args):
        return None
    return call.args[idx]


def _loc(file: str, call: Call) -> str:
    return f"{file}:{call.line}"


# --------------------------------------------------------------------------- release paths


def _callback_names(vocab: Vocabulary, view: SourceView, file: str) -> set[str]:
    names = {cb for cbs in view.callbacks_of(vocab, file).values() for cb, _ in cbs}
    for path in [file, *view.files]:
        for flow in view.flows_in(path):
            for call in flow.calls:
                for role in vocab.roles_of(call.name):
                    if role.callback_arg is not None and role.callback_arg < len(call.args):
                        names.add(call.args[role.callback_arg].strip())
    return names


def is_release_path(flow: Flow, side: Side, env: Env) -> str:
    """Why `flow` is a release path ("" if it is not): by name, by API role, or by
    being registered as a release callback."""
    if _named_release(flow.name):
        return "its name says so"
    for call in flow.calls:
        role = env.vocab.role_of(call.name)
        if role is not None and role.role in PUT_ROLES:
            return f"it drops a reference ({call.name}())"
    if flow.name in _callback_names(env.vocab, side.view, side.file):
        return "it is registered as a release callback"
    return ""


_WHAT = {
    "destroy": "destroyed",
    "free": "freed",
    "rcu_free": "freed (after a grace period)",
}


def _destroyish(r: Reached, env: Env, view: SourceView) -> str:
    """What a reached call did to the object's lifetime (past tense, for the
    message), "" when nothing final."""
    if r.role.role in _WHAT:
        return _WHAT[r.role.role]
    if r.role.role == "schedule" and r.role.kind == "deferred":
        arg = _object_arg(r.terminal, r.role) or ""
        member = member_tail(arg)
        if member and _DESTROY_WORK.search(member):
            return "scheduled the destruction of"
        for cb, _ in view.callbacks_of(env.vocab, r.file).get(member, []):
            for fl in view.definitions(cb, r.file):
                if any(x.role.role in ("destroy", "free") for x in reach(fl, view, env.vocab, 1)):
                    return "scheduled the destruction of"
    return ""


def _terminal_key(r: Reached) -> tuple[str, str]:
    arg = _object_arg(r.terminal, r.role) or ""
    return (r.terminal.name, member_tail(arg) or norm_object(arg))


def _chain_evidence(r: Reached) -> list[str]:
    """`helper() -> inner() reached schedule_work(&x->destroy) (mm/x.c:12)`."""
    if not r.chain:
        return []
    via = " -> ".join(f"{c.name}()" for _, c in r.chain)
    return [f"{via} reached {r.terminal.text} ({r.file}:{r.terminal.line})"]


def _callback_evidence(r: Reached, env: Env, view: SourceView) -> list[str]:
    if r.role.role != "schedule":
        return []
    member = member_tail(_object_arg(r.terminal, r.role) or "")
    out: list[str] = []
    for cb, init in view.callbacks_of(env.vocab, r.file).get(member, []):
        for fl in view.definitions(cb, r.file):
            final = [x for x in reach(fl, view, env.vocab, 1) if x.role.role in ("destroy", "free")]
            if final:
                out.append(
                    f"the {member} work's callback {cb}() (bound by {init.name}() at "
                    f"{fl.file}:{init.line}) calls {final[0].terminal.name}()"
                )
                return out
    return out


def _lost(
    env: Env,
    pre: Side,
    post: Side,
    keep: Callable[[Reached], str],
    key_of: Callable[[Reached], tuple[str, ...]],
) -> list[tuple[tuple[str, ...], Reached, str]]:
    """Reached calls (filtered by `keep`) pre reaches more often than post."""
    assert pre.flow is not None and post.flow is not None
    pre_r = [(r, k) for r in reach(pre.flow, pre.view, env.vocab, env.depth) if (k := keep(r))]
    # One level deeper after the patch: a refactor that adds a wrapper must not
    # push the same put or destroy past the horizon and look like a loss.
    post_r = [
        (r, k) for r in reach(post.flow, post.view, env.vocab, env.depth + 1) if (k := keep(r))
    ]
    # A helper still called after the patch but whose post-image body we cannot
    # read (diff-only, outside the hunks) tells nothing: judge only chains whose
    # every hop is readable on both sides.
    post_names = {c.name for c in post.flow.calls}

    def judgeable(r: Reached) -> bool:
        if not r.chain or r.site.name not in post_names:
            return True
        return all(post.view.definitions(c.name, post.file) for _, c in r.chain)

    pre_r = [(r, k) for r, k in pre_r if judgeable(r)]
    before = Counter(key_of(r) for r, _ in pre_r)
    after = Counter(key_of(r) for r, _ in post_r)
    out: list[tuple[tuple[str, ...], Reached, str]] = []
    if len(post_r) >= len(pre_r):
        return out  # as many final calls as before: moved or replaced, not lost
    for key, n in before.items():
        if after.get(key, 0) >= n:
            continue
        # the reached call whose top-level site is gone from post, else the first
        post_sites = Counter(
            (c.name, tuple(norm_object(a) for a in c.args)) for c in post.flow.calls
        )
        cands = [(r, k) for r, k in pre_r if key_of(r) == key]
        pick = next(
            (
                (r, k)
                for r, k in cands
                if post_sites[(r.site.name, tuple(norm_object(a) for a in r.site.args))] == 0
            ),
            cands[0],
        )
        out.append((key, pick[0], pick[1]))
    return out


def _removed_here(pre: Side, post: Side, site: Call) -> bool:
    """The call leading to a lost destroy/put is gone from the function, or its
    helper changed in this patch: either way the patch, not the diff's cropping of
    a partial image, lost it."""
    assert post.flow is not None
    # The object must still be there after the patch: a release path that stops
    # freeing an array the patch deletes has not lost a destroy, it lost the array.
    names = _names_in(post.flow)
    bases = {base_name(a) for a in site.args} - {""}
    if bases and not bases & names:
        return False
    if all(c.name != site.name for c in post.flow.calls):
        return site.line in pre.removed_lines or not pre.removed_lines
    # Still called: only a helper the patch changed, and whose new body we can
    # read, can have stopped reaching the destroy.
    return site.name in pre.changed_functions and bool(post.view.definitions(site.name, post.file))


def _names_in(flow: Flow) -> set[str]:
    parts = [a for c in flow.calls for a in c.args]
    for node in flow.nodes.values():
        parts += [f"{e.lhs} {e.rhs}" for e in node.events if isinstance(e, Assign)]
    return set(re.findall(r"[A-Za-z_]\w*", " ".join(parts)))


def release_path_loses_destroy(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A release path stops destroying (or scheduling the destruction of) an object
    it used to, directly or through a helper, and the series adds no other destroy."""
    if pre.flow is None or post.flow is None:
        return []
    why = is_release_path(pre.flow, pre, env)
    if not why:
        return []
    hits: list[Hit] = []
    for key, r, what in _lost(
        env, pre, post, lambda r: _destroyish(r, env, pre.view), _terminal_key
    ):
        site = r.site
        if not _removed_here(pre, post, site):
            continue
        tail = member_tail(_object_arg(r.terminal, r.role) or "")
        if env.series_adds(r.terminal.name, tail, besides=pre.flow.name):
            continue
        if r.chain and env.series_adds(site.name, besides=pre.flow.name):
            continue
        evidence = [f"removed: {site.text} at {_loc(pre.file, site)}"]
        evidence += _chain_evidence(r)
        evidence += _callback_evidence(r, env, pre.view)
        evidence.append(f"{pre.flow.name}() is a release path: {why}")
        obj = _object_type(pre.flow, site)
        hits.append(
            Hit(
                key=("lost-destroy", *key),
                line=None,
                removed_line=site.line,
                fields={
                    "function": pre.flow.name,
                    "removed": site.text,
                    "removed_name": site.name,
                    "terminal": r.terminal.text,
                    "terminal_name": r.terminal.name,
                    "reached": _reached_phrase(r),
                    "what": what,
                    "object": obj,
                    "why": why,
                },
                evidence=tuple(evidence),
            )
        )
    return hits


def _reached_phrase(r: Reached) -> str:
    """`schedule_work() of its destroy work` / `kmem_cache_destroy()`."""
    if r.role.role == "schedule":
        member = member_tail(_object_arg(r.terminal, r.role) or "")
        if member:
            return f"{r.terminal.name}() of its {member} work"
    return f"{r.terminal.name}()"


def _object_type(flow: Flow, call: Call) -> str:
    """The declared type of the parameter a call passes on, e.g. `struct kmem_cache`."""
    for arg in call.args:
        b = base_name(arg)
        if b in flow.params:
            t = flow.param_types[flow.params.index(b)]
            if t:
                return t.removeprefix("struct ").strip()
    return "object"


def release_path_loses_put(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A function stops dropping a reference it used to drop (directly or through a
    helper), and the series adds no put of that family anywhere else."""
    if pre.flow is None or post.flow is None:
        return []

    def keep(r: Reached) -> str:
        if r.role.role not in PUT_ROLES or not r.role.balance:
            return ""
        # a helper that takes and drops the same kind of reference is balanced on
        # its own: no longer calling it loses no put of ours
        if r.chain and r.role.family in r.holder_gets:
            return ""
        return "put"

    hits: list[Hit] = []
    for key, r, _ in _lost(env, pre, post, keep, lambda r: (r.role.family,)):
        if env.series_adds_role(PUT_ROLES, r.role.family, besides=pre.flow.name):
            continue
        site = r.site
        if not _removed_here(pre, post, site):
            continue
        pin = _pin_removed(env, pre, post, site)
        if pin is None and _acquisition_removed(env, pre, post, site):
            continue  # the get went with the put: nothing is held any more
        evidence = [f"removed: {site.text} at {_loc(pre.file, site)}"]
        if pin is not None:
            evidence.insert(0, f"removed: {pin.text} at {_loc(pre.file, pin)}")
        evidence += _chain_evidence(r)
        hits.append(
            Hit(
                key=("lost-put" if pin is None else "pin-removed", *key),
                line=None,
                removed_line=site.line,
                fields={
                    "function": pre.flow.name,
                    "removed": site.text,
                    "terminal": r.terminal.text,
                    "terminal_name": r.terminal.name,
                    "family": r.role.family,
                    "pin": pin.text if pin is not None else "",
                },
                evidence=tuple(evidence),
                variant="lost-put" if pin is None else "pin-removed",
            )
        )
    return hits


def _acquires(env: Env, side: Side, call: Call) -> bool:
    """`call` takes a reference or makes an object (by the vocabulary, or by the
    body of a helper this view defines)."""
    for role in env.vocab.roles_of(call.name):
        if role.role in GET_ROLES or role.role in ("create", "iter", "lookup"):
            return True
    if env.infer is not None and env.infer.summary(call.name, side.file).gets:
        return True
    return bool(env.helper_returns_ref(call, side.view, side.file))


def _pin_removed(env: Env, pre: Side, post: Side, put_site: Call) -> Call | None:
    """A tryget the patch removes together with the put: a pin that kept an object
    the function does not own alive while it used it. Returns the removed tryget
    when the post-image still uses the object (the use is now unpinned)."""
    assert pre.flow is not None and post.flow is not None
    objs = {norm_object(a) for a in put_site.args} - {""}
    remaining = Counter((c.name, c.args) for c in post.flow.calls)
    for c in pre.flow.calls:
        if remaining[(c.name, c.args)] > 0:
            continue
        for role in env.vocab.roles_of(c.name):
            if role.role != "tryget" or role.returns_object:
                continue
            arg = _object_arg(c, role)
            obj = norm_object(arg) if arg is not None else ""
            if obj not in objs or ("->" not in obj and "." not in obj):
                continue  # a local's pin goes with the local
            repinned = any(
                r.role in GET_ROLES and any(mentions(a, obj) for a in u.args)
                for u in post.flow.calls
                for r in env.vocab.roles_of(u.name)
            )
            if not repinned and any(any(mentions(a, obj) for a in u.args) for u in post.flow.calls):
                return c
    return None


def _acquisition_removed(env: Env, pre: Side, post: Side, put_site: Call) -> bool:
    """The patch also removes, from this function, an acquisition of an object the
    lost put was given (`x = get(); ...; put(x)` deleted together; an
    isolate/putback pair replaced by in-place work)."""
    assert pre.flow is not None and post.flow is not None
    objs = {base_name(a) for a in put_site.args} - {""}
    remaining = Counter((c.name, c.args) for c in post.flow.calls)
    assigned: dict[str, set[str]] = {}
    for node in pre.flow.nodes.values():
        for ev in node.events:
            if isinstance(ev, Assign):
                assigned.setdefault(ev.rhs.strip(), set()).add(base_name(ev.lhs))
    for c in pre.flow.calls:
        if remaining[(c.name, c.args)] > 0 or not _acquires(env, pre, c):
            continue
        args = {base_name(a) for a in c.args}
        results = {n for rhs, ns in assigned.items() if c.text in rhs for n in ns}
        if objs & (args | results):
            return True
    return False


# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class _Held:
    obj: str
    family: str
    api: str
    line: int
    aliases: frozenset[str]
    kind: str = "ref"  # "ref": a reference taken; "new": an object this function made


def _cond_polarity(cond: str, call: Call) -> bool | None:
    """Which branch value means `call` (inside `cond`) returned true."""
    c = "".join(cond.split())
    t = "".join(call.text.split())
    if c == t:
        return True
    if c in ("!" + t, "!(" + t + ")"):
        return False
    if t in c and "||" not in c:
        return not c.startswith("!" + t)
    # `a || tryget(x)`: the true branch may not have run the tryget at all; not
    # tracking it can miss a leak but never invents one
    return None


def _is_null_test(cond: str, names: frozenset[str], value: bool) -> bool:
    """True when the branch means the object pointer is NULL."""
    c = "".join(cond.split())
    for n in names:
        if (c == n and not value) or (
            c in (f"!{n}", f"{n}==NULL", f"IS_ERR_OR_NULL({n})", f"IS_ERR({n})") and value
        ):
            return True
        if c == f"{n}!=NULL" and not value:
            return True
    return False


def _aliases(rhs: str, name: str) -> bool:
    """True when `rhs` is the same object as `name`: the name itself, a cast of it,
    a pointer into it, or a conversion helper applied to it (`*_from_*(name)`,
    `container_of(name, ...)`); a call merely using it is not."""
    r = "".join(rhs.split())
    n = re.escape(name)
    return (
        re.fullmatch(rf"(\([^()]*\))?{n}", r) is not None
        or re.fullmatch(rf"&{n}(->|\.)[\w.>-]+", r) is not None
        or re.fullmatch(rf"(container_of|\w*_(from|to)_\w*|to_\w+)\({n}(,.*)?\)", r) is not None
    )


def _drop_call(vocab: Vocabulary, family: str) -> str:
    """How a reference of `family` is given back: `mem_cgroup_iter_break()` for an
    iterator, the family's put otherwise (from the vocabulary data)."""
    fam = vocab.family(family)
    if fam is None:
        return "the matching put"
    for role in ("iter_break", "put", "dec_and_test"):
        names = fam.roles.get(role)
        if names:
            return f"{names[0]}()"
    return "the matching put"


def _alias_source(rhs: str) -> str:
    """The local `rhs` is the same pointer as, or "" (see _aliases)."""
    r = "".join(rhs.split())
    for pat in (
        r"(?:\([^()]*\))?([A-Za-z_]\w*)",
        r"&([A-Za-z_]\w*)(?:->|\.)[\w.>-]+",
        r"(?:container_of|\w*_(?:from|to)_\w*|to_\w+)\(([A-Za-z_]\w*)(?:,.*)?\)",
    ):
        m = re.fullmatch(pat, r)
        if m and m.group(1) != "NULL":
            return m.group(1)
    return ""


_S = TypeVar("_S", bound=Hashable)


class _PathHits:
    """The hits of one path-walking matcher, the first one per key: the walk meets
    the same call on many paths, and the first path found is the one reported."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._by_key: dict[tuple[str, ...], Hit] = {}

    def add(
        self,
        key: tuple[str, ...],
        line: int,
        fields: Mapping[str, str],
        evidence: tuple[str, ...],
        *,
        variant: str | None = None,
    ) -> None:
        """Record a hit on `key` (the function's name first among its fields) unless
        one is already there; its variant is the key's first part unless given."""
        if key not in self._by_key:
            self._by_key[key] = Hit(
                key=key,
                line=line,
                fields={"function": self._flow.name, **fields},
                evidence=evidence,
                variant=key[0] if variant is None else variant,
            )

    def walk(
        self,
        start: _S,
        on_event: Callable[[_S, Event], _S],
        *,
        on_assume: Callable[[_S, Assume], _S | None] | None = None,
        on_exit: Callable[[_S], None] | None = None,
    ) -> list[Hit]:
        """Walk every path of the flow from `start`, then return the hits recorded."""
        explore(self._flow, start, on_event, on_assume=on_assume, on_exit=on_exit)
        return list(self._by_key.values())


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
                    if simple:
                        held = (held - {h}) | {
                            _Held(h.obj, h.family, h.api, h.line, h.aliases | {lhs})
                        }
                    else:
                        held = held - {h}  # stored in a structure: someone else owns it
                elif simple and lhs in h.aliases:
                    rest = h.aliases - {lhs}
                    held = held - {h}
                    if rest:
                        held = held | {_Held(h.obj, h.family, h.api, h.line, rest)}
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
    del other
    return hits.walk(start, on_event, on_assume=on_assume, on_exit=on_exit)


def _globals_of(side: Side) -> frozenset[str]:
    """Names the file declares at file scope that `side`'s function does not
    declare again as locals."""
    flow = side.flow
    text = side.view.text(side.file) if flow is not None else None
    if flow is None or not text:
        return frozenset()
    lines = text.splitlines()
    last = max((c.line for c in flow.calls), default=flow.start_line)
    body = lines[max(flow.start_line - 1, 0) : last]
    return file_scope_names(text) - declared_names(body)


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


def double_put(env: Env, side: Side, other: Side) -> list[Hit]:
    """The same reference dropped twice on one path with no get in between."""
    flow = side.flow
    if flow is None:
        return []
    hits = _PathHits(flow)
    State = frozenset[tuple[str, str, int]]

    def on_event(state: State, ev: Event) -> State:
        if isinstance(ev, Assign):
            return frozenset(s for s in state if base_name(s[0]) != base_name(ev.lhs))
        if not isinstance(ev, Call):
            return state
        for role in env.vocab.roles_of(ev.name):
            if not role.balance or role.kind not in ("refcount", "free"):
                continue
            arg = _object_arg(ev, role)
            if arg is None:
                continue
            obj = norm_object(arg)
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
        for s in state:
            if s[0] in released_here:
                continue  # double put: another rule's business
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
        return (r.terminal.name, norm_object(_object_arg(r.terminal, r.role) or ""))

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


@dataclass(frozen=True)
class Matcher:
    name: str
    kind: str  # "state" | "change"
    fn: Callable[[Env, Side, Side], list[Hit]]
    doc: str


MATCHERS: dict[str, Matcher] = {
    m.name: m
    for m in (
        Matcher(
            "release-path-loses-destroy",
            "change",
            release_path_loses_destroy,
            release_path_loses_destroy.__doc__ or "",
        ),
        Matcher(
            "release-path-loses-put",
            "change",
            release_path_loses_put,
            release_path_loses_put.__doc__ or "",
        ),
        Matcher(
            "path-reference-leak", "state", path_reference_leak, path_reference_leak.__doc__ or ""
        ),
        Matcher("get-after-publish", "state", get_after_publish, get_after_publish.__doc__ or ""),
        Matcher("double-put", "state", double_put, double_put.__doc__ or ""),
        Matcher("put-without-get", "state", put_without_get, put_without_get.__doc__ or ""),
        Matcher("use-after-release", "state", use_after_release, use_after_release.__doc__ or ""),
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
}


# Matchers kept in their own modules register themselves into MATCHERS when
# imported (they import this module, so they are loaded last).
importlib.import_module("bot.analyze.ownership")

__all__ = ["MATCHERS", "Env", "Hit", "Matcher", "Side", "is_release_path"]
