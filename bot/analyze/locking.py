"""Protection removed: a lock or RCU read section a function took and no longer takes.

`protection-removed` (rule MMLC008): before the patch the function took a lock
(any `lock` role of the vocabulary, a trylock, a `guard(mutex)(&l)` /
`scoped_guard(spinlock, &l)` scope) or entered an RCU read section; after it,
the function never takes it, does not declare that its callers hold it (see
bot.analyze.contract), and the series takes it nowhere else. Whatever the
function still does between was serialised against every other holder of that
lock (a store freeing what a show reads, a shrinker racing a purge, a walk of
RCU-freed nodes), and now is not. A question with low confidence: sometimes the
lock really was not needed, and the reviewer's answer is the changelog.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from bot.analyze.contract import held_on_entry
from bot.analyze.entry_locks import LOCKISH as _LOCKISH
from bot.analyze.entry_locks import side_body as _body
from bot.analyze.flow import Assign, Call, Flow, base_name, norm_object
from bot.analyze.flow_source import member_tail
from bot.analyze.rules_match import (
    _TRYLOCK,
    MATCHERS,
    Env,
    Hit,
    Matcher,
    Side,
    calls_by_object,
    lock_family,
)
from bot.analyze.rules_match import (
    RCU_SECTION as _RCU,
)

_GUARD = re.compile(r"\b(?:scoped_)?guard\s*\(\s*(\w+)\s*\)?\s*[(,]\s*&?\s*([^();,]+?)\s*\)")
_SPINNING = frozenset({"spinlock", "rwlock", "spin", "raw_spin"})


def _taken(env: Env, flow: Flow, body: str) -> Counter[tuple[str, str]]:
    """Locks `flow` takes, by (family, object); the RCU read section is one
    pseudo-lock, a guard scope has the guard's class as its family."""
    out: Counter[tuple[str, str]] = Counter()
    # `struct mutex *lock = &x->m; mutex_lock(lock);` takes x->m
    alias = {
        ev.lhs: norm_object(ev.rhs)
        for n in flow.nodes.values()
        for ev in n.events
        if isinstance(ev, Assign) and re.fullmatch(r"[A-Za-z_]\w*", ev.lhs)
    }

    def target(arg: str) -> str:
        o = norm_object(arg)
        return alias.get(o, o)

    for c in flow.calls:
        fam = _lock_kind(env, c)
        if fam == _RCU:
            out[(_RCU, _RCU)] += 1
        elif fam and c.args:
            out[(fam, target(c.args[0]))] += 1
    for kind, held in _GUARD.findall(body):
        out[(_RCU, _RCU) if kind.startswith("rcu") else (kind, target(held))] += 1
    return out


def protection_removed(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A lock or RCU read section the function took before the patch and never
    takes after it, with no contract saying its callers hold it and no other
    function of the series taking it instead."""
    if pre.flow is None or post.flow is None or not post.flow.calls:
        return []
    if pre.flow.name != post.flow.name:
        return []  # a function rewritten into another: a scheme change, judged elsewhere
    before = _taken(env, pre.flow, _body(pre))
    if not before:
        return []
    after = _taken(env, post.flow, _body(post))
    # the same object still locked, by whatever lock or wrapper
    # (`spin_lock(&x->lock)` -> `x_lock(x)`, `trylock_page(p)` -> `lock_page(p)`):
    # a new scheme on it, not protection dropped
    bases_after = {base_name(lock) for _, lock in after}
    bases_before = {base_name(lock) for _, lock in before}
    wrappers = {c.name for c in post.flow.calls if not lock_family(env, c)}
    if any(fam in wrappers and base_name(lock) not in bases_before for fam, lock in after):
        return []  # a lock wrapper on an object it did not lock before: a new scheme
    fams_after = {fam for fam, _ in after}
    # a lock replaced by another of its kind (here or elsewhere in the series),
    # or by an RCU read section, is a change of scheme, not a removal; an RCU
    # section is still implied by a spinning lock, not by a sleeping one
    kinds_after = fams_after | _kinds_added(env)
    gone = [
        lock
        for (fam, lock) in before
        if after[(fam, lock)] == 0
        and fam not in kinds_after
        and (lock == _RCU or base_name(lock) not in bases_after)
        and not (lock != _RCU and _RCU in kinds_after)
        and not (lock == _RCU and kinds_after & _SPINNING)
    ]
    if not gone or held_on_entry(post.flow, post.view, post.file, env.vocab):
        return []
    hits: list[Hit] = []
    pre_text, post_text = pre.view.text(pre.file) or "", post.view.text(post.file) or ""
    for lock in dict.fromkeys(gone):
        if lock != _RCU and _series_takes(env, lock, pre.flow.name):
            continue  # moved to a caller or a helper of the series
        if lock != _RCU and _added_line_takes(env, post, lock):
            continue  # moved within the function (a partial image may not parse it)
        if lock != _RCU and _definition_removed(member_tail(lock) or lock, pre_text, post_text):
            continue  # the series deletes the lock itself: and what it guarded
        if lock == _RCU and env.series_adds_role(("rcu_read_lock",), "rcu", besides=pre.flow.name):
            continue
        line = _line_of(env, pre.flow, lock, pre.view.lines(pre.file))
        if pre.removed_lines and (line is None or line not in pre.removed_lines):
            continue  # the patch did not delete it: two windows of a partial image
        if line is not None and not _work_left(env, pre.flow, post.flow, line):
            continue  # what the lock guarded went with it
        what = "the RCU read section" if lock == _RCU else f"the lock {lock}"
        hits.append(
            Hit(
                key=("protection-removed", lock),
                line=None,
                removed_line=line,
                fields={"function": post.flow.name, "lock": what},
                evidence=(
                    f"before: {pre.flow.name}() took {what}",
                    f"after: nothing in {post.flow.name}() takes it, its callers are not "
                    "known to hold it, and the series takes it nowhere else",
                ),
                variant="protection-removed",
            )
        )
    return hits


def _work_left(env: Env, pre: Flow, post: Flow, lock_line: int) -> bool:
    """Some call the pre-image made after taking the lock is still made after the
    patch (the guarded work stays; only the lock went). An RCU publication
    (`rcu_assign_pointer()`) is not work a lock must guard: RCU readers need no
    lock to see it whole."""
    after = {(c.name, c.args) for c in post.calls}
    # the section: from the lock to the first unlock after it (a guard: the end)
    end = min(
        (c.line for c in pre.calls if c.line > lock_line and "unlock" in c.name),
        default=max((c.line for c in pre.calls), default=lock_line) + 1,
    )
    return any(
        (c.name, c.args) in after
        and not _LOCKISH.search(c.name)
        and not any(r.role == "publish" and r.kind == "publish" for r in env.vocab.roles_of(c.name))
        for c in pre.calls
        if lock_line < c.line < end
    )


def _added_line_takes(env: Env, post: Side, lock: str) -> bool:
    """A line the patch adds to this function's file calls a lock of the
    vocabulary (or a trylock) on `lock`: the same protection, moved."""
    want = "".join(lock.split())
    lines = post.view.lines(post.file)
    for ln in post.removed_lines:
        if not 0 < ln <= len(lines):
            continue
        text = "".join(lines[ln - 1].split())
        for m in _CALL_HEAD.finditer(text):
            name = m.group(1)
            if not (_TRYLOCK.match(name) or env.vocab.has_role(name, "lock")):
                continue
            arg = text[m.end() :].lstrip("&")
            if arg.startswith(want) and not arg[len(want) : len(want) + 1].isalnum():
                return True
    return False


_CALL_HEAD = re.compile(r"([A-Za-z_]\w*)\(")


def _definition_removed(name: str, pre_text: str, post_text: str) -> bool:
    """The lock `name` is defined (`DEFINE_SPINLOCK(name)`, `spinlock_t name;`,
    `struct mutex name;`) before the patch and not after."""
    pat = re.compile(
        rf"(DEFINE_\w+\(\s*{re.escape(name)}\s*\)|"
        rf"(spinlock_t|rwlock_t|struct\s+(mutex|rw_semaphore))\s+{re.escape(name)}\s*[;=])"
    )
    return pat.search(pre_text) is not None and pat.search(post_text) is None


def _kinds_added(env: Env) -> set[str]:
    """Lock families the series takes in code it adds anywhere: a series that
    also adds locking changes the scheme rather than dropping protection."""
    return {fam for _, call in env.added if (fam := _lock_kind(env, call))}


# Names that mention a lock without taking one (`spin_lock_init`,
# `lockdep_assert_held`, `zone_is_locked`...).
_NOT_TAKING = re.compile(
    r"(?:^|_)(?:init|held|assert|is|owner|class|key|name|ptr|depth|stat|contended|"
    r"needbreak|irqs?_disabled)(?:_|$)"
)


def _lock_kind(env: Env, call: Call) -> str:
    """What lock `call` takes: lock_family() (the vocabulary's, a trylock, RCU),
    else a lock wrapper by its name (`migrate_read_lock(zspage)`, `lock_page(p)`),
    which is its own kind; "" when it takes none."""
    fam = lock_family(env, call)
    if fam or not call.args or env.vocab.roles_of(call.name):
        return fam
    name = call.name
    if "unlock" in name or not _LOCKISH.search(name) or _NOT_TAKING.search(name):
        return ""
    return name


def _line_of(env: Env, flow: Flow, lock: str, lines: Sequence[str]) -> int | None:
    """The line where `flow` takes `lock` (a call, or a guard scope in `text`)."""
    for c in flow.calls:
        if lock == _RCU:
            if any(r.role == "rcu_read_lock" for r in env.vocab.roles_of(c.name)):
                return c.line
        elif c.args and norm_object(c.args[0]) == lock and _lock_kind(env, c) not in ("", _RCU):
            return c.line
    last = max((c.line for c in flow.calls), default=flow.start_line)
    for n in range(max(flow.start_line - 1, 0), min(last, len(lines))):
        m = _GUARD.search(lines[n])
        if m and (norm_object(m.group(2)) == lock or (lock == _RCU and "rcu" in m.group(1))):
            return n + 1
    return None


def _series_takes(env: Env, lock: str, besides: str) -> bool:
    tail = member_tail(lock) or lock
    for fn, call in env.added:
        if fn == besides or not call.args:
            continue
        if _lock_kind(env, call) in ("", _RCU):
            continue
        if (member_tail(norm_object(call.args[0])) or call.args[0]) == tail:
            return True
        # a plain object locked through something derived from it elsewhere
        # (`lock_page_memcg(page)` gone, `folio_lruvec_relock_irq(page_folio(page))` added)
        if re.fullmatch(r"[A-Za-z_]\w*", lock) and lock in re.findall(
            r"[A-Za-z_]\w*", call.args[0]
        ):
            return True
    return False


def _field_writes(flow: Flow, obj: str) -> dict[tuple[str, str], int]:
    """`obj->field = value` writes of `flow` -> their first line."""
    out: dict[tuple[str, str], int] = {}
    for n in flow.nodes.values():
        for ev in n.events:
            if isinstance(ev, Assign) and re.match(rf"{re.escape(obj)}\s*->", ev.lhs):
                key = ("".join(ev.lhs.split()), "".join(ev.rhs.split()))
                out[key] = min(out.get(key, ev.line), ev.line)
    return out


def init_after_publish(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A field of an object that the function used to set before publishing the
    object (xa_insert, list_add_rcu, rcu_assign_pointer...) and now sets after:
    another CPU that finds it in between sees it half initialised."""
    if pre.flow is None or post.flow is None:
        return []
    publish = frozenset({"publish"})
    pre_pub = calls_by_object(env, pre.flow, publish)
    post_pub = calls_by_object(env, post.flow, publish)
    hits: list[Hit] = []
    for obj, pub in post_pub.items():
        before = pre_pub.get(obj)
        if before is None or before.name != pub.name:
            continue
        was = _field_writes(pre.flow, obj)
        for key, line in _field_writes(post.flow, obj).items():
            if line <= pub.line or key not in was or was[key] >= before.line:
                continue
            hits.append(
                Hit(
                    key=("init-after-publish", obj, key[0]),
                    line=line,
                    fields={
                        "function": post.flow.name,
                        "object": obj,
                        "field": key[0],
                        "publish": pub.text,
                    },
                    evidence=(
                        f"before: {key[0]} was set before {before.text}",
                        f"after: {pub.text} at {post.file}:{pub.line} publishes {obj}, then "
                        f"{key[0]} is set at {post.file}:{line}",
                    ),
                    variant="init-after-publish",
                )
            )
    return hits


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "protection-removed", "change", protection_removed, protection_removed.__doc__ or ""
        ),
        Matcher(
            "init-after-publish", "change", init_after_publish, init_after_publish.__doc__ or ""
        ),
    )
)

__all__ = [
    "init_after_publish",
    "protection_removed",
]
