"""`bot review --guess-base`: the commit a series was written against.

Like `b4 am --guess-base`: every file a series changes names its pre-image blob
in the diff's `index abc1234..def5678` line. Walking the newest MAX_COMMITS
commits of the tree's HEAD (newest first), the first commit where every such
path holds a blob whose id starts with that abbreviation is the base. Files the
series creates (`index 0000000..`) and files an earlier patch of the series
already changed (their blob is the series' own) say nothing and are skipped.

One `git rev-list` and one `git cat-file --batch-check` answer it, run through
bot.apply.gitcmd (hooks, filters and the user's config off).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from bot.apply.gitcmd import git
from bot.errors import InputError
from bot.model import Series

# Commits of HEAD's history looked at, newest first (docs/cli.md).
MAX_COMMITS = 1000

_DIFF_GIT = re.compile(r"^diff --git a/(\S+) b/(\S+)$")
_INDEX = re.compile(r"^index ([0-9a-f]{7,64})\.\.([0-9a-f]{7,64})")


@dataclass(frozen=True)
class BaseGuess:
    commit: str | None  # None: no commit within reach matches
    files: int  # files whose pre-image blob was compared
    looked_at: int  # commits walked
    note: str  # one line for the review: which base and why


def preimage_blobs(series: Series) -> dict[str, str]:
    """Path -> abbreviated pre-image blob id, for each file the series changes
    first in a patch (not created by it, not changed by an earlier patch)."""
    found: dict[str, str] = {}
    touched: set[str] = set()
    for patch in series.patches:
        current: str | None = None
        seen_here: set[str] = set()
        for line in patch.diff.splitlines():
            m = _DIFF_GIT.match(line)
            if m:
                current = m.group(1)
                seen_here.add(current)
                seen_here.add(m.group(2))
                continue
            m = _INDEX.match(line)
            if m and current is not None:
                old = m.group(1)
                if current not in touched and set(old) != {"0"} and current not in found:
                    found[current] = old
                current = None
        touched |= seen_here
    return found


def guess_base(tree: str | Path, series: Series, *, max_commits: int = MAX_COMMITS) -> BaseGuess:
    """The newest commit of the tree's HEAD (within max_commits) whose blobs
    match every pre-image `index` line of the series. Raises InputError when
    the tree is not a git repository."""
    root = Path(tree)
    blobs = preimage_blobs(series)
    inside = git(["rev-parse", "--is-inside-work-tree"], root)
    if not inside.ok:
        raise InputError("--guess-base needs a git tree", source=str(tree))
    if not blobs:
        return BaseGuess(
            None, 0, 0, "--guess-base: the series names no pre-image blob (no index lines)"
        )
    listed = git(["rev-list", f"--max-count={max_commits}", "HEAD"], root)
    if not listed.ok:
        raise InputError(f"cannot list commits: {listed.error_line()}", source=str(tree))
    commits = listed.text().split()
    paths = sorted(blobs)
    query = "".join(f"{c}:{p}\n" for c in commits for p in paths)
    answer = git(["cat-file", "--batch-check=%(objectname)"], root, stdin=query.encode())
    if not answer.ok:
        raise InputError(f"cannot read blobs: {answer.error_line()}", source=str(tree))
    rows = answer.text().splitlines()
    for i, commit in enumerate(commits):
        ids = rows[i * len(paths) : (i + 1) * len(paths)]
        if len(ids) == len(paths) and all(
            oid.startswith(blobs[p]) for oid, p in zip(ids, paths, strict=True)
        ):
            why = (
                f"--guess-base: applied on {commit[:12]}, the newest of the last "
                f"{len(commits)} commits of HEAD whose blobs match the index lines of "
                f"all {len(paths)} file(s) the series changes"
                + (" (HEAD itself)" if i == 0 else f" ({i} commit(s) below HEAD)")
            )
            return BaseGuess(commit, len(paths), i + 1, why)
    return BaseGuess(
        None,
        len(paths),
        len(commits),
        f"--guess-base: none of the last {len(commits)} commits of HEAD matches the "
        f"index lines of the {len(paths)} file(s) the series changes; applied on HEAD",
    )


def with_base(series: Series, commit: str) -> Series:
    """The series with `commit` as its base-commit (what apply_series applies on)."""
    slots = tuple(
        dataclasses.replace(
            s, patch=dataclasses.replace(s.patch, base_commit=commit) if s.patch else None
        )
        for s in series.slots
    )
    return dataclasses.replace(series, slots=slots)


__all__ = ["MAX_COMMITS", "BaseGuess", "guess_base", "preimage_blobs", "with_base"]
