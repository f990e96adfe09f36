"""Running git in a scratch repository with everything that could run code or
sign off.

Every call gets `core.hooksPath=/dev/null` (patch mail must never trigger a
hook), signing and submodule recursion off, no fsmonitor, attributes file or
credential helper, and an environment without the caller's GIT_* variables or
global/system config: a user's `apply.whitespace=error` or `am.threeWay` must
not change how a series applies, and a `GIT_DIR` inherited from a hook must not
point git at the user's repository.

A repository the user handed us (`--tree`) has its own `.git/config`, which `-c`
cannot wipe wholesale: a `filter.<name>.clean` there runs whenever git reads a
work-tree file (`git diff HEAD`). `foreign_config(repo)` lists the filter
drivers that config defines and returns `-c` options emptying each of them;
every git command run in a user's repository starts with them. Diffs run with
`--no-ext-diff --no-textconv` (diff drivers), and `git am` runs only in the
scratch clone, whose config is the bot's own.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import InputError

__all__ = ["GitResult", "foreign_config", "git", "git_env"]

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
    "core.attributesFile=/dev/null",
    "core.sshCommand=false",
    "credential.helper=",
    "log.showSignature=false",
    "protocol.allow=never",
    "protocol.file.allow=always",
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


# A filter driver's name as `-c filter.<name>.clean=` can carry it.
_FILTER_NAME = re.compile(r"[^=\s]+")


def foreign_config(repo: Path | str) -> list[str]:
    """`-c` options that switch off every filter driver `repo`'s own config
    (including what it includes) defines: clean, smudge and process emptied,
    required off. A name `-c` cannot express refuses the repository."""
    listing = git(["config", "--null", "--get-regexp", r"^filter\."], repo)
    names: set[str] = set()
    for entry in listing.stdout.split(b"\0"):
        key = entry.split(b"\n", 1)[0].decode("utf-8", "surrogateescape")
        name = key[len("filter.") : key.rfind(".")]
        if not key.startswith("filter.") or not name:
            continue
        if not _FILTER_NAME.fullmatch(name):
            raise InputError(f"refused: the tree's git config defines the filter {name!r}")
        names.add(name)
    out: list[str] = []
    for name in sorted(names):
        for var in ("clean", "smudge", "process"):
            out += ["-c", f"filter.{name}.{var}="]
        out += ["-c", f"filter.{name}.required=false"]
    return out


def _subcommand(args: Sequence[str]) -> str:
    """The git subcommand of `args`, past leading `-c name=value` pairs."""
    i = 0
    while i + 1 < len(args) and args[i] == "-c":
        i += 2
    return args[i] if i < len(args) else "git"


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
        name = _subcommand(args)
        raise InputError(f"git {name} took longer than {GIT_TIMEOUT}s in {cwd}") from None
    result = GitResult(proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        name = _subcommand(args)
        raise InputError(f"git {name} failed: {result.error_line()}", source=str(cwd))
    return result
