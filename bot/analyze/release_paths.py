"""Release paths that stop releasing: the first lifecycle shapes the bot knew.

`release-path-loses-destroy` (MMLC001): a release path (by name, by dropping a
reference, or registered as a release callback) no longer reaches a destroy or
free, or the scheduling of a work item that destroys, that it used to reach
directly or through helpers, and the series adds no other destroy.

`release-path-loses-put` (MMLC002 `lost-put`, `pin-removed`): a function no
longer drops a reference it used to drop, and nothing else in the series drops
it; a tryget pin removed with its put while the object is still used.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from bot.analyze.api import GET_ROLES, PUT_ROLES
from bot.analyze.flow import (
    Assign,
    Call,
    Event,
    Flow,
    Return,
    base_name,
    explore,
    mentions,
    norm_object,
)
from bot.analyze.flow_build import LOOP_MACRO
from bot.analyze.flow_source import Reached, SourceView, member_tail, reach
from bot.analyze.rules_match import (
    _DESTROY_WORK,
    MATCHERS,
    Env,
    Hit,
    Matcher,
    Side,
    _acquisition_removed,
    _loc,
    _object_arg,
    is_release_path,
)

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
    *,
    once: bool = False,
) -> list[tuple[tuple[str, ...], Reached, str]]:
    """Reached calls (filtered by `keep`) pre reaches more often than post; with
    `once` (a destroy: an object dies once), only those post no longer reaches."""
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
        if after.get(key, 0) >= (1 if once else n):
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
    assert pre.flow is not None and post.flow is not None
    # The object must still be there after the patch: a release path that stops
    # freeing an array the patch deletes has not lost a destroy, it lost the array.
    names = _names_in(post.flow)
    bases = {base_name(a) for a in site.args} - {""}
    # a loop cursor stands for the container it walks: a loop the patch replaces
    # (`for_each_target(t, ctx) put(t->pid)` -> `set_targets(ctx, NULL)`) did not
    # lose its object while the container is still there
    for loop in (c for c in pre.flow.calls if LOOP_MACRO.search(c.name)):
        if loop.args and base_name(loop.args[0]) in bases:
            bases |= {base_name(a) for a in loop.args[1:]} - {""}
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
    still = {
        _terminal_key(x)[1]
        for x in reach(post.flow, post.view, env.vocab, env.depth + 1)
        if _destroyish(x, env, post.view)
    }
    for key, r, what in _lost(
        env, pre, post, lambda r: _destroyish(r, env, pre.view), _terminal_key, once=True
    ):
        if key[1] and key[1] in still:
            continue  # the object is still destroyed on this release path (once is enough)
        site = r.site
        if not _removed_here(pre, post, site):
            continue
        tail = member_tail(_object_arg(r.terminal, r.role) or "")
        if env.series_adds(r.terminal.name, tail, besides=pre.flow.name):
            continue
        if r.chain and env.series_adds(site.name, besides=pre.flow.name):
            continue
        if _acquisition_removed(env, pre, post, site):
            continue  # what it destroyed is no longer made here either
        if _body_moved_in(pre, post, site.name):
            continue  # the helper became this function (renamed into it, or merged)
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


def _body_moved_in(pre: Side, post: Side, name: str) -> bool:
    """The patch deletes helper `name` (its definition is gone after it) and
    lines of its body that the patch keeps now sit inside this function's
    post-image: the helper was renamed into this function or merged with it,
    so its steps are here, whether a partial image shows them or not."""
    if pre.diff is None or post.flow is None or post.view.definitions(name, post.file):
        return False
    helper = next(iter(pre.view.definitions(name, pre.file)), None)
    if helper is None or helper.start_line not in pre.removed_lines:
        return False
    ends = [c.line for c in helper.calls] + [
        ev.line for n in helper.nodes.values() for ev in n.events
    ]
    post_lines = [c.line for c in post.flow.calls] + [
        ev.line for n in post.flow.nodes.values() for ev in n.events
    ]
    if not ends or not post_lines:
        return False
    lo, hi = post.flow.start_line, max(post_lines)
    return any(
        (kept := post.post_line(n)) is not None and lo <= kept <= hi
        for n in range(helper.start_line + 1, max(ends) + 1)
    )


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

    # calls of this function that take a reference as well as drop one through
    # their helpers (`pfn_to_online_page()` gets and puts its pagemap): balanced
    taken: dict[tuple[str, int], set[str]] = {}
    for r in reach(pre.flow, pre.view, env.vocab, env.depth):
        if r.chain and r.role.role in GET_ROLES:
            taken.setdefault((r.site.name, r.site.line), set()).add(r.role.family)

    def keep(r: Reached) -> str:
        if r.role.role not in PUT_ROLES or not r.role.balance:
            return ""
        # a helper that takes and drops the same kind of reference is balanced on
        # its own: no longer calling it loses no put of ours
        if r.chain and r.role.family in r.holder_gets:
            return ""
        if r.chain and taken.get((r.site.name, r.site.line)):
            return ""  # its own get (by whatever family name it is known) pairs the put
        return "put"

    hits: list[Hit] = []
    for key, r, _ in _lost(env, pre, post, keep, lambda r: (r.role.family,)):
        if env.series_adds_role(PUT_ROLES, r.role.family, besides=pre.flow.name):
            continue
        if env.series_removes_role(GET_ROLES, r.role.family, besides=pre.flow.name):
            continue  # the get that reference paired with went too, elsewhere
        site = r.site
        if r.chain and env.series_adds(site.name, besides=pre.flow.name):
            continue  # the call that reached the put moved elsewhere in the series
        exit_line = _exit_loses_put(env, pre, post, site, r.role.family)
        if exit_line is None and not _removed_here(pre, post, site):
            continue
        if post.shown_lines is not None and _exit_went_too(pre, site):
            continue  # the path no longer leaves here: it runs on into code not shown
        if _branch_went(pre, site):
            continue  # the whole error branch went, put and exit: that path is gone
        if exit_line is None and _handed_to_new_call(pre, post, site):
            continue  # a new callee we cannot read takes what the put was given
        pin = _pin_removed(env, pre, post, site)
        if pin is None and _acquisition_removed(env, pre, post, site):
            continue  # the get went with the put: nothing is held any more
        evidence = [f"removed: {site.text} at {_loc(pre.file, site)}"]
        if pin is not None:
            evidence.insert(0, f"removed: {pin.text} at {_loc(pre.file, pin)}")
        evidence += _chain_evidence(r)
        variant = "lost-put" if pin is None else "pin-removed"
        via = ""
        if exit_line is not None and pin is None:
            variant = "lost-put-on-path"
            via = post.line_text(exit_line)
            evidence.append(f"still leaves through `{via}` at {post.file}:{exit_line}")
        hits.append(
            Hit(
                key=(variant, *key),
                line=None,
                removed_line=site.line,
                fields={
                    "function": pre.flow.name,
                    "removed": site.text,
                    "terminal": r.terminal.text,
                    "terminal_name": r.terminal.name,
                    "family": r.role.family,
                    "pin": pin.text if pin is not None else "",
                    "exit": via,
                },
                evidence=tuple(evidence),
                variant=variant,
            )
        )
    return hits


_EXIT_LINE = re.compile(r"^\s*(?:return\b[^;]*|goto\s+\w+\s*|break\s*|continue\s*);")


def _exit_loses_put(env: Env, pre: Side, post: Side, site: Call, family: str) -> int | None:
    """The patch removes a put that a `return` right after it relied on, keeps
    that return, and the function still puts elsewhere: the post-image line of
    the return when some path reaches it without a put of `family` on the
    object (the put is lost on that path, not moved). None otherwise."""
    assert post.flow is not None
    if site.line not in pre.removed_lines or all(c.name != site.name for c in post.flow.calls):
        return None  # gone entirely: the whole-function check judges it
    lines = pre.view.lines(pre.file)
    exit_pre = next(
        (
            ln
            for ln in range(site.line + 1, min(site.line + 4, len(lines)) + 1)
            if ln not in pre.removed_lines
            and (t := lines[ln - 1].strip())
            and not t.startswith(("/*", "*", "//"))
        ),
        None,
    )
    if exit_pre is None or not re.match(r"return\b", lines[exit_pre - 1].strip()):
        return None
    exit_post = pre.post_line(exit_pre)
    if exit_post is None or not post.shows(exit_post, exit_post):
        return None
    objs = {base_name(a) for a in site.args} - {""}

    def puts(c: Call) -> bool:
        if not objs or not any(base_name(a) in objs for a in c.args):
            return False
        if c.name == site.name:
            return True
        return any(r.role in PUT_ROLES and r.family == family for r in env.vocab.roles_of(c.name))

    bare = False

    def on_event(held: bool, ev: Event) -> bool:
        nonlocal bare
        if isinstance(ev, Call) and puts(ev):
            return True
        if isinstance(ev, Return) and ev.line == exit_post and not held:
            bare = True
        return held

    explore(post.flow, False, on_event)
    return exit_post if bare else None


_IF_LINE = re.compile(r"^\s*(?:\}\s*else\s+)?if\s*\(")
_SIMPLE_ASSIGN = re.compile(r"^\s*[\w>.-]+\s*=\s*[^;]*;\s*$")


def _branch_went(pre: Side, site: Call) -> bool:
    """The put sat in a branch the patch removes whole: its `if` line, the put,
    and the exit after it (past simple assignments such as `err = -EIO;`)."""
    if site.line not in pre.removed_lines or not site.guards:
        return False
    lines = pre.view.lines(pre.file)
    start = next(
        (
            ln
            for ln in range(site.line - 1, max(site.line - 8, 0), -1)
            if _IF_LINE.match(lines[ln - 1])
        ),
        None,
    )
    if start is None or any(ln not in pre.removed_lines for ln in range(start, site.line)):
        return False
    for ln in range(site.line + 1, min(site.line + 5, len(lines)) + 1):
        if ln not in pre.removed_lines:
            return False
        text = lines[ln - 1]
        if _EXIT_LINE.match(text):
            return True
        if text.strip() and not _SIMPLE_ASSIGN.match(text):
            return False
    return False


def _handed_to_new_call(pre: Side, post: Side, site: Call) -> bool:
    """The post-image makes a new call that takes the put's object, or what it
    hangs off, whole, and whose body it cannot read in full: that callee may drop
    the reference now (an object handed to an unknown callee is taken as handed
    off, as everywhere else)."""
    assert pre.flow is not None and post.flow is not None
    objs = {norm_object(a) for a in site.args} - {""}
    owners = objs | {base_name(o) for o in objs}
    before = {c.name for c in pre.flow.calls}
    lo, hi = _replaced_by(pre, site.line)
    for c in post.flow.calls:
        if c.name in before or c.in_condition or not lo < c.line < hi:
            continue  # only a statement where the put was: a test is not a hand-off
        if not any(norm_object(a) in owners for a in c.args):
            continue
        if post.view.partial or not post.view.definitions(c.name, post.file):
            return True
    return False


def _replaced_by(pre: Side, line: int) -> tuple[int, int]:
    """The post-image lines strictly between the kept lines around a removed
    pre-image line: what the patch put in its place."""
    if pre.diff is None:
        return (0, 1 << 30)
    lo = next((p for ln in range(line - 1, 0, -1) if (p := pre.post_line(ln)) is not None), 0)
    hi = next(
        (p for ln in range(line + 1, line + 200) if (p := pre.post_line(ln)) is not None),
        1 << 30,
    )
    return lo, hi


def _exit_went_too(pre: Side, site: Call) -> bool:
    """The statement after the put in the pre-image is an exit (`return`, `goto`,
    `break`) that the patch removes as well: the path that ended there now goes
    on, and in a partial image the code it goes on to is not shown."""
    lines = pre.view.lines(pre.file)
    for ln in range(site.line + 1, min(site.line + 4, len(lines)) + 1):
        text = lines[ln - 1].strip()
        if not text or text.startswith(("/*", "*", "//")):
            continue
        return bool(_EXIT_LINE.match(text)) and ln in pre.removed_lines
    return False


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


MATCHERS.update(
    (m.name, m)
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
    )
)

__all__ = ["release_path_loses_destroy", "release_path_loses_put"]
