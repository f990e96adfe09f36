"""Ownership on every path, compared across the patch: a path that loses a release.

`path-loses-release` (MMLC002 `lost-release-on-path`): the function disposes of
an object (releases it: free, destroy or put, by the vocabulary or an inferred
callee summary; or hands it on: stores, returns, gives it to a storing call) on
every path of the pre-image that a given post-image path corresponds to,
releasing it on one at least; the patch keeps those releases, and the post-image
path leaves without disposing of it: a new early `return`, a `goto` retargeted
past the cleanup, a `break` out of the loop that held the put.

Paths are matched by their branch decisions: a pre path corresponds to a post
path when they agree on every condition both test (a condition the patch adds or
removes constrains nothing). The object needs no visible acquisition: releasing
it on every corresponding path before the patch is the obligation, which makes
this work on partial images where the get sits in lines the diff does not show.
A path on which the object is NULL or an error (a condition tests it), is handed
off (stored, returned, passed whole to a call the corresponding pre paths did not
make) or was never set (the pre paths assign it, this one does not) owes nothing.

Enumeration is bounded (MAX_PATHS simple paths per function, each node at most
twice per path, MAX_STEPS node visits); past the bound the function is skipped,
deterministically.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.analyze.api import PUT_ROLES, RELEASE_ROLES
from bot.analyze.flow import Assign, Call, Flow, Return, base_name, mentions, norm_object
from bot.analyze.rules_match import _STORING_CALL as STORING_CALL
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side, _object_arg

MAX_PATHS = 300
MAX_STEPS = 30_000
_VISITS_PER_PATH = 2
_CONSTANT = {"0": False, "false": False, "1": True, "true": True}


@dataclass
class _Path:
    decisions: dict[str, bool] = field(default_factory=dict)
    events: list[Call | Assign | Return] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # decision and event lines, in order


def _paths(flow: Flow) -> list[_Path] | None:
    """Every path from entry to exit (bounded); None past the bound."""
    out: list[_Path] = []
    steps = 0
    stack: list[tuple[int, _Path, dict[int, int]]] = [(flow.entry, _Path(), {})]
    while stack:
        nid, path, seen = stack.pop()
        steps += 1
        if steps > MAX_STEPS or len(out) > MAX_PATHS:
            return None
        if seen.get(nid, 0) >= _VISITS_PER_PATH:
            continue
        seen = {**seen, nid: seen.get(nid, 0) + 1}
        node = flow.nodes[nid]
        path = _Path(dict(path.decisions), [*path.events, *node.events], list(path.lines))
        path.lines += [ev.line for ev in node.events]
        if nid == flow.exit or any(isinstance(ev, Return) for ev in node.events):
            out.append(path)
            continue
        for succ, assume in reversed(node.succ):
            nxt = path
            if assume is not None:
                cond = " ".join(assume.cond.split())
                if _CONSTANT.get(cond, assume.value) != assume.value:
                    continue  # `while (1)` never leaves through its test
                if path.decisions.get(cond, assume.value) != assume.value:
                    continue  # the same test gave the other answer earlier on this path
                nxt = _Path(
                    {**path.decisions, cond: assume.value}, path.events, [*path.lines, assume.line]
                )
            stack.append((succ, nxt, seen))
    return out


def _released(env: Env, call: Call) -> list[tuple[str, str]]:
    """(object, family) pairs a call releases by its vocabulary roles."""
    out: list[tuple[str, str]] = []
    for role in env.vocab.roles_of(call.name):
        if role.role not in RELEASE_ROLES and role.role not in PUT_ROLES:
            continue
        arg = _object_arg(call, role)
        if arg is not None and (obj := norm_object(arg)) and base_name(obj):
            out.append((obj, role.family))
    return out


def _releases(env: Env, path: _Path) -> dict[str, Call]:
    out: dict[str, Call] = {}
    for ev in path.events:
        if isinstance(ev, Call):
            for obj, _ in _released(env, ev):
                out.setdefault(obj, ev)
    return out


def _tests(path: _Path, obj: str) -> bool:
    """A decision on this path says the object (or the variable it hangs off) is
    NULL or an error: there is nothing to release on it."""
    base = base_name(obj)
    return any(
        _says_null(cond, value, v) for cond, value in path.decisions.items() for v in {obj, base}
    )


_WRAP = re.compile(r"^(?:un)?likely\((.*)\)$")


def _says_null(cond: str, value: bool, var: str) -> bool:
    """`!x`, `x`, `x == NULL`, `x != NULL`, `IS_ERR(x)`, `IS_ERR_OR_NULL(x)` (in
    `unlikely()`, negated any number of times), taken with `value`: x is bad."""
    c = "".join(cond.split())
    while m := _WRAP.match(c):
        c = m.group(1)
    while c.startswith("!"):
        c, value = c[1:], not value
        while m := _WRAP.match(c):
            c = m.group(1)
    v = re.escape(var)
    if re.fullmatch(rf"IS_ERR(?:_OR_NULL)?\({v}\)|{v}==NULL|NULL=={v}", c):
        return value
    if re.fullmatch(rf"{v}|{v}!=NULL|NULL!={v}", c):
        return not value
    return False


def _assigns(path: _Path, obj: str) -> bool:
    return any(isinstance(ev, Assign) and norm_object(ev.lhs) == obj for ev in path.events)


def _passes_on(path: _Path, obj: str, gives: Callable[[Call], bool]) -> bool:
    """The path returns the object, stores it (a field, a global, another
    name), or makes a call `gives` says takes it."""
    for ev in path.events:
        if isinstance(ev, Return) and ev.expr and mentions(ev.expr, obj):
            return True
        if isinstance(ev, Assign) and norm_object(ev.rhs) == obj and norm_object(ev.lhs) != obj:
            return True
        if isinstance(ev, Call) and gives(ev):
            return True
    return False


def _handed_off(path: _Path, obj: str, known: set[str]) -> bool:
    """Stored, returned, or passed whole to a call the pre paths did not make."""
    return _passes_on(
        path,
        obj,
        lambda c: c.text not in known and any(norm_object(a) == obj for a in c.args),
    )


def _disposed(path: _Path, obj: str) -> bool:
    """The path hands the object on instead of releasing it: stores it, returns
    it, or gives it to a storing call (`list_add()`, `xa_store()`...).
    Ownership is kept on such a path too."""
    return _passes_on(
        path,
        obj,
        lambda c: STORING_CALL.search(c.name) is not None and any(mentions(a, obj) for a in c.args),
    )


def _compatible(a: dict[str, bool], b: dict[str, bool]) -> bool:
    return all(b[c] == v for c, v in a.items() if c in b)


def _exit_text(side: Side, path: _Path) -> tuple[str, int | None]:
    last = path.events[-1] if path.events else None
    if isinstance(last, Return):
        text = side.line_text(last.line)
        return (text or f"return {last.expr or ''};".replace(" ;", ";")), last.line
    return "the end of the function", None


def path_loses_release(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A post-image path leaves without releasing an object that every
    corresponding pre-image path released or handed on (one at least released
    it), while the patch keeps those releases."""
    if pre.flow is None or post.flow is None or not post.removed_lines:
        return []
    if not any(_released(env, c) for c in pre.flow.calls):
        return []  # nothing released before the patch: nothing a path can owe
    if _leak_documented(post):
        return []  # the author says the function leaks on purpose (`we'll leak it here`)
    pre_paths, post_paths = _paths(pre.flow), _paths(post.flow)
    if not pre_paths or not post_paths:
        return []
    pre_rel = [_releases(env, q) for q in pre_paths]
    post_rel = [_releases(env, p) for p in post_paths]
    released_after = {obj for r in post_rel for obj in r}
    hits: dict[tuple[str, int | None], Hit] = {}
    for p, p_rel in zip(post_paths, post_rel, strict=True):
        matched = [i for i, q in enumerate(pre_paths) if _compatible(p.decisions, q.decisions)]
        if not matched:
            continue
        # owed on this path: released on every corresponding pre path (or
        # tested there, where it may be NULL), and really released on one
        owed: dict[str, Call] = {}
        for i in matched:
            for obj, call in pre_rel[i].items():
                owed.setdefault(obj, call)
        owed = {
            o: c
            for o, c in owed.items()
            if all(
                o in pre_rel[i] or _tests(pre_paths[i], o) or _disposed(pre_paths[i], o)
                for i in matched
            )
        }
        known = {ev.text for i in matched for ev in pre_paths[i].events if isinstance(ev, Call)}
        for obj, release in sorted(owed.items()):
            if obj in p_rel or obj not in released_after or _tests(p, obj):
                continue
            if release.line in pre.removed_lines:
                continue  # the release itself went: the lost-put matchers judge that
            if not _live(post.flow, p, obj):
                continue  # not known to be held yet where this path leaves
            if any(_assigns(pre_paths[i], obj) for i in matched) and not _assigns(p, obj):
                continue  # made after this path left: nothing held yet
            if _handed_off(p, obj, known):
                continue
            exit_text, exit_line = _exit_text(post, p)
            key = (obj, exit_line)
            if key in hits:
                continue
            family = next((f for o, f in _released(env, release) if o == obj), "")
            hits[key] = Hit(
                key=("lost-release-on-path", obj, exit_text),
                line=exit_line,
                fields={
                    "function": post.flow.name,
                    "object": obj,
                    "exit": exit_text,
                    "release": release.text,
                    "release_name": release.name,
                    "family": family,
                },
                evidence=(
                    f"before the patch every corresponding path ran {release.text} "
                    f"({pre.file}:{release.line})",
                    f"this path now leaves through `{exit_text}`"
                    + (f" at {post.file}:{exit_line}" if exit_line else ""),
                ),
                variant="lost-release-on-path",
            )
    # one report per exit: `g` rather than also `g->name` it hangs off
    shown = {k for k in hits if not (base_name(k[0]) != k[0] and (base_name(k[0]), k[1]) in hits)}
    return [hits[k] for k in sorted(shown, key=lambda k: (k[1] or 0, k[0]))]


_LEAK_NOTE = re.compile(r"\bleak", re.IGNORECASE)


def _leak_documented(side: Side) -> bool:
    """A comment in the function's (shown) lines speaks of leaking: the author
    documents a path that keeps what it does not release."""
    assert side.flow is not None
    lines = side.view.lines(side.file)
    last = max((c.line for c in side.flow.calls), default=side.flow.start_line)
    for text in lines[max(side.flow.start_line - 1, 0) : last]:
        comment = text.split("//", 1)[1] if "//" in text else ""
        if "/*" in text or text.lstrip().startswith("*"):
            comment += text
        if comment and _LEAK_NOTE.search(comment):
            return True
    return False


def _live(flow: Flow, path: _Path, obj: str) -> bool:
    """The object is held where the path leaves: a parameter (owned from the
    entry), or its variable is used on the path before the exit."""
    base = base_name(obj)
    if base in flow.params:
        return True
    return any(
        mentions(ev.text if isinstance(ev, Call) else _text(ev), base) for ev in path.events[:-1]
    ) or any(mentions(cond, base) for cond in path.decisions)


def _text(ev: Assign | Return) -> str:
    if isinstance(ev, Assign):
        return f"{ev.lhs} = {ev.rhs}"
    return ev.expr or ""


MATCHERS["path-loses-release"] = Matcher(
    "path-loses-release", "change", path_loses_release, path_loses_release.__doc__ or ""
)

__all__ = ["MAX_PATHS", "MAX_STEPS", "path_loses_release"]
