"""Naming conventions of the kernel's lifecycle APIs: what a name says it does.

`split_verb("foo_put")` -> ("put", "foo"); the counterparts a name pairs with
(`foo_get` with `foo_put`, `foo_alloc` with `foo_free`); registrations
(`register_foo`/`unregister_foo`, `bar_create_foo`/`bar_remove_foo`); names of
calls that may store a pointer, that take back a set-up (undo, restore,
cancel), and logging that never keeps what it prints. Used by the inference
(bot.analyze.infer) when no body is visible, and by the matchers. Nothing here
names a kernel function: only words that kernel names are built from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Naming conventions of lifecycle APIs (verb at either end of the name).
ACQUIRE_VERBS = ("alloc", "new", "create", "dup", "clone", "zalloc")
GET_VERBS = ("get", "tryget", "grab", "hold")
RELEASE_VERBS = ("free", "destroy", "put", "release", "unref", "delete")
PUT_VERBS = frozenset({"put", "unref", "release"})
_VERB_RE = re.compile(
    r"^(?:(?P<pre>" + "|".join(ACQUIRE_VERBS + GET_VERBS + RELEASE_VERBS) + r")_(?P<s1>\w+)"
    r"|(?P<s2>\w+?)_(?P<post>" + "|".join(ACQUIRE_VERBS + GET_VERBS + RELEASE_VERBS) + r"))$"
)
WORD = re.compile(r"[A-Za-z_]\w*")
# Calls that take back what a set-up did (a reservation, a charge, an
# allocation hook): undo, restore, cancel... (shared with the matchers).
UNDO_CALL = re.compile(
    r"(^|_)(undo|restore|rollback|revert|unreserve|uncharge|unaccount|cancel)(_|$)|_on_error$"
    r"|_free_hook$"
)
# Calls that may store a pointer they are given (shared with the matchers).
STORING_CALL = re.compile(
    r"(add|insert|install|store|assign|set|push|enqueue|publish|attach|hash|link|list_|xa_|"
    r"idr_|rb_|hlist_|rcu_assign|WRITE_ONCE|swap|replace|move|register)",
    re.IGNORECASE,
)
# Logging, tracing and debug checks never keep the pointer they print.
LOGGING = re.compile(
    r"(printk|pr_\w+|dev_(err|warn|info|dbg|notice)\w*|WARN\w*|BUG\w*|VM_BUG\w*|trace_\w+|"
    r"seq_printf|no_printk|netdev_\w+|pr_cont|IS_ERR\w*|PTR_ERR|ERR_PTR|unlikely|likely)$"
)


# Registrations: `register_foo`/`unregister_foo`, `foo_register`/`foo_unregister`,
# and `bar_create_foo`/`bar_remove_foo` (the verb inside the name).
REG_VERBS = {"register": "unregister", "create": "remove"}
_REG_RE = re.compile(
    r"^(?:(?P<v1>register|unregister)_(?P<s1>\w+)|(?P<s2>\w+?)_(?P<v2>register|unregister)"
    r"|(?P<a>[a-z]\w*?)_(?P<v3>create|remove)_(?P<b>\w+))$"
)


# Pairs that save and restore execution state (preemption, interrupts, locks,
# user memory), not an object's lifetime.
STATE_STEM = re.compile(r"(^|_)(cpu|irq|preempt|lock|user|rcu)(_|$)")


# Names that ask a question about a step rather than take it.
_PREDICATE = re.compile(r"^_*(?:is|has|have|can|should|want|need|may|must|will|did|does)_")


def split_verb(name: str) -> tuple[str, str] | None:
    """(verb, stem) of a lifecycle-style name: `foo_put` -> ("put", "foo");
    registrations: `sysfs_remove_group` -> ("remove", "sysfs_*_group"). A
    predicate (`want_init_on_alloc`, `is_*`, `can_*`) names no lifecycle step."""
    if _PREDICATE.match(name):
        return None
    # `__free_foo()`: the unlocked or inner variant of `free_foo()`, the same step
    name = name.lstrip("_")
    m = _VERB_RE.match(name)
    if m is not None:
        if m.group("pre"):
            return m.group("pre"), m.group("s1")
        return m.group("post"), m.group("s2")
    r = _REG_RE.match(name)
    if r is None:
        return None
    if r.group("v1"):
        return r.group("v1"), r.group("s1")
    if r.group("v2"):
        return r.group("v2"), r.group("s2")
    return r.group("v3"), f"{r.group('a')}_*_{r.group('b')}"


def counterparts(verb: str, stem: str) -> Iterable[str]:
    """Names that would pair with `verb`+`stem`: a get pairs with a put (never a
    free: `get_foo()` beside `free_foo()` is a getter), a constructor with a free,
    destroy or put."""
    if "_*_" in stem:  # an infix registration pair
        a, b = stem.split("_*_")
        other = REG_VERBS.get(verb) or next(k for k, v in REG_VERBS.items() if v == verb)
        yield f"{a}_{other}_{b}"
        return
    if verb in REG_VERBS or verb in REG_VERBS.values():
        other = REG_VERBS.get(verb) or next(k for k, v in REG_VERBS.items() if v == verb)
        yield f"{stem}_{other}"
        yield f"{other}_{stem}"
        return
    if verb in GET_VERBS:
        others: tuple[str, ...] = tuple(PUT_VERBS)
    elif verb in ACQUIRE_VERBS:
        others = RELEASE_VERBS
    elif verb in PUT_VERBS:
        others = ACQUIRE_VERBS + GET_VERBS
    else:
        others = ACQUIRE_VERBS
    for o in sorted(others):
        yield f"{stem}_{o}"
        yield f"{o}_{stem}"


__all__ = [
    "ACQUIRE_VERBS",
    "GET_VERBS",
    "LOGGING",
    "PUT_VERBS",
    "REG_VERBS",
    "RELEASE_VERBS",
    "STATE_STEM",
    "STORING_CALL",
    "UNDO_CALL",
    "WORD",
    "counterparts",
    "split_verb",
]
