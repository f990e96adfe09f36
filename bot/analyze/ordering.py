"""Ordering a patch removes: memory barriers between accesses other CPUs see.

`barrier-removed` (MMLC008): a write barrier (vocabulary role `write_barrier`)
that ordered the function's stores before a plain publication (a page-table
entry installed with `set_pte_at()`, role `publish_entry`, which orders nothing
itself) is removed while the publication stays: another CPU that walks to what
the entry maps may read it before the stores that filled it are visible.

`barrier-removed-before-wakeup` (MMLC008): a barrier between an update (an
atomic operation, a store) and the test that decides whether to wake a waiter
(role `wake`: `if (!atomic_read(&n) && pool->destroying) wake_up_all(&wq)`) is
removed while the update, the test and the wake-up stay. The barrier paired
with one on the waiter's side (set a flag, barrier, wait for the count): without
it the waker may read the flag before its update is visible and skip the
wake-up while the waiter reads the old count, and a teardown waiting for the
count to drain sleeps forever or, with a timeout, frees what the waker uses.

A barrier removed from between any other two accesses is not reported: measured
on the -mm noise sample, deliberate removals of redundant barriers (with the
reason in the changelog) outnumbered the harmful one three to one.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re

from bot.analyze.flow import Assign, Call, Flow
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side


def _ordered_calls(flow: Flow, names: frozenset[str]) -> list[Call]:
    return sorted((c for c in flow.calls if c.name in names), key=lambda c: c.line)


def barrier_removed_before_publish(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A write barrier that ordered the function's stores before a plain
    publication (a page-table entry installed with `set_pte_at()`, which orders
    nothing itself) is gone, and the publication stays: another CPU that finds
    the entry may read what was written before it, not yet visible."""
    if pre.flow is None or post.flow is None or not pre.removed_lines:
        return []
    barriers = env.vocab.names_with_role("write_barrier")
    publishes = env.vocab.names_with_role("publish_entry")
    pre_pub = _ordered_calls(pre.flow, publishes)
    post_pub = _ordered_calls(post.flow, publishes)
    if not pre_pub or not post_pub:
        return []
    pre_bar = _ordered_calls(pre.flow, barriers)
    post_bar = _ordered_calls(post.flow, barriers)
    hits: list[Hit] = []
    seen: set[str] = set()
    for i, pub in enumerate(pre_pub):
        lo = pre_pub[i - 1].line if i else pre.flow.start_line
        before = [b for b in pre_bar if lo <= b.line < pub.line]
        if not before or any(b.line not in pre.removed_lines for b in before):
            continue  # no barrier ordered this publication, or the patch kept one
        text = "".join(pub.text.split())
        same = [c for c in post_pub if "".join(c.text.split()) == text]
        if len(same) != 1 or text in seen:
            continue
        after = same[0]
        idx = post_pub.index(after)
        lo_post = post_pub[idx - 1].line if idx else post.flow.start_line
        if any(lo_post <= b.line < after.line for b in post_bar):
            continue
        seen.add(text)
        hits.append(
            Hit(
                key=("barrier-removed", after.name, before[-1].name),
                line=after.line,
                removed_line=before[-1].line,
                fields={
                    "function": post.flow.name,
                    "barrier": before[-1].text,
                    "publish": after.text,
                },
                evidence=(
                    f"before: `{before[-1].text}` at {pre.file}:{before[-1].line} ordered "
                    f"the stores before `{pub.text}`",
                    f"after: `{after.text}` at {post.file}:{after.line} follows them with "
                    "no barrier",
                ),
                variant="barrier-removed",
            )
        )
    return hits


_UPDATE = re.compile(r"(?:^|_)(?:atomic\w*|inc|dec|add|sub|set_bit|clear_bit|change_bit)(?:_|$)")


def _updates(flow: Flow, lo: int, hi: int) -> bool:
    """`flow` changes shared state on a line in [lo, hi): an atomic operation or a
    bit operation on it, or a store through a pointer."""
    for n in flow.nodes.values():
        for ev in n.events:
            if not lo <= ev.line < hi:
                continue
            if isinstance(ev, Call) and _UPDATE.search(ev.name) and not ev.in_condition:
                return True
            if isinstance(ev, Assign) and ("->" in ev.lhs or "." in ev.lhs):
                return True
    return False


def barrier_removed_before_wakeup(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A barrier between an update and the test deciding a wake-up (role
    `wake`) is removed; the update, the test and the wake-up stay: the waker
    and its waiter no longer see each other's stores in order (a lost wake-up,
    or a teardown that frees while the waker still runs)."""
    if pre.flow is None or post.flow is None or not pre.removed_lines:
        return []
    barriers = env.vocab.names_with_role("write_barrier") | env.vocab.names_with_role(
        "read_barrier"
    )
    wakes = env.vocab.names_with_role("wake")
    post_bar = _ordered_calls(post.flow, barriers)
    post_wake = {"".join(c.text.split()): c for c in _ordered_calls(post.flow, wakes)}
    hits: list[Hit] = []
    for bar in _ordered_calls(pre.flow, barriers):
        if bar.line not in pre.removed_lines:
            continue
        # the wake-up the barrier precedes, in the same block, under a test of its own
        depth = len(bar.guards)
        wake = next(
            (
                w
                for w in _ordered_calls(pre.flow, wakes)
                if w.line > bar.line and len(w.guards) > depth and w.guards[:depth] == bar.guards
            ),
            None,
        )
        if wake is None or not _updates(pre.flow, pre.flow.start_line, bar.line):
            continue
        after = post_wake.get("".join(wake.text.split()))
        if after is None or not after.guards:
            continue  # the wake-up went, or no longer depends on a test
        if "".join(after.guards[-1].split()) != "".join(wake.guards[-1].split()):
            continue  # the test changed: a new scheme, not a barrier dropped
        if any(b.line < after.line for b in post_bar):
            continue  # a barrier still orders the test
        if not _updates(post.flow, post.flow.start_line, after.line):
            continue
        hits.append(
            Hit(
                key=("barrier-removed-before-wakeup", bar.name, wake.name),
                line=after.line,
                removed_line=bar.line,
                fields={
                    "function": post.flow.name,
                    "barrier": bar.text,
                    "wake": after.text,
                    "condition": " ".join(after.guards[-1].split()),
                },
                evidence=(
                    f"before: `{bar.text}` at {pre.file}:{bar.line} ordered the update "
                    f"before the test of `{' '.join(wake.guards[-1].split())}`",
                    f"after: `{after.text}` at {post.file}:{after.line} is decided by that "
                    "test with no barrier after the update",
                ),
                variant="barrier-removed-before-wakeup",
            )
        )
        break
    return hits


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "barrier-removed-before-wakeup",
            "change",
            barrier_removed_before_wakeup,
            barrier_removed_before_wakeup.__doc__ or "",
        ),
        Matcher(
            "barrier-removed-before-publish",
            "change",
            barrier_removed_before_publish,
            barrier_removed_before_publish.__doc__ or "",
        ),
    )
)

__all__ = ["barrier_removed_before_publish", "barrier_removed_before_wakeup"]
