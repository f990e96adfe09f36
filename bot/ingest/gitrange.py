"""Turn a git revision range into mbox bytes, one numbered message per commit.

`git format-patch --stdout --numbered --thread=shallow` is what a submitter
would send, so the result assembles into one series like mail would. The range
is checked before git sees it: a leading `-` would be an option to git.
Hooks are off (`core.hooksPath=/dev/null`); config that would change the output
shape (cover letters, attachments, no-prefix diffs) is overridden.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bot.errors import InputError

__all__ = ["format_patch_range", "is_range_arg"]

# Characters of revision expressions we accept: refs, shas, ~N, ^N, @{...}.
_RANGE_RE = re.compile(r"^[A-Za-z0-9._/~^@{}+-]+\.\.\.?[A-Za-z0-9._/~^@{}+-]*$")
# The repository's own config must not run anything (hooks, an fsmonitor
# command) or change the shape of the output (prefixes, cover letters).
_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "diff.noprefix=false",
    "diff.mnemonicPrefix=false",
    "format.coverLetter=false",
    "color.ui=never",
)


def is_range_arg(arg: str) -> bool:
    """True when the argument is written like a revision range `A..B` (not a path like ../x)."""
    return (
        bool(_RANGE_RE.match(arg))
        and not arg.startswith(("-", ".", "/"))
        and "../" not in arg
        and "/.." not in arg
        and "@" not in arg.replace("@{", "")
    )


def _base_of(gitcmd: Any, git_args: list[str], rev_range: str) -> str | None:
    """The commit `A..B` applies onto: the merge base of A and B (A itself when
    it is an ancestor of B), or None when they share no history."""
    import git

    left, _, right = rev_range.replace("...", "..").partition("..")
    if left.startswith("-") or right.startswith("-"):
        return None  # never an option to git
    try:
        out = gitcmd.execute(
            [*git_args, "merge-base", left or "HEAD", right or "HEAD"],
            stdout_as_string=True,
        )
    except git.GitCommandError:
        return None
    sha = str(out).strip()
    return sha if re.fullmatch(r"[0-9a-f]{7,64}", sha) else None


def format_patch_range(repo: str, rev_range: str) -> bytes:
    """The commits of `rev_range` in `repo` as one mbox (git format-patch output),
    with `base-commit:` naming the commit the range applies onto, so a review
    applies it there, not on the repository's checked-out HEAD."""
    if not _RANGE_RE.match(rev_range) or rev_range.startswith(("-", ".")):
        raise InputError("refused revision range: unexpected characters", source=rev_range)
    path = Path(repo)
    if not path.exists():
        raise InputError("repository not found", source=repo)
    # Imported here: GitPython costs ~30 ms, and only revision ranges need it.
    import git

    try:
        gitcmd = git.Git(str(path))
        args: list[str] = ["git"]
        for item in _CONFIG:
            args += ["-c", item]
        base = _base_of(gitcmd, args, rev_range)
        args += [
            "format-patch",
            *([f"--base={base}"] if base else []),
            "--stdout",
            "--numbered",
            "--thread=shallow",
            "--no-cover-letter",
            "--no-attach",
            "--no-signature",
            "--no-color",
            rev_range,
            "--",
        ]
        out = gitcmd.execute(args, stdout_as_string=False)
    except git.GitCommandError as exc:
        stderr = str(exc.stderr or "").strip().splitlines()
        reason = stderr[-1] if stderr else f"git exited with {exc.status}"
        reason = reason.removeprefix("stderr: ").strip("'\" ")
        raise InputError(
            f"git format-patch failed: {reason}", source=f"{repo}:{rev_range}"
        ) from exc
    except git.GitCommandNotFound as exc:
        raise InputError("git is not installed or not on PATH", source=repo) from exc
    except (git.NoSuchPathError, git.InvalidGitRepositoryError, OSError) as exc:
        raise InputError(f"not a git repository: {type(exc).__name__}", source=repo) from exc
    data = out if isinstance(out, bytes) else str(out).encode()
    if not data.strip():
        raise InputError("no commits in range", source=f"{repo}:{rev_range}")
    return data
