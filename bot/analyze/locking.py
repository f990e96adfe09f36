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
from bot.analyze.cscan import declared_names
from bot.analyze.entry_locks import entry_held, section_params
from bot.analyze.flow import Assign, Call, Flow, norm_object
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
        fam = lock_family(env, c)
        if fam == _RCU:
            out[(_RCU, _RCU)] += 1
        elif fam and c.args:
            out[(fam, target(c.args[0]))] += 1
    for kind, held in _GUARD.findall(body):
        out[(_RCU, _RCU) if kind.startswith("rcu") else (kind, target(held))] += 1
    return out


def _body(side: Side) -> str:
    flow = side.flow
    if flow is None:
        return ""
    lines = side.view.lines(side.file)
    if not lines:
        return ""
    last = max((c.line for c in flow.calls), default=flow.start_line)
    return "\n".join(lines[max(flow.start_line - 1, 0) : last + 1])


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
    if any(_LOCKISH.search(c.name) for c in post.flow.calls if not env.vocab.roles_of(c.name)):
        return []  # takes a lock through a wrapper (`migrate_write_lock()`): a new scheme
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


# Calls that take a lock by their name (wrappers the vocabulary does not list).
_LOCKISH = re.compile(r"(^|_)(lock|write_lock|read_lock|down_read|down_write|trylock)(_|$)")


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
    return {fam for _, call in env.added if (fam := lock_family(env, call))}


def _line_of(env: Env, flow: Flow, lock: str, lines: Sequence[str]) -> int | None:
    """The line where `flow` takes `lock` (a call, or a guard scope in `text`)."""
    for c in flow.calls:
        if lock == _RCU:
            if any(r.role == "rcu_read_lock" for r in env.vocab.roles_of(c.name)):
                return c.line
        elif c.args and norm_object(c.args[0]) == lock:
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
        locking = lock_family(env, call) not in ("", _RCU)
        if locking and (member_tail(norm_object(call.args[0])) or call.args[0]) == tail:
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


def _lock_lines(
    env: Env, flow: Flow, shown: frozenset[int] | None = None
) -> dict[str, list[tuple[int, int]]]:
    """Lock object -> every (line taking it, line of the first unlock after) in
    `flow`, in order; vocabulary locks, trylocks and lock wrappers by name
    (`shm_lock_by_ptr()`). A section with no unlock runs to the end."""
    spans: dict[str, list[tuple[int, int]]] = {}
    calls = sorted(flow.calls, key=lambda c: c.line)
    last = max((c.line for c in calls), default=0)
    for i, c in enumerate(calls):
        locking = lock_family(env, c) not in ("", _RCU)
        if not locking and not (_LOCKISH.search(c.name) and not env.vocab.roles_of(c.name)):
            continue
        if "unlock" in c.name or not c.args:
            continue
        obj = norm_object(c.args[0])
        end = next(
            (
                d.line
                for d in calls[i + 1 :]
                if "unlock" in d.name and d.args and norm_object(d.args[0]) == obj
            ),
            last + 1,
        )
        spans.setdefault(obj, []).append((c.line, end))
    # a lock released before any visible take of it was held from the start
    # (the callers took it), or, in a partial image (`shown`), from the first
    # line of the shown run that ends in the unlock: the lines hidden above it
    # may take the lock anywhere
    for obj, end in entry_held(
        flow,
        lambda c: "unlock" not in c.name and _takes_lock(env, c),
        lambda c: "unlock" in c.name,
    ).items():
        start = flow.start_line
        if shown is not None:
            start = end
            while start - 1 in shown and start - 1 > flow.start_line:
                start -= 1
            start -= 1  # sections are open intervals: the first shown line is in
        spans.setdefault(obj, []).insert(0, (start, end))
    return spans


def _entry_spans(flow: Flow, spans: dict[str, list[tuple[int, int]]]) -> set[tuple[int, int]]:
    """The sections of `spans` held on entry (_lock_lines): no call there takes it."""
    call_lines = {c.line for c in flow.calls}
    return {span for found in spans.values() for span in found if span[0] not in call_lines}


def _takes_lock(env: Env, c: Call) -> bool:
    """`c` takes a lock: the vocabulary's, a trylock, a wrapper by its name."""
    if lock_family(env, c) not in ("", _RCU):
        return True
    return _LOCKISH.search(c.name) is not None and not env.vocab.roles_of(c.name)


_POINTER_DECL = re.compile(r"\*\s*([A-Za-z_]\w*)\s*(?=[;,=)\[])")


def _shared_arg(arg: str, plain: frozenset[str]) -> bool:
    """`arg` may reach memory others share: through `->`, or a variable not
    declared here as a plain (non-pointer) local; not the address of one of this
    function's own locals, not a number."""
    a = "".join(arg.split())
    if "->" in a:
        return True
    return re.fullmatch(r"[A-Za-z_]\w*", a) is not None and a not in plain


def _accesses(flow: Flow, body: str = "") -> dict[str, int]:
    """What `flow` reads or checks, by its text -> first line: assignments from a
    dereference, and calls whose answer a branch tests (locks left out)."""
    out: dict[str, int] = {}
    counts: Counter[str] = Counter()
    pointers = set(_POINTER_DECL.findall(body)) | {
        p for p, t in zip(flow.params, flow.param_types, strict=False) if "*" in t
    }
    plain = declared_names(body.splitlines()) - pointers
    plain |= {p for p, t in zip(flow.params, flow.param_types, strict=False) if "*" not in t}
    for n in flow.nodes.values():
        for ev in n.events:
            if isinstance(ev, Assign) and "->" in ev.rhs:
                key = "".join(ev.lhs.split()).lstrip("*") + "=" + "".join(ev.rhs.split())
            elif (
                isinstance(ev, Call)
                and ev.args
                and "lock" not in ev.name
                and (
                    ev.in_condition
                    or (
                        # `init(&local, n)` fills this function's own variable
                        not re.fullmatch(r"&[A-Za-z_]\w*", "".join(ev.args[0].split()))
                        and any(_shared_arg(a, plain) for a in ev.args)
                    )
                    or any("->" in a for a in ev.args)
                )
            ):
                key = "".join(ev.text.split())  # a check or a change of shared state
            else:
                continue
            out[key] = min(out.get(key, ev.line), ev.line)
            counts[key] += 1
    # a text that occurs a different number of times before and after was added
    # or removed, not moved: only single occurrences are compared
    return {k: v for k, v in out.items() if counts[k] == 1}


def access_moved_out_of_lock(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A check, read or change of shared state that the function made with a lock
    held and now makes before taking it or after dropping it: the state can
    change (or be freed) outside the lock."""
    if pre.flow is None or post.flow is None or pre.flow.name != post.flow.name:
        return []
    pre_locks = _lock_lines(env, pre.flow, pre.shown_lines)
    post_locks = _lock_lines(env, post.flow, post.shown_lines)
    if not pre_locks or not post_locks:
        return []
    # sections held on entry: their first line takes no lock
    pre_entry = _entry_spans(pre.flow, pre_locks)
    post_entry = _entry_spans(post.flow, post_locks)
    pre_acc, post_acc = _accesses(pre.flow, _body(pre)), _accesses(post.flow, _body(post))
    hits: list[Hit] = []
    post_last = max((c.line for c in post.flow.calls), default=0)
    sections = [
        (lock, pre_span, post_span)
        for lock, spans in pre_locks.items()
        if lock in post_locks and len(post_locks[lock]) == len(spans)
        for pre_span, post_span in zip(spans, post_locks[lock], strict=True)
    ]
    for lock, (lo, hi), (post_lo, post_hi) in sections:
        for key, line in sorted(pre_acc.items(), key=lambda kv: (kv[1], kv[0])):
            if not lo < line < hi or key not in post_acc:
                continue
            at = post_acc[key]
            # (a section held on entry is not taken where it starts: nothing
            # runs "before taking" it)
            before = at < post_lo and (post_lo, post_hi) not in post_entry
            # after the unlock: only a real unlock, never a release (freeing after
            # dropping the lock is the usual, safe order), and only a use of an
            # object the function found while holding the lock (the lock is what
            # kept it alive; a parameter is the caller's to keep)
            after = (
                at > post_hi
                and post_hi <= post_last
                and not _releases(env, key)
                and (
                    _found_under(pre.flow, key, lo, hi, post.flow)
                    or ((lo, hi) in pre_entry and _hidden_local(pre, key))
                )
            )
            if not (before or after):
                continue
            if _under_new_lock(pre_locks, post_locks, at) or _lock_lookup(key, post_locks):
                continue  # another lock the patch takes covers it, or it finds the lock
            lo_touch, hi_touch = (at, post_lo) if before else (post_hi, at)
            if post.removed_lines and not any(
                lo_touch <= n <= hi_touch for n in post.removed_lines
            ):
                continue  # nothing between the access and the lock was touched
            where = (
                f"before {lock} is taken at {post.file}:{post_lo}"
                if before
                else f"after {lock} is dropped at {post.file}:{post_hi}"
            )
            hits.append(
                Hit(
                    key=("access-moved-out-of-lock", lock, key),
                    line=at,
                    fields={
                        "function": post.flow.name,
                        "access": key,
                        "lock": lock,
                        "where": "before taking" if before else "after dropping",
                    },
                    evidence=(
                        f"before: `{key}` ran with {lock} held",
                        f"after: it runs at {post.file}:{at}, {where}",
                    ),
                    variant="access-moved-out-of-lock",
                )
            )
            break
    return hits


def _under_new_lock(
    pre_locks: dict[str, list[tuple[int, int]]],
    post_locks: dict[str, list[tuple[int, int]]],
    line: int,
) -> bool:
    """`line` of the post-image runs under a lock the pre-image never took: the
    patch replaced the protection, it did not drop it."""
    return any(
        lo < line < hi
        for lock, spans in post_locks.items()
        if lock not in pre_locks
        for lo, hi in spans
    )


def _lock_lookup(key: str, post_locks: dict[str, list[tuple[int, int]]]) -> bool:
    """The access assigns the variable a lock of the post-image hangs off
    (`pool = mapping->private_data` before `write_lock(&pool->migrate_lock)`):
    finding the lock has to happen before taking it."""
    m = re.match(r"([A-Za-z_]\w*)=", key.replace(" ", ""))
    return m is not None and any(
        re.search(rf"(?<![\w>.]){re.escape(m.group(1))}\b", lock) for lock in post_locks
    )


# A call that takes what it returns out of the shared structure (a queue, list,
# free list, tree; `rmqueue` a free area's list), or an allocator that makes it:
# the caller owns the object once the lock is dropped.
_TAKES_OUT = re.compile(
    r"(?:^|_)(?:dequeue|rmqueue|pop|take|isolate|remove|del|detach|steal|unlink|alloc)(?:_|$)"
)


_PLAIN_LHS = re.compile(r"^[A-Za-z_]\w*=(?!=)")


def _found_under(flow: Flow, key: str, lo: int, hi: int, after: Flow) -> bool:
    """The access `key` uses a local pointer that `flow` assigned between `lo`
    and `hi` (while the lock was held), and not from a call that took it out
    of the shared structure (then it is the function's own after the unlock).
    A variable the patched function (`after`) no longer assigns is not the one
    found under the lock there (a parameter is the caller's object again)."""
    still = {ev.lhs for n in after.nodes.values() for ev in n.events if isinstance(ev, Assign)}
    found: dict[str, bool] = {}
    for n in flow.nodes.values():
        for ev in n.events:
            if (
                isinstance(ev, Assign)
                and lo <= ev.line <= hi
                and re.fullmatch(r"[A-Za-z_]\w*", ev.lhs)
            ):
                taken = any(_TAKES_OUT.search(name) for name in re.findall(r"(\w+)\s*\(", ev.rhs))
                found[ev.lhs] = found.get(ev.lhs, True) and not taken
    # what the access reads: not the plain local it assigns (`slab = f(meta->addr)`
    # reads meta, whatever `slab` held under the lock)
    read = _PLAIN_LHS.sub("", key, count=1)
    return any(
        shared and v in still and re.search(rf"(?<![\w>.]){re.escape(v)}\b", read)
        for v, shared in found.items()
    )


def _hidden_local(side: Side, key: str) -> bool:
    """In a partial image whose lock section starts in hidden lines, the access
    `key` uses a pointer that is not a parameter (the hunk header names them)
    and that the shown lines never assign: it was found in the hidden part of
    the section, as far as the diff tells."""
    flow = side.flow
    if flow is None or side.shown_lines is None:
        return False
    params = set(flow.params) - {""} or section_params(side.diff, flow.name)
    if params is None:
        return False
    assigned = {
        "".join(ev.lhs.split())
        for n in flow.nodes.values()
        for ev in n.events
        if isinstance(ev, Assign)
    }
    squashed = "".join(key.split())
    used = set(re.findall(r"(?<![\w>.])([a-z_]\w*)->", squashed))
    used |= set(re.findall(r"[(,]([a-z_]\w*)(?=[,)])", squashed))
    return any(v not in params and v not in assigned for v in used)


def _releases(env: Env, key: str) -> bool:
    """`key` (an access's text) is a put, free or destroy, or tracing."""
    name = key.split("(", 1)[0].rsplit("=", maxsplit=1)[-1]
    if name.startswith("trace_"):
        return True
    return any(
        r.role in ("put", "free", "destroy", "dec_and_test", "rcu_free")
        for r in env.vocab.roles_of(name)
    )


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "protection-removed", "change", protection_removed, protection_removed.__doc__ or ""
        ),
        Matcher(
            "access-moved-out-of-lock",
            "change",
            access_moved_out_of_lock,
            access_moved_out_of_lock.__doc__ or "",
        ),
        Matcher(
            "init-after-publish", "change", init_after_publish, init_after_publish.__doc__ or ""
        ),
    )
)

__all__ = [
    "access_moved_out_of_lock",
    "init_after_publish",
    "protection_removed",
]
