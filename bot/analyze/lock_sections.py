"""Access moved out of a lock: a check, read or state change the function made
with a lock held and now makes before taking it or after dropping it.

`access-moved-out-of-lock` (rule MMLC008): the lock's sections are matched
before and after the patch (same lock, same number of sections), and each
access made equally often on both sides is paired in order; one that ran inside
a section and now runs outside it is reported when the state can change, or be
freed, outside the lock: an access before the lock is taken; after the unlock,
a use of an object found while holding the lock, or a change of a state bit or
counter of the locked object (the state other holders test under it).

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re

from bot.analyze.cscan import declared_names
from bot.analyze.entry_locks import LOCKISH as _LOCKISH
from bot.analyze.entry_locks import entry_held, section_params
from bot.analyze.entry_locks import side_body as _body
from bot.analyze.flow import Assign, Call, Flow, norm_object
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side, lock_family
from bot.analyze.rules_match import RCU_SECTION as _RCU


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


def _accesses(flow: Flow, body: str = "") -> dict[str, list[int]]:
    """What `flow` reads or checks, by its text -> the lines it is made on, in
    order: assignments from a dereference, and calls whose answer a branch
    tests (locks left out)."""
    out: dict[str, list[int]] = {}
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
            out.setdefault(key, []).append(ev.line)
    return {k: sorted(v) for k, v in out.items()}


def _paired(pre: dict[str, list[int]], post: dict[str, list[int]]) -> list[tuple[str, int, int]]:
    """(text, pre line, post line) for each access both sides make equally often,
    the n-th occurrence before paired with the n-th after: a text made a
    different number of times was added or removed, not moved."""
    out = [
        (key, a, b)
        for key, lines in pre.items()
        if len(post.get(key, ())) == len(lines)
        for a, b in zip(lines, post[key], strict=True)
    ]
    return sorted(out, key=lambda t: (t[1], t[0]))


# Calls that change an object's state bits or counters in place.
_STATE_CHANGE = re.compile(
    r"(?:__)?(?:set|clear|change|test_and_set|test_and_clear|test_and_change)_bit(?:_unlock)?"
    r"|atomic(?:64|_long)?_(?:set|inc|dec|add|sub|and|or|xchg)\w*"
)


def _state_of_locked(flow: Flow, key: str, lock: str) -> bool:
    """The access changes the state (a bit or counter) of the object whose lock
    it is, or of the object that lock was derived from or derives
    (`zhdr = page_address(page)`; `clear_bit(X, &page->private)` after dropping
    zhdr's lock): other holders of the lock test that state under it, so a
    change made after dropping it races with them."""
    call = re.match(r"([A-Za-z_]\w*)\(", key)
    if call is None or not _STATE_CHANGE.fullmatch(call.group(1)):
        return False
    owner = re.match(r"&?([A-Za-z_]\w*)", lock.replace(" ", ""))
    if owner is None:
        return False
    linked = {owner.group(1)}
    for n in flow.nodes.values():
        for ev in n.events:
            if not isinstance(ev, Assign) or not re.fullmatch(r"[A-Za-z_]\w*", ev.lhs):
                continue
            named = set(re.findall(r"(?<![\w>.])([A-Za-z_]\w*)", ev.rhs))
            if ev.lhs == owner.group(1):
                linked |= named
            elif owner.group(1) in named:
                linked.add(ev.lhs)
    touched = set(re.findall(r"(?<![\w>.])([A-Za-z_]\w*)->", key.split("(", 1)[1]))
    return bool(touched & linked)


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
    pairs = _paired(pre_acc, post_acc)
    for lock, (lo, hi), (post_lo, post_hi) in sections:
        for key, line, at in pairs:
            if not lo < line < hi:
                continue
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
                    or _state_of_locked(pre.flow, key, lock)
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


MATCHERS["access-moved-out-of-lock"] = Matcher(
    "access-moved-out-of-lock",
    "change",
    access_moved_out_of_lock,
    access_moved_out_of_lock.__doc__ or "",
)

__all__ = ["access_moved_out_of_lock"]
