"""True pre-images for bench/noise.py: a kernel tree with one patch reversed.

Most mmotm-noise patches are already in Debian's 6.1 tree, so `--tree 6.1`
reviews them against their own post-image. Where a patch reverse-applies to
6.1 (GNU patch -R, its default fuzz), reversing it gives the tree the patch was
written against, and the review sees what a reviewer of the posting saw.

A slot is a copy of the base tree made of hard links (`cp -al`: seconds, no
data copied), without its .git (a git tree is reviewed at HEAD), one per
review running at once. Reversing a patch in a slot
first gives each file it touches an inode of its own, so the base tree is
never written; after the review those files are linked back to the base's.

    with PreImages(base, slots=2, workdir=tmp) as pre:
        with pre.reversed(patch) as tree:   # None: does not reverse-apply
            ...
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

# GNU patch's dry run names each file it would patch, one line each.
_CHECKING = "checking file "


class PreImages:
    """Hard-linked copies of `base` on which one patch at a time is reversed."""

    def __init__(self, base: Path, slots: int, workdir: Path) -> None:
        self.base = base
        self._free: queue.Queue[Path] = queue.Queue()
        self._slots = [workdir / f"pre-{i}" for i in range(slots)]

    def __enter__(self) -> PreImages:
        for slot in self._slots:
            subprocess.run(["cp", "-al", str(self.base), str(slot)], check=True)
            # a plain directory: a git tree is reviewed at its HEAD, which would
            # not hold the reversal (removing the links leaves the base's files)
            shutil.rmtree(slot / ".git", ignore_errors=True)
            self._free.put(slot)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for slot in self._slots:
            shutil.rmtree(slot, ignore_errors=True)

    @contextmanager
    def reversed(self, patch: Path) -> Iterator[Path | None]:
        """A slot with `patch` reversed on it, or None if it does not reverse-apply."""
        slot = self._free.get()
        touched: list[str] = []
        try:
            touched = _touched(slot, patch)
            if not touched:
                yield None
                return
            for rel in touched:
                _own_inode(slot / rel)
            done = _patch(slot, patch, dry_run=False)
            yield slot if done.returncode == 0 else None
        finally:
            for rel in touched:
                _relink(self.base, slot, rel)
            self._free.put(slot)


def _patch(slot: Path, patch: Path, *, dry_run: bool) -> subprocess.CompletedProcess[str]:
    cmd = ["patch", "-R", "-p1", "-f", "--no-backup-if-mismatch", "--reject-file=-"]
    cmd += ["-d", str(slot), "-i", str(patch)]
    if dry_run:
        cmd.append("--dry-run")
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _touched(slot: Path, patch: Path) -> list[str]:
    """The files reversing `patch` would write, if it reverse-applies cleanly."""
    dry = _patch(slot, patch, dry_run=True)
    if dry.returncode != 0:
        return []
    files = []
    for line in dry.stdout.splitlines():
        if line.startswith(_CHECKING):
            rel = line[len(_CHECKING) :].strip()
            if rel and not os.path.isabs(rel) and ".." not in Path(rel).parts:
                files.append(rel)
    return files


def _own_inode(path: Path) -> None:
    """Replace a hard link by a copy of its own (a file patch rewrites in place
    must not reach the base tree)."""
    if path.is_file() and not path.is_symlink():
        data = path.read_bytes()
        mode = path.stat().st_mode
        path.unlink()
        path.write_bytes(data)
        path.chmod(mode)


def _relink(base: Path, slot: Path, rel: str) -> None:
    """Put the base tree's file back at `rel` in the slot (or none, if the base has none)."""
    target = slot / rel
    if target.is_file() or target.is_symlink():
        target.unlink()
    source = base / rel
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)


def reverse_applies(tree: Path, patch: Path) -> bool:
    """Whether `patch` reverse-applies to `tree` (a dry run: nothing is written)."""
    return _patch(tree, patch, dry_run=True).returncode == 0
