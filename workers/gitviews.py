"""Git plumbing for the service: fetched mirrors, and views of them to apply onto.

The service keeps repositories it fetches bare (a push repository, a base tree's
branch). `bot.apply` applies a series onto a git *work tree* (a repository with
`.git`), at the series' base-commit or HEAD, so a review gets a view: a repository
sharing the mirror's objects, HEAD detached at the commit wanted, the index filled
and no file checked out (sparse checkout of nothing). Making one costs a shared
clone and an index, not a checkout of the tree.

Git runs with hooks off, no prompt, and only the protocols the service fetches over.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bot.errors import FetchError, InputError

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


def git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "file:https:http:git:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


def run_git(repo: Path, *args: str) -> str:
    """Run git in `repo` (GitPython), returning stdout; InputError on failure."""
    import git

    try:
        out = git.Git(str(repo)).execute(
            ["git", *_SAFE, *args], env=git_env(), stdout_as_string=True
        )
    except git.GitCommandError as exc:
        why = " ".join(str(exc.stderr).split())[:200]
        raise InputError(f"git {args[0]} failed: {why}") from exc
    return str(out).strip()


def try_git(repo: Path, *args: str) -> str | None:
    """Like run_git, None when git fails (a revision that is not there)."""
    try:
        return run_git(repo, *args)
    except InputError:
        return None


def commit_of(repo: Path, rev: str) -> str | None:
    """The full id of `rev` in `repo` when it is a commit there."""
    if rev.startswith("-"):
        return None
    sha = try_git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return sha if sha and _SHA_RE.match(sha) else None


def fetch_mirror(url: str, path: Path, *, branch: str | None = None) -> Path:
    """Clone (bare) or fetch `url` into `path`; with `branch`, only that branch, as
    `refs/heads/<branch>`. FetchError when the remote cannot be read (transient)."""
    import git

    env = git_env()
    try:
        if not (path / "HEAD").exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            if branch is None:
                git.Repo.clone_from(url, path, mirror=True, env=env)
            else:
                git.Repo.init(path, bare=True)
                run_git(path, "remote", "add", "origin", "--", url)
        repo = git.Repo(path)
        if branch is None:
            repo.git.execute(["git", *_SAFE, "fetch", "--quiet", "--prune", "origin"], env=env)
        else:
            spec = f"+refs/heads/{branch}:refs/heads/{branch}"
            repo.git.execute(
                ["git", *_SAFE, "fetch", "--quiet", "--no-tags", "origin", spec], env=env
            )
    except (git.GitCommandError, InputError) as exc:
        why = " ".join(str(getattr(exc, "stderr", exc)).split())[:200]
        raise FetchError(f"git fetch of {url} failed: {why}") from exc
    return path


def make_view(mirror: Path, dest: Path, commit: str) -> Path:
    """A work-tree repository at `dest` sharing `mirror`'s objects, HEAD detached at
    `commit`, index filled, nothing checked out. `dest` must not exist."""
    if not _SHA_RE.match(commit):
        raise InputError("a view needs a full commit id")
    dest.parent.mkdir(parents=True, exist_ok=True)
    run_git(
        dest.parent,
        "clone", "--quiet", "--shared", "--no-checkout", "--no-tags", str(mirror), str(dest),
    )  # fmt: skip
    run_git(dest, "config", "core.sparseCheckout", "true")
    info = dest / ".git" / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "sparse-checkout").write_text("/.mmlc-nothing\n", encoding="utf-8")
    run_git(dest, "checkout", "--quiet", "--detach", commit)
    return dest


def move_view(view: Path, commit: str) -> None:
    """Point an existing view at `commit` (objects must already be in its mirror)."""
    run_git(view, "checkout", "--quiet", "--detach", commit)


__all__ = ["commit_of", "fetch_mirror", "git_env", "make_view", "move_view", "run_git", "try_git"]
