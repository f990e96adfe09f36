"""Ordering a patch removes: memory barriers between accesses other CPUs see.

`barrier-removed` (MMLC008): a write barrier (vocabulary role `write_barrier`)
that ordered the function's stores before a plain publication (a page-table
entry installed with `set_pte_at()`, role `publish_entry`, which orders nothing
itself) is removed while the publication stays: another CPU that walks to what
the entry maps may read it before the stores that filled it are visible.

A barrier removed from between any two accesses is not reported: measured on
the -mm noise sample, deliberate removals of redundant barriers (with the
reason in the changelog) outnumbered the harmful one three to one.

Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

from bot.analyze.flow import Call, Flow
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


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "barrier-removed-before-publish",
            "change",
            barrier_removed_before_publish,
            barrier_removed_before_publish.__doc__ or "",
        ),
    )
)

__all__ = ["barrier_removed_before_publish"]
