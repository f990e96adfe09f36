"""A reference step a patch takes out of the condition that guarded it.

`get-now-unconditional` / `release-now-unconditional` (MMLC002): the function
took a reference (a get, a `*_ref_add()`), or dropped or freed one (a put, a
free, a destroy, an uncharge hook), only under a condition; the patch moves the
same call out of that condition, so it now runs on the paths where the
condition is false too. Those paths were left out on purpose: the reference
was not there to take (the entry maps no page), or it was already dropped (a
caller's bulk path ran the hook itself). A get there is never balanced (the
count leaks or saturates); a release there drops what is not held (a double
put or free, an uncharge below zero).

The mirror of `release-now-conditional` (guards.py). Not reported when:

* the dropped condition tests the object itself (`if (p) kfree(p);` becoming
  `kfree(p);`: NULL-safe releases, a cleanup);
* the condition is the function's outcome (`if (err)`), or a flag the function
  sets (`if (locked)`, which tracks whether the step is owed);
* the condition tests only global switches (`memcg_kmem_online()`): a step
  that depends on a setting leaks when the setting changes between setup and
  teardown, and running it always is the fix of that;
* the patch removes another lifecycle call on the same object (the two
  branches merged into one step), or the call is made more than once.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re

from bot.analyze.api import PUT_ROLES, RELEASE_ROLES
from bot.analyze.callee_moves import same_step_name
from bot.analyze.flow import Call, Flow, base_name
from bot.analyze.flow_source import HIDDEN_BLOCK
from bot.analyze.naming import split_verb
from bot.analyze.rules_match import _LOGGING, MATCHERS, Env, Hit, Matcher, Side

_GET_ROLES = frozenset({"get"})
# A word of the name that drops what a step took: `memcg_slab_free_hook()`,
# `obj_cgroup_uncharge()`. (`get`s are only what the vocabulary says: too many
# names hold the word `get` for a getter.)
_RELEASE_WORDS = frozenset({"free", "put", "uncharge", "release", "destroy", "unref"})
# what runs at a release (`*_free_hook()`) or undoes a charge, by a word of the
# name (not `kernel_init_free_pages()`: a word inside a name is not a step)
_RELEASE_HOOK = re.compile(r"_(?:free|put|release)_hook$|(?:^|_)uncharge(?:_|$)")
_OUTCOME = re.compile(r"^!?\s*\(?\s*(?:ret|err|error|rc|status|res|result)\b|IS_ERR")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_WRAP = re.compile(r"^\s*(?:!\s*)?(?:un)?likely\s*\((.*)\)\s*$")


def _squash(text: str) -> str:
    return "".join(text.split())


def _step(env: Env, call: Call) -> str:
    """ "get" or "release" when `call` takes or drops a reference, else ""."""
    roles = {r.role for r in env.vocab.roles_of(call.name)}
    if roles & _GET_ROLES:
        return "get"
    if roles & (PUT_ROLES | RELEASE_ROLES):
        return "release"
    if roles:
        return ""  # another role of the vocabulary (a lock, a schedule): not this
    if _LOGGING.search(call.name):
        return ""  # a tracepoint or a message names the step, it does not make it
    sv = split_verb(call.name)
    if sv is not None and sv[0] in _RELEASE_WORDS:
        return "release"
    if _RELEASE_HOOK.search(call.name):
        return "release"
    return ""


def _assigned_names(flow: Flow) -> set[str]:
    return {ev.lhs.strip() for n in flow.nodes.values() for ev in n.events if hasattr(ev, "lhs")}


def _object_words(call: Call) -> set[str]:
    words: set[str] = set()
    for a in call.args:
        words |= set(_IDENT.findall(a))
    return words - {"NULL", "true", "false"}


def _unwrapped(cond: str) -> str:
    c = cond.strip()
    while (m := _WRAP.match(c)) is not None:
        c = m.group(1)
    return c


def step_now_unconditional(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A get or a release the function made only under a condition now runs
    whatever the condition says: the patch moved the call out of it, and the
    condition is not a NULL test of the object or the function's outcome."""
    if pre.flow is None or post.flow is None or not post.removed_lines:
        return []
    hits: list[Hit] = []
    pre_texts = [_squash(c.text) for c in pre.flow.calls]
    post_texts = [_squash(c.text) for c in post.flow.calls]
    flags = _assigned_names(post.flow) | _assigned_names(pre.flow)
    for call in post.flow.calls:
        if call.in_condition or not call.args or call.line not in post.removed_lines:
            continue
        step = _step(env, call)
        if not step:
            continue
        text = _squash(call.text)
        if pre_texts.count(text) != 1 or post_texts.count(text) != 1:
            continue
        before = pre.flow.calls[pre_texts.index(text)]
        if before.in_condition:
            continue
        old = [_squash(g) for g in before.guards]
        new = {_squash(g) for g in call.guards}
        dropped = [g for g, s in zip(before.guards, old, strict=True) if s not in new]
        if not dropped or not new <= set(old):
            continue  # no guard left, or the call moved under another one
        cond = dropped[-1]
        shown = _shown_condition(cond)
        if _hidden(cond) and not _after_block_end(post, call):
            continue  # a hunk boundary, not a block the call left
        words = set(_IDENT.findall(cond))
        objects = _object_words(call)
        if words & objects or _OUTCOME.search(_unwrapped(cond)):
            continue  # a NULL or state test of the object, or the outcome
        if words & flags:
            continue  # a flag the function keeps: it tracks whether the step is owed
        if _feature_switch(cond):
            continue  # a global switch: releasing whatever it says is the safe side
        bases = {base_name(a) for a in call.args} - {""}
        if _other_step_removed(env, pre, post, before, bases):
            continue
        hits.append(
            Hit(
                key=(f"{step}-now-unconditional", call.name, _squash(shown)),
                line=call.line,
                removed_line=before.line,
                fields={
                    "function": post.flow.name,
                    "call": call.text,
                    "condition": shown,
                },
                evidence=(
                    f"before: `{before.text}` at {pre.file}:{before.line} ran only if {shown}",
                    f"after: `{call.text}` at {post.file}:{call.line} runs on every path "
                    "that reaches it, the condition false included",
                ),
                variant=f"{step}-now-unconditional",
            )
        )
    return hits


_SWITCH_WORD = re.compile(r"[A-Za-z_]\w*\s*\(\s*\)|[A-Z][A-Z0-9_]*\b|\d+")


def _feature_switch(cond: str) -> bool:
    """The condition tests only global switches: calls with no arguments
    (`memcg_kmem_online()`), constants (`IS_ENABLED(CONFIG_X)` counts as one):
    nothing about this path or its object. The step it guarded depends on a
    setting, which may change between setup and teardown; making it
    unconditional is how such a leak is fixed."""
    rest = _SWITCH_WORD.sub(" ", re.sub(r"IS_ENABLED\s*\(\s*\w+\s*\)", " ", cond))
    return _IDENT.search(rest) is None and rest != cond


def _hidden(cond: str) -> bool:
    """A block opened in lines a diff does not show (flow_source.HIDDEN_BLOCK)."""
    return _squash(cond) == _squash(HIDDEN_BLOCK.split("(", 1)[1].rsplit(")", 1)[0])


def _after_block_end(side: Side, call: Call) -> bool:
    """The line before `call` (blank lines and added ones skipped) closes a
    block the image keeps: the call moved out past that `}`."""
    lines = side.view.lines(side.file)
    ln = call.line - 1
    while ln > 0 and (not lines[ln - 1].strip() or ln in side.removed_lines):
        ln -= 1
    return ln > 0 and lines[ln - 1].strip() == "}"


def _shown_condition(cond: str) -> str:
    """The condition as a reader can name it: a block opened in lines a diff
    does not show has no text of its own."""
    if _hidden(cond):
        return "the condition of a block opened above the hunk"
    return f"`{' '.join(cond.split())}`"


def _other_step_removed(env: Env, pre: Side, post: Side, moved: Call, bases: set[str]) -> bool:
    """The patch removes another get or release on one of `bases`, or a variant
    of the moved call (`foo_many()` for `foo()`): the branches merged into one
    step, or the step replaced another."""
    kept = {_squash(c.text) for c in post.flow.calls} if post.flow is not None else set()
    assert pre.flow is not None
    for c in pre.flow.calls:
        if c is moved or c.line not in pre.removed_lines or _squash(c.text) in kept:
            continue
        if (_step(env, c) or same_step_name(c.name, moved.name)) and {
            base_name(a) for a in c.args
        } & bases:
            return True
    return False


_COMPARISON = re.compile(r"^(?P<lhs>.+?)(?P<op>>=|<=|==|>|<)(?P<rhs>[^=<>]+)$")
# (old operator, new operator) pairs that admit every value the old one did and more
_WIDER = frozenset({(">", ">="), ("<", "<="), ("==", ">="), ("==", "<=")})


def _widened(old: str, new: str) -> bool:
    """`new` is `old` with its comparison widened to admit one more value
    (`x > 0` becoming `x >= 0`), the operands unchanged."""
    a, b = _COMPARISON.match(_squash(old)), _COMPARISON.match(_squash(new))
    if a is None or b is None:
        return False
    same = a.group("lhs") == b.group("lhs") and a.group("rhs") == b.group("rhs")
    return same and (a.group("op"), b.group("op")) in _WIDER


def step_guard_widened(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A get or a release under a comparison the patch widens (`if (f(p) > 0)
    page_ref_inc(p);` becoming `>= 0`): the step now also runs for the value
    the old test kept it from, the outcome where there was nothing to take or
    drop (a helper's `0`: done nothing)."""
    if pre.flow is None or post.flow is None or not post.removed_lines:
        return []
    hits: list[Hit] = []
    pre_texts = [_squash(c.text) for c in pre.flow.calls]
    post_texts = [_squash(c.text) for c in post.flow.calls]
    for call in post.flow.calls:
        step = _step(env, call) if not call.in_condition and call.args else ""
        text = _squash(call.text)
        if not step or pre_texts.count(text) != 1 or post_texts.count(text) != 1:
            continue
        before = pre.flow.calls[pre_texts.index(text)]
        if len(before.guards) != len(call.guards) or not before.guards:
            continue
        changed = [
            (g, h)
            for g, h in zip(before.guards, call.guards, strict=True)
            if _squash(g) != _squash(h)
        ]
        if len(changed) != 1 or not _widened(*changed[0]):
            continue
        old, new = (" ".join(g.split()) for g in changed[0])
        hits.append(
            Hit(
                key=(f"{step}-guard-widened", call.name, _squash(new)),
                line=call.line,
                removed_line=before.line,
                fields={
                    "function": post.flow.name,
                    "call": call.text,
                    "condition": f"`{new}`",
                    "old_condition": f"`{old}`",
                },
                evidence=(
                    f"before: `{before.text}` at {pre.file}:{before.line} ran only if `{old}`",
                    f"after: it runs if `{new}` ({post.file}:{call.line}): also for the "
                    "value the old test excluded",
                ),
                variant=f"{step}-guard-widened",
            )
        )
    return hits


MATCHERS["step-guard-widened"] = Matcher(
    "step-guard-widened", "change", step_guard_widened, step_guard_widened.__doc__ or ""
)

MATCHERS["step-now-unconditional"] = Matcher(
    "step-now-unconditional",
    "change",
    step_now_unconditional,
    step_now_unconditional.__doc__ or "",
)

__all__ = ["step_guard_widened", "step_now_unconditional"]
