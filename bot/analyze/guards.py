"""Conditions a patch changes around an object's lifetime.

`release-now-conditional` (MMLC002): a release the function made whatever
happened (a put, a free, a destroy) now runs only under a new condition, and
that condition is about something other than the object released (not a NULL
or error test of it). On the paths where the condition is false the object is
neither released nor handed to anyone: it leaks, or outlives what it holds.
Typical shape: a cleanup made to depend on a feature switch that can change
between the setup and the teardown.

`state-check-removed` (MMLC009): an early exit the function took on an object's
state is gone, and the function goes on using the object:

* the exit is turned into a warning on the same condition (`if (C) return;`
  becomes `VM_WARN_ON_ONCE(C);`): the state the old code handled is now assumed
  impossible, and the code runs on into it;
* the exit tested a liveness predicate of the vocabulary (role `liveness_test`:
  `check_stable_address_space()`, `percpu_ref_is_dying()`, `css_is_dying()`...):
  the function now works on an object that may be half built or being torn down.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from bot.analyze.api import PUT_ROLES, RELEASE_ROLES
from bot.analyze.dying import flag_tests, found_through, is_dying_flag
from bot.analyze.flow import Assign, Call, Flow, base_name
from bot.analyze.naming import STORING_CALL, split_verb
from bot.analyze.rules_match import (
    _LOGGING,
    MATCHERS,
    Env,
    Hit,
    Matcher,
    Side,
    _named_release,
    lock_family,
)

_RELEASE_VERBS = frozenset({"free", "destroy", "put", "release", "unref", "unregister"})
# Warnings and assertions: they report a state and carry on (or stop the machine).
_WARNING = re.compile(r"^(?:VM_)?(?:WARN|BUG)_ON(?:_ONCE)?(?:_\w+)?$|^WARN(?:_ONCE)?$")
# A condition about the function's own outcome (`if (err)`, `if (!ret)`):
# releasing on failure only is how ownership passes on success.
_OUTCOME = re.compile(r"^!?\s*(?:\(\s*)?(?:ret|err|error|rc|status|res|result)\s*\)?$|IS_ERR")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_MEMBER_USE = re.compile(r"(?:->|\.)\s*([A-Za-z_]\w*)")
_EXIT = re.compile(r"^\s*(?:return\b[^;]*|goto\s+\w+\s*|break\s*);")
_IF = re.compile(r"^\s*if\s*\((?P<cond>.*)\)\s*(?P<rest>.*)$")


def _squash(text: str) -> str:
    return "".join(text.split())


def _is_release(env: Env, call: Call) -> bool:
    if any(r.role in PUT_ROLES | RELEASE_ROLES for r in env.vocab.roles_of(call.name)):
        return True
    sv = split_verb(call.name)
    return sv is not None and sv[0] in _RELEASE_VERBS


def _handed_off(flow: Flow, bases: set[str]) -> bool:
    """Some path stores one of `bases` where others find it (a field, a list)."""
    for n in flow.nodes.values():
        for ev in n.events:
            if isinstance(ev, Assign):
                stored = base_name(ev.rhs) in bases and _squash(ev.rhs) == base_name(ev.rhs)
                if stored and not re.fullmatch(r"[A-Za-z_]\w*", ev.lhs.strip()):
                    return True
            elif (
                isinstance(ev, Call)
                and STORING_CALL.search(ev.name)
                and not _LOGGING.search(ev.name)
                and any(base_name(a) in bases for a in ev.args)
            ):
                return True
    return False


def _assigned_locals(flow: Flow) -> set[str]:
    """Plain variables `flow` assigns (locals and parameters it updates)."""
    return {
        ev.lhs.strip()
        for n in flow.nodes.values()
        for ev in n.events
        if isinstance(ev, Assign) and re.fullmatch(r"[A-Za-z_]\w*", ev.lhs.strip())
    }


def release_now_conditional(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A release made on every path before the patch now runs only under a new
    condition that does not test the released object, and no other path of the
    function releases or hands off that object instead."""
    if pre.flow is None or post.flow is None or not post.removed_lines:
        return []
    hits: list[Hit] = []
    for call in post.flow.calls:
        if not call.guards or call.in_condition or not call.args or not _is_release(env, call):
            continue
        text = _squash(call.text)
        before = [c for c in pre.flow.calls if _squash(c.text) == text]
        if len(before) != 1 or before[0].in_condition:
            continue
        if sum(1 for c in post.flow.calls if _squash(c.text) == text) != 1:
            continue  # released on more than one branch
        old = {_squash(g) for g in before[0].guards}
        new = [g for g in call.guards if _squash(g) not in old]
        if not new or not old <= {_squash(g) for g in call.guards}:
            continue
        bases = {base_name(a) for a in call.args} - {""}
        words = set(_IDENT.findall(" ".join(call.args)))
        cond = new[-1]
        if set(_IDENT.findall(cond)) & (bases | words) or _OUTCOME.search(cond.strip()):
            continue  # a NULL/state test of the object, or release on failure only
        if _handed_off(post.flow, bases):
            continue
        if set(_IDENT.findall(cond)) & _assigned_locals(post.flow):
            continue  # a flag the function keeps (`got_page`): it tracks the ownership
        if set(_MEMBER_USE.findall(cond)) & env.members_added:
            # a mode the series adds (`if (!c->keep_on_error)`): an object that
            # never sets its new member is released as before
            continue
        # the condition must be one the patch wrote: a guard line added
        if not any(ln in post.removed_lines for ln in range(call.line - 3, call.line + 1)):
            continue
        hits.append(
            Hit(
                key=("release-now-conditional", call.name, _squash(cond)),
                line=call.line,
                fields={
                    "function": post.flow.name,
                    "release": call.text,
                    "condition": " ".join(cond.split()),
                },
                evidence=(
                    f"before: `{before[0].text}` at {pre.file}:{before[0].line} ran on every "
                    f"path of {pre.flow.name}() that reached it",
                    f"after: it runs only if `{' '.join(cond.split())}` "
                    f"({post.file}:{call.line}); nothing else releases or hands off "
                    f"{', '.join(sorted(bases))} when that is false",
                ),
                variant="release-now-conditional",
            )
        )
    return hits


def _changed_exits(side: Side) -> list[tuple[int, str, str]]:
    """(line, condition, exit statement) of every `if (C) return|goto|break;` the
    patch removes from (pre) or adds to (post) this side: one-line conditions,
    the exit on the same line or the next."""
    text = side.view.text(side.file) if side.flow is not None else None
    if not text or not side.removed_lines:
        return []
    lines = side.view.lines(side.file)
    out: list[tuple[int, str, str]] = []
    for ln in sorted(side.removed_lines):
        if not 0 < ln <= len(lines):
            continue
        m = _IF.match(lines[ln - 1])
        if m is None or m.group("cond").count("(") != m.group("cond").count(")"):
            continue
        rest = m.group("rest").strip()
        if not rest and ln + 1 in side.removed_lines and ln < len(lines):
            rest = lines[ln]
        elif rest == "{":
            rest = _block_exit(lines, ln, side.removed_lines)
        if _EXIT.match(rest):
            out.append((ln, m.group("cond").strip(), rest.strip()))
    return out


_ONCE = re.compile(r"\b(?:READ_ONCE|data_race)\s*\(")


def _plain(cond: str) -> str:
    """`cond` without READ_ONCE()/data_race() wrappers and spaces."""
    out = _squash(cond)
    while (m := _ONCE.search(out)) is not None:
        depth, i = 1, m.end()
        while i < len(out) and depth:
            depth += {"(": 1, ")": -1}.get(out[i], 0)
            i += 1
        out = out[: m.start()] + out[m.end() : i - 1] + out[i:]
    return out


def _held_at(env: Env, flow: Flow, line: int) -> Call | None:
    """The innermost lock `flow` holds at `line` (taken before it in the text,
    not released between), by the vocabulary's lock roles and trylocks."""
    held: list[Call] = []
    for c in sorted(flow.calls, key=lambda c: c.line):
        if c.line >= line:
            break
        if lock_family(env, c):
            held.append(c)
        elif held and any(
            r.role in ("unlock", "rcu_read_unlock") for r in env.vocab.roles_of(c.name)
        ):
            held.pop()
    return held[-1] if held else None


def _tested_before(env: Env, flow: Flow, cond: str, lock: Call) -> int | None:
    """The line where `flow` branches on `cond` before it takes `lock` (the
    unlocked test the locked one re-checked), or None."""
    want = _plain(cond)
    taken = [c.line for c in flow.calls if _squash(c.text) == _squash(lock.text)]
    if len(taken) != 1:
        return None
    for n in flow.nodes.values():
        for _, assume in n.succ:
            if assume is not None and assume.line < taken[0] and _plain(assume.cond) == want:
                return assume.line
    return None


def _recheck_hit(
    pre: Side, post: Side, *, line: int, cond: str, exit_stmt: str, lock: Call, outside: int
) -> Hit:
    assert post.flow is not None
    return Hit(
        key=("recheck-under-lock-removed", _squash(cond), lock.name),
        line=None,
        removed_line=line,
        fields={
            "function": post.flow.name,
            "condition": cond,
            "exit": exit_stmt,
            "lock": lock.text,
            "object": base_name(cond.lstrip("!(")) or "the object",
        },
        evidence=(
            f"before: `if ({cond}) {exit_stmt}` at {pre.file}:{line} re-checked it after "
            f"`{lock.text}`",
            f"after: only the test before the lock is left ({post.file}:{outside}); "
            "the state can change between that test and the lock",
        ),
        variant="recheck-under-lock-removed",
    )


_SIMPLE_STORE = re.compile(r"^[A-Za-z_][\w.>-]*\s*=[^;=]+;$")


def _block_exit(lines: Sequence[str], at: int, changed: frozenset[int]) -> str:
    """The exit of a small changed `{ ... }` block opened on line `at`: a few
    plain stores (`result = SCAN_FAIL;`) then `return`/`goto`/`break`, or ""."""
    body: list[str] = []
    for ln in range(at + 1, min(at + 6, len(lines)) + 1):
        if ln not in changed:
            return ""
        t = lines[ln - 1].strip()
        if t == "}":
            if body and _EXIT.match(body[-1]) and all(_SIMPLE_STORE.match(b) for b in body[:-1]):
                return body[-1]
            return ""
        if t and not t.startswith(("/*", "*", "//")):
            body.append(t)
    return ""


def _tests(flow: Flow, cond: str) -> bool:
    """The flow still branches on `cond` (or its negation)."""
    c = _squash(cond)
    for call in flow.calls:
        if any(c in _squash(g) for g in call.guards):
            return True
    for n in flow.nodes.values():
        for ev in n.events:
            if isinstance(ev, Call) and ev.in_condition and c in _squash(ev.text):
                return True
    return False


def _still_used(flow: Flow, obj: str) -> bool:
    return any(
        any(base_name(a) == obj for a in c.args)
        for c in flow.calls
        if not _LOGGING.search(c.name) and not _WARNING.match(c.name)
    )


def state_check_removed(env: Env, pre: Side, post: Side) -> list[Hit]:
    """An early exit on an object's state removed from the function while it goes
    on using the object: turned into a warning on the same condition, or a
    liveness test of the vocabulary dropped."""
    if pre.flow is None or post.flow is None or pre.flow.name != post.flow.name:
        return []
    live = env.vocab.names_with_role("liveness_test")
    hits: list[Hit] = []
    # an exit the patch writes anew (`if (!helper(mm)) goto unlock;`) replaces
    # the check it removes: a rewrite, not a removal
    new_exits = {_squash(e) for _, _, e in _changed_exits(post)}
    for line, cond, exit_stmt in _changed_exits(pre):
        if not _inside(pre.flow, line):
            continue  # another function's exit in the same file
        dying = [
            (flag, obj)
            for flag, obj in flag_tests(cond)
            if not _tests(post.flow, flag)
            and is_dying_flag(env.vocab, pre.view, [pre.file, *pre.view.files], flag)
        ]
        if dying:
            # however the exit is rewritten, the mark that the object is going
            # away is no longer tested
            hit = _liveness_hit(pre, post, line=line, cond=cond, exit_stmt=exit_stmt, tested=dying)
            if hit is not None:
                hits.append(hit)
                continue
        if _squash(exit_stmt) in new_exits:
            continue
        lock = _held_at(env, pre.flow, line)
        if lock is not None:
            outside = _tested_before(env, post.flow, cond, lock)
            if outside is not None:
                hits.append(
                    _recheck_hit(
                        pre,
                        post,
                        line=line,
                        cond=cond,
                        exit_stmt=exit_stmt,
                        lock=lock,
                        outside=outside,
                    )
                )
                continue
        if _tests(post.flow, cond):
            continue
        squashed = _squash(cond).lstrip("!")
        warned = next(
            (
                c
                for c in post.flow.calls
                if _WARNING.match(c.name)
                and c.args
                and _squash(c.args[0]).lstrip("!") == squashed
                and c.line in post.removed_lines
            ),
            None,
        )
        if warned is not None:
            objs = [base_name(w) for w in _IDENT.findall(cond) if w in pre.flow.params]
            hits.append(
                Hit(
                    key=("exit-demoted-to-warning", _squash(cond)),
                    line=warned.line,
                    removed_line=line,
                    fields={
                        "function": post.flow.name,
                        "condition": cond,
                        "exit": exit_stmt,
                        "warning": warned.text,
                        "object": objs[0] if objs else "the object",
                    },
                    evidence=(
                        f"before: `if ({cond}) {exit_stmt}` at {pre.file}:{line}",
                        f"after: `{warned.text}` at {post.file}:{warned.line}, and "
                        f"{post.flow.name}() carries on",
                    ),
                    variant="exit-demoted-to-warning",
                )
            )
            continue
        tested = [
            (name, m.group(1) if m else "")
            for name in _IDENT.findall(cond)
            if name in live
            for m in [re.search(rf"\b{re.escape(name)}\s*\(\s*(?:&\s*)?([A-Za-z_]\w*)", cond)]
        ]
        hit = _liveness_hit(pre, post, line=line, cond=cond, exit_stmt=exit_stmt, tested=tested)
        if hit is not None:
            hits.append(hit)
    return hits


def _inside(flow: Flow, line: int) -> bool:
    """`line` lies within `flow`'s body (as far as its events reach)."""
    last = max(
        [c.line for c in flow.calls] + [ev.line for n in flow.nodes.values() for ev in n.events],
        default=flow.start_line,
    )
    return flow.start_line <= line <= last + 1


def _liveness_hit(
    pre: Side, post: Side, *, line: int, cond: str, exit_stmt: str, tested: list[tuple[str, str]]
) -> Hit | None:
    """The liveness check `cond` removed, for the first (test, object) whose
    object (or the object it was found through) the function still uses."""
    assert pre.flow is not None and post.flow is not None
    for name, obj in tested:
        if not obj or not any(_still_used(post.flow, o) for o in found_through(pre.flow, obj)):
            continue
        return Hit(
            key=("liveness-check-removed", name, obj),
            line=None,
            removed_line=line,
            fields={
                "function": post.flow.name,
                "condition": cond,
                "exit": exit_stmt,
                "object": obj,
            },
            evidence=(
                f"before: `if ({cond}) {exit_stmt}` at {pre.file}:{line} kept "
                f"{pre.flow.name}() off {obj} in that state",
                f"after: {post.flow.name}() tests nothing of the kind and still works on {obj}",
            ),
            variant="liveness-check-removed",
        )
    return None


_RESET = re.compile(r"^(?:0|NULL|false|0UL|0L|-1)$")


def reset_removed_from_release(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A function named as a release path (`*_free*`, `*_release*`...) no longer
    resets a field of an object it is given (`page->private = 0;`), the object
    is not freed there, and nothing else in the file resets that field."""
    if pre.flow is None or post.flow is None or not pre.removed_lines:
        return []
    if not _named_release(post.flow.name):
        return []
    params = {p for p in post.flow.params if p}
    # a partial image (diff-only) may not show the signature: then an object the
    # shown lines never assign is taken as one the function was given
    unknown_signature = not params and post.shown_lines is not None
    local = _assigned_locals(pre.flow) | _assigned_locals(post.flow)
    kept = {
        _squash(ev.lhs)
        for n in post.flow.nodes.values()
        for ev in n.events
        if isinstance(ev, Assign)
    }
    hits: list[Hit] = []
    for n in pre.flow.nodes.values():
        for ev in n.events:
            if not isinstance(ev, Assign) or ev.line not in pre.removed_lines:
                continue
            lhs = _squash(ev.lhs)
            m = re.fullmatch(r"([A-Za-z_]\w*)->(\w+)", lhs)
            given = m is not None and (
                m.group(1) in params or (unknown_signature and m.group(1) not in local)
            )
            if m is None or not given or not _RESET.match(ev.rhs.strip()):
                continue
            obj, fld = m.groups()
            if lhs in kept or _released(env, post.flow, obj):
                continue
            if _reset_added(post, fld):
                continue  # the patch resets it elsewhere (moved, or done on allocation)
            if any(
                fld in _squash(c.text) and base_name(c.args[0] if c.args else "") == obj
                for c in post.flow.calls
                if c.name.startswith(("memset", "set_", "clear_"))
            ):
                continue
            hits.append(
                Hit(
                    key=("reset-removed-from-release", fld),
                    line=None,
                    removed_line=ev.line,
                    fields={"function": post.flow.name, "object": obj, "field": f"{obj}->{fld}"},
                    evidence=(
                        f"before: `{ev.lhs.strip()} = {ev.rhs.strip()};` at {pre.file}:{ev.line}",
                        f"after: {post.flow.name}() releases {obj} without resetting "
                        f"{obj}->{fld}, and {post.file} resets it nowhere else",
                    ),
                    variant="reset-removed-from-release",
                )
            )
    hits += _setter_resets_removed(
        env, pre, post, given=lambda o: o in params or (unknown_signature and o not in local)
    )
    return hits


# A setter by name: `bdi_set_min_ratio(bdi, 0)`, `set_page_private(page, 0)`.
_SETTER = re.compile(r"(?:^|_)set(?:_|$)")
# A state that says the object is going away: `*_set_exiting()`, `set_*_dying()`.
_GOING = re.compile(r"(?:^|_)(?:exiting|dying|dead|shutdown|closing|going|unusable)(?:_|$)")


def _setter_resets_removed(
    env: Env, pre: Side, post: Side, *, given: Callable[[str], bool]
) -> list[Hit]:
    """Setter calls on a given object with a reset value (`x_set_y(obj, 0)`)
    removed from the release path, not called on it any more, not added
    elsewhere by the series."""
    assert pre.flow is not None and post.flow is not None
    hits: list[Hit] = []
    for c in pre.flow.calls:
        if c.line not in pre.removed_lines or c.in_condition or not c.args:
            continue
        obj = base_name(c.args[0])
        if not _SETTER.search(c.name) or not obj or not given(obj):
            continue
        # a reset value, or a setter that announces the object is going away
        # (`mapping_set_exiting(mapping)`): others test it before using the object
        if not any(_RESET.match(a.strip()) for a in c.args[1:]) and not _GOING.search(c.name):
            continue
        if any(k.name == c.name for k in post.flow.calls) or env.series_adds(c.name):
            continue
        if _released(env, post.flow, obj):
            continue
        going = not any(_RESET.match(a.strip()) for a in c.args[1:])
        hits.append(
            Hit(
                key=("going-mark-removed" if going else "reset-removed-from-release", c.name),
                line=None,
                removed_line=c.line,
                fields={
                    "function": post.flow.name,
                    "object": obj,
                    "field": f"{obj} (`{c.text}`)",
                    "call": c.text,
                },
                evidence=(
                    f"before: `{c.text}` at {pre.file}:{c.line}",
                    f"after: {post.flow.name}() releases {obj} without it, and the series "
                    f"calls {c.name}() nowhere else",
                ),
                variant="going-mark-removed" if going else "reset-removed-from-release",
            )
        )
    return hits


def _reset_added(post: Side, fld: str) -> bool:
    """A line the patch adds to this file resets `->fld` (or clears it by call)."""
    lines = post.view.lines(post.file)
    pattern = re.compile(
        rf"->\s*{re.escape(fld)}\s*=\s*(?:0|NULL|false)\b|\b\w*{re.escape(fld)}\w*\("
    )
    return any(0 < ln <= len(lines) and pattern.search(lines[ln - 1]) for ln in post.removed_lines)


def _released(env: Env, flow: Flow, obj: str) -> bool:
    """`flow` frees or puts `obj` itself (by the vocabulary): a reset before that
    is moot."""
    return any(
        any(r.role in PUT_ROLES | RELEASE_ROLES for r in env.vocab.roles_of(c.name))
        and any(base_name(a) == obj for a in c.args)
        for c in flow.calls
    )


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "release-now-conditional",
            "change",
            release_now_conditional,
            release_now_conditional.__doc__ or "",
        ),
        Matcher(
            "state-check-removed", "change", state_check_removed, state_check_removed.__doc__ or ""
        ),
        Matcher(
            "reset-removed-from-release",
            "change",
            reset_removed_from_release,
            reset_removed_from_release.__doc__ or "",
        ),
    )
)

__all__ = ["release_now_conditional", "reset_removed_from_release", "state_check_removed"]
