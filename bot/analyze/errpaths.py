"""Error paths a patch leaves incomplete (MMLC007).

`error-code-dropped`: an unwind path that set an error code (`err = -ENOMEM;`)
right before its `goto` no longer sets it, so the caller is told it succeeded.
`failure-value-dropped` is the same for a failure value (`0`, `false`, `NULL`)
set in the branch where a get failed.

`undo-dropped`: an error branch no longer runs a compensating call named as an
undo (`restore_*_on_error()`, `*_uncharge()`, `undo_*()`), and the setup it
undid is still done, here or in a callee the series leaves alone.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re
from collections import Counter

from bot.analyze.flow import Assign, Call, Flow, Return, base_name, norm_object
from bot.analyze.naming import UNDO_CALL as _UNDO
from bot.analyze.naming import split_verb
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side

_ERRNO = re.compile(r"-E[A-Z][A-Z0-9_]*")
_GOTO = re.compile(r"^\s*goto\s+([A-Za-z_]\w*)\s*;")


def error_code_dropped(env: Env, pre: Side, post: Side) -> list[Hit]:
    """An error path that set an error code before jumping to the unwind label (or
    returning it) no longer sets it: the unwind still runs, releasing what the
    function built, but the caller is told it succeeded and goes on to use it."""
    del env
    if pre.flow is None or post.flow is None:
        return []
    failed_get = _failed_get_lines(pre.flow)
    if not any(
        isinstance(e, Assign)
        and e.line in pre.removed_lines
        and _failure_value(e.rhs, e.line, failed_get)
        for n in pre.flow.nodes.values()
        for e in n.events
    ):
        return []  # no error code assignment removed: nothing to read further
    pre_text = pre.view.text(pre.file) or ""
    post_text = post.view.text(post.file) or ""
    if not pre_text or not post_text:
        return []
    pre_lines = pre.view.lines(pre.file)
    post_gotos = Counter(
        m.group(1) for line in post.view.lines(post.file) if (m := _GOTO.match(line))
    )
    post_sets = Counter(
        (norm_object(e.lhs), e.rhs.replace(" ", ""))
        for n in post.flow.nodes.values()
        for e in n.events
        if isinstance(e, Assign)
    )

    def returns(flow: Flow) -> Counter[str]:
        return Counter(
            e.expr.replace(" ", "")
            for n in flow.nodes.values()
            for e in n.events
            if isinstance(e, Return) and e.expr
        )

    pre_returns, post_returns = returns(pre.flow), returns(post.flow)
    hits: list[Hit] = []
    for node in pre.flow.nodes.values():
        for ev in node.events:
            if not isinstance(ev, Assign) or ev.line not in pre.removed_lines:
                continue
            code = ev.rhs.replace(" ", "")
            failed = _failure_value(ev.rhs, ev.line, failed_get)
            if not failed:
                continue
            var = norm_object(ev.lhs)
            nxt = next(
                (t for t in pre_lines[ev.line : ev.line + 3] if t.strip() and t.strip() != "}"),
                "",
            )
            m = _GOTO.match(nxt)
            if m is None or post_gotos[m.group(1)] == 0:
                continue  # not an error jump, or the jump went with it
            if failed != "errno":
                # 0/false/NULL is set all over a function: only the branch counts
                nxt_post = pre.post_line(ev.line + 1) if pre.diff is not None else None
                if _set_in_branch(post, var, code, nxt_post):
                    continue
            elif post_sets[(var, code)] > 0 or post_returns[code] > pre_returns[code]:
                continue  # the code is still set (moved) or now returned directly
            elif _count(post_text, code) >= _count(pre_text, code):
                continue  # as many uses of the code as before: moved, not dropped
            hits.append(
                Hit(
                    key=("error-code-dropped", var, code, m.group(1)),
                    line=None,
                    removed_line=ev.line,
                    fields={
                        "function": pre.flow.name,
                        "var": var,
                        "code": code,
                        "label": m.group(1),
                        "failed": failed,
                    },
                    evidence=(
                        f"removed: {var} = {code} at {pre.file}:{ev.line}",
                        f"the path still jumps to `{m.group(1)}:` and unwinds, with {var} "
                        "holding whatever it held before",
                    ),
                    variant="error-code-dropped" if failed == "errno" else "failure-value-dropped",
                )
            )
    return hits


_FALSY = frozenset({"0", "false", "NULL"})
_GET_VERB = re.compile(r"^(?:\w+_)?(?:get|tryget|grab|hold)(?:_\w+)?$")


def _failed_get_lines(flow: Flow) -> dict[int, str]:
    """Lines inside a branch taken when a get failed (`if (!get_x(o)) { ... }`):
    line -> the get's text. Calls carry their enclosing conditions."""
    out: dict[int, str] = {}
    for c in flow.calls:
        if not c.guards:
            continue
        g = "".join(c.guards[-1].split())
        m = re.fullmatch(r"(?:unlikely\()?!([A-Za-z_]\w*)\((.*)\)\)?", g)
        if m and _GET_VERB.match(m.group(1)) and not c.in_condition:
            out[c.line] = f"{m.group(1)}({m.group(2)})"
    return out


def _failure_value(rhs: str, line: int, failed_get: dict[int, str]) -> str:
    """ "errno" for `-EFOO`; the failed get's text for 0/false/NULL set in the
    branch where a get failed (a call of that branch within two lines above);
    "" otherwise."""
    code = rhs.replace(" ", "")
    if _ERRNO.fullmatch(code):
        return "errno"
    if code in _FALSY:
        return next((failed_get[n] for n in (line - 1, line - 2) if n in failed_get), "")
    return ""


def _set_in_branch(post: Side, var: str, code: str, after: int | None) -> bool:
    """The post-image sets `var = code` on the lines just before `after` (the
    same branch, where the patch left the jump)."""
    if post.flow is None or after is None:
        return False
    return any(
        isinstance(e, Assign)
        and norm_object(e.lhs) == var
        and e.rhs.replace(" ", "") == code
        and after - 4 <= e.line < after
        for n in post.flow.nodes.values()
        for e in n.events
    )


# What runs at a free to take back what the allocation set up (an accounting
# tag, a memcg charge, a sanitizer's state): `*_free_hook()`.
_FREE_HOOK = re.compile(r"_free_hook$")
_FREE_VERBS = frozenset({"free", "put", "release", "destroy"})
_PREDICATE_WORD = re.compile(r"(?:^|_)(?:want|is|can|should|need|may|has)_")


def _free_after_hook(env: Env, post: Flow, hook: Call) -> Call | None:
    """For a release hook (`*_free_hook()`): the call of `post` that still frees
    what the hook was given (a free, put or destroy by the vocabulary or by its
    name, sharing an object argument with the hook), else None."""
    if not _FREE_HOOK.search(hook.name):
        return None
    objs = {base_name(a) for a in hook.args} - {""}
    for c in post.calls:
        if c.name == hook.name or _FREE_HOOK.search(c.name) or c.in_condition:
            continue
        if _PREDICATE_WORD.search(c.name):
            continue  # `slab_want_init_on_free()` asks, it frees nothing
        roles = {r.role for r in env.vocab.roles_of(c.name)}
        sv = split_verb(c.name)
        frees = bool(roles & {"free", "put", "destroy"}) or (
            not roles and sv is not None and sv[0] in _FREE_VERBS
        )
        if frees and objs & {base_name(a) for a in c.args}:
            return c
    return None


# Restoring interrupt, preemption or lock state is not taking back an object's.
_NOT_UNDO = re.compile(r"irq|preempt|lock|spin|rcu|flags")
_SETUP = re.compile(r"charge|reserve|alloc|get|try|inc|add|account|map")


def _setup_removed(pre: Flow, post: Flow, undo: Call) -> bool:
    """The patch also removes a setup call on the same objects as `undo`
    (`try_charge(&c->kmem, n)` with its `cancel_charge(c, n)`)."""
    kept = {(c.name, c.args) for c in post.calls}
    objs = {base_name(a) for a in undo.args} - {""}
    return any(
        (c.name, c.args) not in kept
        and c is not undo
        and _SETUP.search(c.name)
        and objs & {base_name(a) for a in c.args}
        for c in pre.calls
    )


def _setup_removed_elsewhere(env: Env, pre: Side, undo: Call) -> bool:
    """The series removes a setup call on the same objects from another function
    (a callee that no longer allocates what the undo rolled back)."""
    assert pre.flow is not None
    objs = {base_name(a) for a in undo.args} - {""}
    return any(
        fn != pre.flow.name
        and _SETUP.search(c.name)
        and not _UNDO.search(c.name)  # the same undo dropped elsewhere too is no setup
        and objs & {base_name(a) for a in c.args}
        for fn, c in env.removed
    )


def undo_dropped(env: Env, pre: Side, post: Side) -> list[Hit]:
    """An error path that took back what the function had set up (a call named as
    an undo: `restore_*_on_error()`, `*_uncharge()`, `undo_*()`) before releasing
    the object no longer does, and the series runs that undo nowhere else: the
    reservation, charge or state the object carried leaks with it."""
    if pre.flow is None or post.flow is None:
        return []
    after = Counter(c.name for c in post.flow.calls)
    hits: list[Hit] = []
    seen: set[str] = set()
    for c in pre.flow.calls:
        if not _UNDO.search(c.name) or _NOT_UNDO.search(c.name) or c.name in seen:
            continue
        if env.vocab.roles_of(c.name):
            continue  # a known lifecycle call: the other matchers judge it
        if pre.removed_lines and c.line not in pre.removed_lines:
            continue
        before = sum(1 for d in pre.flow.calls if d.name == c.name)
        if after[c.name] >= before or env.series_adds(c.name, besides=pre.flow.name):
            continue
        free = None if c.guards else _free_after_hook(env, post.flow, c)
        if not c.guards and free is None:
            continue  # only what an error branch ran, or a hook before a free kept
        if _setup_removed(pre.flow, post.flow, c) or _setup_removed_elsewhere(env, pre, c):
            continue  # what it undid is no longer done either
        seen.add(c.name)
        if free is not None:
            hits.append(
                Hit(
                    key=("free-hook-dropped", c.name),
                    line=free.line,
                    removed_line=c.line,
                    fields={
                        "function": post.flow.name,
                        "undo": c.text,
                        "undo_name": c.name,
                        "free": free.text,
                    },
                    evidence=(
                        f"removed: {c.text} at {pre.file}:{c.line}",
                        f"kept: {free.text} at {post.file}:{free.line} frees what it was "
                        "given, and the series adds the hook nowhere else",
                    ),
                    variant="free-hook-dropped",
                )
            )
            continue
        hits.append(
            Hit(
                key=("undo-dropped", c.name),
                line=None,
                removed_line=c.line,
                fields={"function": pre.flow.name, "undo": c.text, "undo_name": c.name},
                evidence=(
                    f"removed: {c.text} at {pre.file}:{c.line} (under `{c.guards[-1]}`)",
                    f"{pre.flow.name}() calls {c.name}() {after[c.name]} time(s) after the "
                    f"patch, {before} before, and the series adds it nowhere else",
                ),
                variant="undo-dropped",
            )
        )
    return hits


def _count(text: str, code: str) -> int:
    return len(re.findall(re.escape(code) + r"\b", text))


# Undo words and the set-up words they pair with, as name tokens (split at `_`).
_UNDO_OF = {
    "clear": ("set",),
    "del": ("add",),
    "delete": ("add", "insert"),
    "remove": ("add", "insert", "install"),
    "unmap": ("map",),
    "uninstall": ("install",),
    "unregister": ("register",),
    "disable": ("enable",),
    "stop": ("start",),
    "deactivate": ("activate",),
    "detach": ("attach",),
    "unlink": ("link",),
    "unpin": ("pin",),
    "unaccount": ("account",),
}


def _tokens(name: str) -> set[str]:
    return {t for t in name.lower().split("_") if t}


def _pair_undo(name: str) -> tuple[str, ...]:
    """The set-up words an undo name pairs with (`ptep_get_and_clear` -> set)."""
    return tuple(w for tok in _tokens(name) for w in _UNDO_OF.get(tok, ()))


def _shared_args(a: Call, b: Call) -> int:
    mine = {norm_object(x) for x in a.args} - {"", "0", "1", "NULL", "true", "false"}
    return len(mine & {norm_object(x) for x in b.args})


def teardown_dropped(env: Env, pre: Side, post: Side) -> list[Hit]:
    """The function set something up (`set_pte_at(mm, addr, ptep, pte)`) and tore
    it down again later (`ptep_get_and_clear(mm, addr, ptep)`, named as the undo of
    the set-up, on the same objects); the patch removes the teardown, keeps the
    set-up, and nothing else in the series or in what replaced it undoes it."""
    if pre.flow is None or post.flow is None or not pre.removed_lines:
        return []
    kept = Counter((c.name, c.args) for c in post.flow.calls)
    before = Counter((c.name, c.args) for c in pre.flow.calls)
    hits: list[Hit] = []
    for undo in pre.flow.calls:
        if undo.line not in pre.removed_lines or undo.in_condition:
            continue
        if kept[(undo.name, undo.args)] >= before[(undo.name, undo.args)]:
            continue  # as many of these teardowns as before: moved, not dropped
        words = _pair_undo(undo.name)
        if not words or env.vocab.roles_of(undo.name) or _NOT_UNDO.search(undo.name):
            continue  # lifecycle calls of the vocabulary: the other matchers judge them
        # the set-up it undid: after the previous teardown of the same kind
        since = max(
            (c.line for c in pre.flow.calls if c.name == undo.name and c.line < undo.line),
            default=0,
        )
        setup = next(
            (
                c
                for c in reversed(pre.flow.calls)
                if since < c.line < undo.line
                and kept[(c.name, c.args)] > 0
                and _tokens(c.name) & set(words)
                and _shared_args(c, undo) >= 2
            ),
            None,
        )
        if setup is None or env.series_adds(undo.name, besides=pre.flow.name):
            continue
        if any(
            _shared_args(c, undo) >= 2 for c in post.flow.calls if before[(c.name, c.args)] == 0
        ):
            continue  # a new call on the same objects: the teardown moved into it
        hits.append(
            Hit(
                key=("teardown-dropped", undo.name),
                line=None,
                removed_line=undo.line,
                fields={
                    "function": pre.flow.name,
                    "undo": undo.text,
                    "undo_name": undo.name,
                    "setup": setup.text,
                },
                evidence=(
                    f"kept: {setup.text} at {pre.file}:{setup.line}",
                    f"removed: {undo.text} at {pre.file}:{undo.line}, which undid it",
                ),
                variant="teardown-dropped",
            )
        )
    return hits


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher("teardown-dropped", "change", teardown_dropped, teardown_dropped.__doc__ or ""),
        Matcher(
            "error-code-dropped", "change", error_code_dropped, error_code_dropped.__doc__ or ""
        ),
        Matcher("undo-dropped", "change", undo_dropped, undo_dropped.__doc__ or ""),
    )
)

__all__ = ["error_code_dropped", "teardown_dropped", "undo_dropped"]
