"""Push reviews: which commits a push adds, and reviewing them on the pushed tree.

    plan_push(mirror, before, after, ref, max_commits)   the range to review and why
    review_pushed(mirror, name, before, after, ...)      the stored form of its review

A push that updates a branch adds `before..after`. A push that creates one (before is
all zeros) adds every commit the branch has that the repository's default branch (its
HEAD) has not: the range starts at their merge-base. Either is bounded: past
`repos.<name>.max_commits` only the newest commits (along the branch's first-parent
line) are reviewed, and the review says so.

The series is applied onto the pushed repository itself, at the range's base, in a
view of the fetched mirror (workers.gitviews): never diff-only.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import InputError
from workers.gitviews import commit_of, make_view, try_git


@dataclass(frozen=True)
class PushPlan:
    rev_range: str  # base..after
    base: str  # the commit the range applies onto
    reviewed: int  # commits in the range (merges aside)
    added: int  # commits the push added (merges aside)
    notes: tuple[str, ...]


def _count(mirror: Path, rev_range: str) -> int:
    out = try_git(mirror, "rev-list", "--count", "--no-merges", rev_range, "--")
    return int(out) if out and out.isdigit() else 0


def _short(sha: str) -> str:
    return sha[:12]


def plan_push(mirror: Path, before: str, after: str, ref: str, max_commits: int) -> PushPlan:
    """The range of commits to review for a push of `ref` from `before` to `after`."""
    if commit_of(mirror, after) != after:
        raise InputError(f"pushed commit {_short(after)} is not in the fetched repository")
    branch = ref.removeprefix("refs/heads/")
    notes: list[str] = []
    base: str | None
    if set(before) == {"0"}:
        head_ref = try_git(mirror, "symbolic-ref", "--quiet", "HEAD") or ""
        default = head_ref.removeprefix("refs/heads/") or "HEAD"
        main = commit_of(mirror, "HEAD") if head_ref != ref else None
        base = try_git(mirror, "merge-base", main, after) if main else None
        if base == after:
            raise InputError(
                f"nothing to review: the new branch {branch or after[:12]} adds no commit "
                f"to {default}"
            )
        if base:
            notes.append(
                f"new branch {branch}: reviewing the commits it adds to {default} "
                f"(from their merge-base {_short(base)})"
            )
        else:
            notes.append(f"new branch {branch}: no common history with a main line")
    else:
        base = try_git(mirror, "merge-base", before, after) or None
        if base is None:
            raise InputError(f"{_short(before)} and {_short(after)} share no history")
    added = _count(mirror, f"{base}..{after}" if base else after)
    line = try_git(mirror, "rev-list", "--first-parent", f"{base}..{after}" if base else after)
    first_parent = (line or "").split()
    if len(first_parent) > max_commits:
        base = first_parent[max_commits]
    elif base is None:
        # the branch's whole history: its root commit has no base to apply onto
        base = first_parent[-1]
    reviewed = _count(mirror, f"{base}..{after}")
    if reviewed < added:
        notes.append(
            f"the push adds {added} commits; only the newest {reviewed} are reviewed "
            f"(from {_short(base)}; repos.<name>.max_commits is {max_commits})"
            if len(first_parent) > max_commits
            else f"the push adds {added} commits; the root commit {_short(base)} is not reviewed"
        )
    if reviewed == 0:
        raise InputError("nothing to review: the push adds no commit but merges")
    return PushPlan(f"{base}..{after}", base, reviewed, added, tuple(notes))


def review_pushed(
    mirror: Path,
    name: str,
    before: str,
    after: str,
    ref: str,
    *,
    settings: Settings,
    max_commits: int,
) -> dict[str, Any]:
    """Review what a push added, applied onto the pushed repository at the range's base;
    returns the stored form (scope, key, ref, review JSON, text, the plan)."""
    from bot.pipeline import review_inputs
    from bot.report import render

    plan = plan_push(mirror, before, after, ref, max_commits)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "repo"
    with tempfile.TemporaryDirectory(prefix="mmlc-push-") as tmp:
        # named after the repository: what a reader of the review sees as the tree
        view = make_view(mirror, Path(tmp) / safe, plan.base)
        review = review_inputs([plan.rev_range], settings, repo=str(mirror), tree=str(view))
    review = replace(review, notes=tuple(dict.fromkeys((*plan.notes, *review.notes))))
    doc = json.loads(render(review, "json"))
    doc["tree"] = name  # the view was temporary; the repository is what it stood for
    return {
        "scope": f"push:{name}",
        "key": f"{before}..{after}",
        "ref": ref,
        "review": doc,
        "text": render(review, "text"),
        "push": {
            "range": plan.rev_range,
            "base": plan.base,
            "reviewed": plan.reviewed,
            "added": plan.added,
        },
    }


__all__ = ["PushPlan", "plan_push", "review_pushed"]
