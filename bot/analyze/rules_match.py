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
from bot.analyze.cscan import declared_names, file_scope_names
from bot.analyze.csource import calls_spelled, lexicon
from bot.analyze.flow import (
    Assign,
    Assume,
    Call,
    Event,
    Flow,
    Return,
    base_name,
    explore,
)
from bot.analyze.flow_source import (
    SourceView,
    container_of_arg,
    member_tail,
    reach,
)
from bot.analyze.infer import Inference
from bot.model import FileDiff

# A function is a release path by name when one of these words is in it.
_RELEASE_WORDS = (
    "release", "free", "put", "destroy", "exit", "teardown", "offline", "uncharge",
    "unregister", "remove", "kill", "drop", "cleanup", "shutdown", "reap", "evict",
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
    # The file's diff (given to "table" matchers, which read hunks, not functions).
    diff: FileDiff | None = None
    # File-scope names the function does not redeclare (computed once, _globals_of).
    _globals: frozenset[str] | None = field(default=None, repr=False, compare=False)

    def post_line(self, pre_line: int) -> int | None:
        """Where a line of the pre-image the patch keeps is in the post-image
        (None when the patch removes it, or no diff is known)."""
        return post_line_of(self.diff, pre_line) if self.diff is not None else None

    def line_text(self, line: int) -> str:
        """The stripped text of `line` of this image ("" when not there)."""
        lines = self.view.lines(self.file)
        return lines[line - 1].strip() if 0 < line <= len(lines) else ""

    def shows(self, first: int, last: int) -> bool:
        """Every line from `first` to `last` is known on this side."""
        if self.shown_lines is None:
            return True
        lo, hi = min(first, last), max(first, last)
        return all(n in self.shown_lines for n in range(lo, hi + 1))


def post_line_of(diff: FileDiff, pre_line: int) -> int | None:
    """The post-image line of pre-image line `pre_line` under `diff`: shifted by
    the hunks before it, its context line inside a hunk, None when removed."""
    delta = 0
    for h in diff.hunks:
        # an empty side (`-10,0`: insert after line 10) starts after its line
        src_end = h.source_start + (h.source_length or 1)
        tgt_end = h.target_start + (h.target_length or 1)
        if h.source_length and h.source_start <= pre_line < src_end:
            return next((hl.target_line for hl in h.lines if hl.source_line == pre_line), None)
        if pre_line < src_end:
            break
        delta = tgt_end - src_end
    return pre_line + delta


# A declaration alone on a line, `type name;` (a struct member, or a local
# variable, which is never reached through `->`/`.`): its name.
_MEMBER_DECL = re.compile(
    r"^\s+(?!(?:return|goto|case|else|do|break|continue)\b)"
    r"(?:(?:const|volatile|unsigned|signed|struct|union|enum)\s+)*[A-Za-z_]\w*[\s*]+"
    r"(?P<name>[A-Za-z_]\w*)\s*(?::\s*\w+\s*)?(?:\[[^\]]*\]\s*)?;\s*(?:/\*.*\*/\s*)?$"
)


def member_declarations(lines: Iterable[str]) -> frozenset[str]:
    """The names `lines` (added lines of a series) declare as `type name;`."""
    return frozenset(m.group("name") for ln in lines if (m := _MEMBER_DECL.match(ln)))


@dataclass
class Env:
    """What every matcher may consult."""

    vocab: Vocabulary
    depth: int
    # Calls the series adds (post minus pre, per touched function), anywhere.
    added: Sequence[tuple[str, Call]] = ()  # (function, call)
    # Calls the series removes (pre minus post, per touched function).
    removed: Sequence[tuple[str, Call]] = ()
    # Summaries of the series' callees (bot.analyze.infer); None: names only.
    infer: Inference | None = None
    # Names the series declares on added lines of the shape of a struct member
    # (`\tbool reserve_on_error;`): members it introduces (member_declarations).
    members_added: frozenset[str] = frozenset()
    _helper_cache: dict[tuple[int, str], frozenset[int]] = field(default_factory=dict)
    _returns_cache: dict[tuple[int, str], str] = field(default_factory=dict)
    _callback_cache: dict[tuple[int, str], frozenset[str]] = field(default_factory=dict)

    def series_adds(self, name: str, tail: str = "", *, besides: str = "") -> bool:
        """True when the series adds a call to `name` in a function other than
        `besides` (on an object whose last member is `tail`, when one is given)."""
        for fn, call in self.added:
            if fn == besides or call.name != name:
                continue
            if not tail or any(member_tail(a) == tail for a in call.args):
                return True
        return False

    def series_removes_role(self, roles: Iterable[str], family: str, *, besides: str = "") -> bool:
        """True when the series removes a call with one of `roles` in `family`
        from a function other than `besides` (a get that went with a put)."""
        wanted = set(roles)
        return any(
            fn != besides
            and any(r.role in wanted and r.family == family for r in self.vocab.roles_of(c.name))
            for fn, c in self.removed
        )

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


def calls_by_object(
    env: Env, flow: Flow, roles: frozenset[str], *, balanced: bool = False
) -> dict[str, Call]:
    """The first call of `flow` playing one of `roles` on each object, by the
    object's base name (`list_del(&e->node)` -> "e")."""
    out: dict[str, Call] = {}
    for c in flow.calls:
        for role in env.vocab.roles_of(c.name):
            if role.role not in roles or (balanced and not role.balance):
                continue
            arg = _object_arg(c, role)
            b = base_name(container_of_arg(arg)) if arg is not None else ""
            if b:
                out.setdefault(b, c)
    return out


def _loc(file: str, call: Call) -> str:
    return f"{file}:{call.line}"


# --------------------------------------------------------------------------- release paths


def _callback_names(vocab: Vocabulary, view: SourceView, file: str) -> set[str]:
    names = {cb for cbs in view.callbacks_of(vocab, file).values() for cb, _ in cbs}
    takers = vocab.callback_takers()
    for path in dict.fromkeys([file, *view.files]):
        # only a function that spells a callback-taking call can register one
        if not lexicon(view.text(path) or "").called & takers:
            continue
        for flow in view.flows_mentioning(path, takers):
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
    key = (id(side.view), side.file)
    if key not in env._callback_cache:
        env._callback_cache[key] = frozenset(_callback_names(env.vocab, side.view, side.file))
    if flow.name in env._callback_cache[key]:
        return "it is registered as a release callback"
    return ""


# ------------------------------------------------------------- shared by the path matchers

_TRYLOCK = re.compile(r"^\w*_trylock\w*$|^down_(read|write)_trylock$")
# The RCU read section, as the one pseudo-lock lock_family() names.
RCU_SECTION = "rcu read section"


def lock_family(env: Env, call: Call) -> str:
    """The kind of lock `call` takes (a vocabulary lock family, a trylock's
    prefix, or the RCU read section), or "" when it takes none."""
    if _TRYLOCK.match(call.name):
        return call.name.split("_trylock")[0] or call.name
    for role in env.vocab.roles_of(call.name):
        if role.role == "rcu_read_lock":
            return RCU_SECTION
        if role.role == "lock" and role.kind == "lock":
            return role.family
    return ""


def _acquires(env: Env, side: Side, call: Call) -> bool:
    """`call` takes a reference or makes an object (by the vocabulary, or by the
    body of a helper this view defines, on some path of it: an isolation that
    takes the page only when it is on a list is what its putback pairs with)."""
    for role in env.vocab.roles_of(call.name):
        if role.role in GET_ROLES or role.role in ("create", "iter", "lookup"):
            return True
    summary = env.infer.summary(call.name, side.file) if env.infer is not None else None
    if summary is not None and (summary.gets or summary.gets_maybe):
        return True
    return bool(env.helper_returns_ref(call, side.view, side.file))


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


def _globals_of(side: Side) -> frozenset[str]:
    """Names the file declares at file scope that `side`'s function does not
    declare again as locals (read once per side)."""
    if side._globals is None:
        side._globals = _read_globals(side)
    return side._globals


def _read_globals(side: Side) -> frozenset[str]:
    flow = side.flow
    text = side.view.text(side.file) if flow is not None else None
    if flow is None or not text:
        return frozenset()
    lines = side.view.lines(side.file)
    last = max((c.line for c in flow.calls), default=flow.start_line)
    body = lines[max(flow.start_line - 1, 0) : last]
    local = declared_names(body)
    out = file_scope_names(text) - local
    head = lines[flow.start_line - 1 : flow.start_line + 1] if flow.start_line >= 1 else []
    if any(calls_spelled(h, flow.name) for h in head):
        # the whole definition is in view: a name it assigns without declaring
        # it (nor taking it as a parameter) is file scope, declared elsewhere
        assigned = {
            ev.lhs
            for n in flow.nodes.values()
            for ev in n.events
            if isinstance(ev, Assign) and re.fullmatch(r"[A-Za-z_]\w*", ev.lhs)
        }
        out |= assigned - local - set(flow.params)
    return frozenset(out)


def _cond_polarity(cond: str, call: Call) -> bool | None:
    """Which branch value means `call` (inside `cond`) returned true."""
    c = "".join(cond.split())
    t = "".join(call.text.split())
    if c == t:
        return True
    negated = ("!" + t, "!(" + t + ")", t + "==0", t + "==NULL", t + "<=0", "0==" + t)
    if c in negated:
        return False
    if c in (t + "!=0", t + "!=NULL", t + ">0"):
        return True
    if t in c and "||" not in c:
        # `a && !tryget(x)`, `tryget(x) == 0 && b`: the branch that ran it and
        # saw it fail
        return not any(n in c for n in negated)
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


@dataclass(frozen=True)
class Matcher:
    name: str
    kind: str  # "state" | "change" | "table" (file-scope initializers, per file diff)
    fn: Callable[[Env, Side, Side], list[Hit]]
    doc: str


MATCHERS: dict[str, Matcher] = {}


# Matchers kept in their own modules register themselves into MATCHERS when
# imported (they import this module, so they are loaded last).
MATCHER_MODULES = (
    "release_paths",
    "pins",
    "pathdiff",
    "refs",
    "deferred_rcu",
    "ownership",
    "errpaths",
    "locking",
    "lock_sections",
    "guards",
    "hoisted",
    "ordering",
    "retry",
    "retarget",
    "free_target",
    "saturation",
    "flag_paths",
    "tables",
)
for _module in MATCHER_MODULES:
    importlib.import_module(f"bot.analyze.{_module}")

__all__ = ["MATCHERS", "MATCHER_MODULES", "Env", "Hit", "Matcher", "Side", "is_release_path"]
