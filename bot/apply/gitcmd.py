"""Running git in a scratch repository with everything that could run code or
sign off.

Every call gets `core.hooksPath=/dev/null` (patch mail must never trigger a
hook), signing and submodule recursion off, and an environment without the
caller's GIT_* variables or global/system config: a user's `apply.whitespace=error`
or `am.threeWay` must not change how a series applies, and a `GIT_DIR` inherited
from a hook must not point git at the user's repository.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import InputError

__all__ = ["GitResult", "git", "git_env"]

# Seconds one git command may take; a clone of a kernel tree with --shared is quick,
# a checkout of a few sparse paths too. Hitting this means something is wrong.
GIT_TIMEOUT = 300

_SAFE_CONFIG = (
    "core.hooksPath=/dev/null",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "submodule.recurse=false",
    "core.autocrlf=false",
    "core.fsmonitor=false",
    "apply.whitespace=nowarn",
    "am.keepcr=false",
    "advice.detachedHead=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "user.name=mmlc-bot",
    "user.email=mmlc-bot@localhost",
)


@dataclass(frozen=True)
class GitResult:
    """Exit status and output of one git command."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_line(self) -> str:
        """The first meaningful line git printed, for a one-line message."""
        for raw in (self.stderr, self.stdout):
            for raw_line in raw.decode("utf-8", "replace").splitlines():
                line = raw_line.strip()
                if line and not line.startswith(("hint:", "Applying:")):
                    return line
        return f"git exited with {self.returncode}"


def git_env() -> dict[str, str]:
    """The environment every scratch git command runs in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            # Diff paths are data: `:(exclude)x` or `*` must not act as pathspec magic.
            "GIT_LITERAL_PATHSPECS": "1",
            "GIT_AUTHOR_NAME": "mmlc-bot",
            "GIT_AUTHOR_EMAIL": "mmlc-bot@localhost",
            "GIT_COMMITTER_NAME": "mmlc-bot",
            "GIT_COMMITTER_EMAIL": "mmlc-bot@localhost",
            "LC_ALL": "C",
        }
    )
    return env


def git(
    args: Sequence[str],
    cwd: Path | str,
    *,
    stdin: bytes | None = None,
    check: bool = False,
) -> GitResult:
    """Run `git <args>` in `cwd`; with `check`, a failure raises InputError."""
    cmd = ["git"]
    for item in _SAFE_CONFIG:
        cmd += ["-c", item]
    cmd += list(args)
    try:
        proc = subprocess.run(
            cmd,
            cwd=str(cwd),
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=git_env(),
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise InputError("git is not installed (needed to apply a series to --tree)") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"git {args[0]} took longer than {GIT_TIMEOUT}s in {cwd}") from None
    result = GitResult(proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        raise InputError(f"git {args[0]} failed: {result.error_line()}", source=str(cwd))
    return result
