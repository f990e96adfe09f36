"""What keeps applying a series honest: no write or read through a symlink, and
git applying exactly the diff the review analyses.

    prefixes(path)                       every component a write passes through
    refuse_symlinks_on_disk(root, paths) a plain tree: no touched path via a symlink
    refuse_symlinks_in_commit(repo, commit, paths)   the same in a git commit
    inside(root, path)                   root / path, or None through a symlink
    am_mail(patch)                       the mail `git am` is given

`git am` on the mail as received would apply every diff git finds in it (one
after the `-- ` signature, one in a second MIME part), while the review reads
`Patch.diff`. am_mail() is a mail made of that diff alone, so the two are the
same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bot.apply.gitcmd import git
from bot.errors import UnsafePatchError
from bot.model import Patch

__all__ = [
    "am_mail",
    "inside",
    "prefixes",
    "refuse_symlinks_in_commit",
    "refuse_symlinks_on_disk",
]


def prefixes(path: str) -> list[str]:
    """`a/b/c` -> `a`, `a/b`, `a/b/c`: every component a write would pass through."""
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _refused(path: str, link: str) -> UnsafePatchError:
    return UnsafePatchError(
        f"refused: diff path {path} passes through the symlink {link} in the tree"
    )


def refuse_symlinks_on_disk(root: Path, paths: Sequence[str]) -> None:
    """Raise UnsafePatchError if a touched path passes through a symlink in `root`."""
    for path in paths:
        for prefix in prefixes(path):
            if (root / prefix).is_symlink():
                raise _refused(path, prefix)


def refuse_symlinks_in_commit(repo: Path, commit: str, paths: Sequence[str]) -> None:
    """Raise UnsafePatchError if a touched path passes through a symlink in `commit`.

    `git ls-tree` lists every entry of a directory it enters, not only the ones
    asked for: a symlink beside a touched file is no concern of the series."""
    wanted = {p for path in paths for p in prefixes(path)}
    if not wanted:
        return
    listing = git(["ls-tree", "-z", "--full-tree", commit, "--", *sorted(wanted)], repo, check=True)
    for entry in listing.stdout.split(b"\0"):
        name = entry.split(b"\t", 1)[-1].decode("utf-8", "surrogateescape")
        if entry.startswith(b"120000 ") and name in wanted:
            bad = next(p for p in paths if name in prefixes(p))
            raise _refused(bad, name)


def inside(root: Path, path: str) -> Path | None:
    """`root / path` when no component of it is a symlink, else None.

    The base tree was checked before anything applied, but an earlier patch of the
    series may have created a symlink (git applies `new file mode 120000`); reading
    or writing through it could reach outside the scratch area."""
    for prefix in prefixes(path):
        if (root / prefix).is_symlink():
            return None
    return root / path


def am_mail(patch: Patch) -> bytes:
    """A mail holding `patch.diff` and nothing else git could apply: fixed
    headers, a one-line message, `---`, the diff. The scratch commit's author and
    message are never read; its tree is what the review analysed."""
    head = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: mmlc-bot <mmlc-bot@localhost>\n"
        "Date: Thu, 1 Jan 1970 00:00:00 +0000\n"
        f"Subject: [PATCH] patch {patch.number}\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=UTF-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        f"patch {patch.number}\n"
        "---\n"
    )
    return (head + patch.diff).encode("utf-8", "surrogateescape")
