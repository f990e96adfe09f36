"""A review on a plain tree, kept in bot.cache and reused while everything it was
computed from is unchanged.

    key(series, versions, others=, notes=, tree=, settings=) -> str | None
    lookup(key) -> Kept | None       what an earlier review computed, if still true
    store(key, kept, journal)        keep it, with the questions it asked the tree

A patch author re-runs the bot on the same series before posting, a maintainer
re-runs it after a look at the code: the same patches on the same tree give the
same review, and computing it again costs a second where reading it back costs a
few milliseconds. What a review is computed from:

* the series (every field of every message, the versions and other series of the
  input, the assembler's notes) and the settings: the key, with the tree's path;
* the bot's code (bot.cache adds its fingerprint to every key), the rules and
  vocabulary (their stamp) and tree-sitter (its stamp): the key too;
* the tree: whatever the review asked of it through bot.safefs (texts, listings,
  the files apply copied, which files exist), each with the answer it got
  (a SHA-256 of the text). The entry is used only when every question gets the
  same answer again (bot.safefs.still_true), like the callee summaries.

Only reviews on a plain directory are kept: a git tree is applied through git
(base-commit, a scratch clone) whose inputs are not questions bot.safefs asks.
Diff-only reviews are not kept either: they cost little more than reading one
back. A review that read a file twice and got two texts (the tree changed while it
ran), that a check failed in, or that reached the simulator's runaway stop is not
kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot import cache, safefs
from bot.config import Settings
from bot.model import CheckResult, Finding, PatchApplication, PatchImages, Series

__all__ = ["Kept", "key", "lookup", "store"]

NAMESPACE = "review"


@dataclass(frozen=True)
class Kept:
    """What review_series computed from the series and the tree."""

    applications: tuple[PatchApplication, ...]
    images: tuple[PatchImages, ...]
    base_commit: str | None
    applied_notes: tuple[str, ...]
    findings: tuple[Finding, ...]
    checks: tuple[CheckResult, ...]
    # (kind, root, path, detail, answer) of every question asked of the tree
    answers: tuple[tuple[str, str, str, str, str | None], ...] = ()


def key(
    series: Series,
    versions: tuple[Series, ...],
    *,
    others: tuple[Series, ...],
    notes: tuple[str, ...],
    tree: str | None,
    settings: Settings,
) -> str | None:
    """The key of this review, or None when it is not kept (no cache, no tree, a
    git tree, a tree that is not a directory)."""
    if tree is None or cache.active() is None:
        return None
    root = Path(tree).expanduser().resolve()
    if not root.is_dir() or (root / ".git").exists():
        return None
    from bot.analyze.csource import parser_stamp

    rules = settings.rules_dir.resolve()
    # repr() spells every field of these frozen dataclasses (tuples, strings,
    # bytes, dates, paths): two inputs with the same repr are the same input
    inputs = repr((series, versions, others, notes, tree, str(root), settings))
    stamp = cache.stamp_files(p for p in rules.rglob("*") if p.is_file())
    return cache.text_key(inputs, stamp, parser_stamp())


def lookup(entry_key: str) -> Kept | None:
    """The review kept under `entry_key` when the tree still answers every
    question it asked the same way, else None."""
    hit = cache.get(NAMESPACE, entry_key)
    if hit is None or not isinstance(hit[0], Kept):
        return None
    kept = hit[0]
    answers = {(k, root, rel, detail): answer for k, root, rel, detail, answer in kept.answers}
    return kept if safefs.still_true(answers) else None


def store(entry_key: str, kept: Kept, journal: safefs.Journal) -> None:
    """Keep `kept` with the questions of `journal`, unless a question got two
    answers while the review ran (the tree changed under it: the answers do not
    describe one tree). A file changed after the review read it needs no check
    here: lookup() compares the tree of that time with the recorded answers."""
    if journal.unstable:
        return
    answers = tuple((*q, a) for q, a in journal.answers.items())
    cache.put(NAMESPACE, entry_key, Kept(**{**kept.__dict__, "answers": answers}))
