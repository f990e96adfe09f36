"""The scratch repository a series is applied in (bot.apply.series).

    open_scratch(tree, settings, base, paths) -> Scratch   removed afterwards

The user's tree is only ever read. A git tree is cloned with `--shared
--no-checkout` (objects borrowed through alternates, nothing copied) and only the
paths the series touches are checked out (sparse), at the series' base-commit
when the tree has it; a plain directory gets a scratch directory holding copies
of just those files, made a git repository only when git is first going to run
(git_ready), with every file version it held by then (remember, write_blob), so
`git am -3` finds the same blobs as in a repository made up front. A touched
path through a symlink of the tree is refused (bot.apply.guard).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bot.apply.gitcmd import foreign_config, git
from bot.apply.guard import inside, refuse_symlinks_in_commit, refuse_symlinks_on_disk
from bot.config import Settings
from bot.errors import InputError
from bot.safefs import note_copy

# Bytes of uncommitted file versions a scratch may hold in memory (Scratch.unsaved)
# before it is made a repository and committed anyway (a long series of big files).
UNSAVED_LIMIT = 64 << 20


@dataclass
class Scratch:
    """The scratch repository a series is applied in.

    A plain directory's scratch is not a repository until git is first going to
    run (git_ready); a fuzzy-applied patch is committed only then too. Until that
    moment `unsaved` keeps every file version a commit would have stored, so the
    repository made late holds the same blobs as one made up front."""

    root: Path  # the scratch work tree
    base_commit: str | None
    notes: list[str] = field(default_factory=list)
    # Git blob ids of every file version held in a scratch made from a plain
    # directory (None for a clone, whose history holds blobs we cannot list cheaply).
    blobs: set[str] | None = None
    has_repo: bool = True
    # The message of the commit the work tree is owed (fuzzy apply wrote files).
    owed: str | None = None
    # id -> bytes of each file version no commit holds yet (see _remember).
    unsaved: dict[str, bytes] = field(default_factory=dict)


def _git_toplevel(tree: Path) -> Path | None:
    """The top of the git work tree `tree` is in, when `tree` has its own `.git`."""
    if not (tree / ".git").exists():
        return None
    res = git(["rev-parse", "--show-toplevel"], tree)
    if not res.ok:
        return None
    return Path(res.text().strip()).resolve()


def _sparse_pattern(path: str) -> str:
    # gitignore syntax: escape what would be read as a pattern, anchor at the root.
    return "/" + re.sub(r"([\\*?\[\]!# ])", r"\\\1", path)


def _resolve_base(repo: Path, wanted: str | None, notes: list[str]) -> str:
    """The commit to apply onto: the series' base-commit when the repo has it, else HEAD."""
    head = git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], repo)
    if not head.ok:
        raise InputError("the tree's git repository has no commit to apply onto")
    head_id = head.text().strip()
    if wanted:
        found = git(["rev-parse", "--verify", "--quiet", f"{wanted}^{{commit}}"], repo)
        if found.ok:
            commit = found.text().strip()
            notes.append(f"applied on base-commit {commit[:12]} named by the series")
            return commit
        notes.append(
            f"base-commit {wanted[:12]} is not in the tree; applied on HEAD ({head_id[:12]})"
        )
    else:
        notes.append(f"no base-commit given; applied on HEAD ({head_id[:12]})")
    return head_id


def _note_local_changes(
    tree: Path, paths: Sequence[str], notes: list[str], foreign: Sequence[str]
) -> None:
    """Say so when the user's work tree differs from HEAD in a touched path: the
    series applies to commits, not to uncommitted edits. `--no-optional-locks`
    keeps git from refreshing (writing) the user's index while it looks."""
    if not paths:
        return
    diff = ["diff", "--no-ext-diff", "--no-textconv", "--name-only", "HEAD"]
    res = git([*foreign, "--no-optional-locks", *diff, "--", *paths], tree)
    changed = res.text().split()
    if res.ok and changed:
        shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
        notes.append(f"uncommitted changes in the tree ({shown}) are not part of the base")


def _prepare_git(tree: Path, dest: Path, base: str | None, paths: Sequence[str]) -> Scratch:
    """Shared clone of a git tree, sparse-checked-out at the base commit."""
    notes: list[str] = []
    foreign = foreign_config(tree)  # the user's repository: its filters off (gitcmd)
    clone = ["clone", "--quiet", "--shared", "--no-checkout", "--no-tags", str(tree), str(dest)]
    git([*foreign, *clone], dest.parent, check=True)
    commit = _resolve_base(dest, base, notes)
    refuse_symlinks_in_commit(dest, commit, paths)
    _note_local_changes(tree, paths, notes, foreign)
    git(["config", "core.sparseCheckout", "true"], dest, check=True)
    info = dest / ".git" / "info"
    info.mkdir(parents=True, exist_ok=True)
    patterns = [_sparse_pattern(p) for p in paths] or ["/.mmlc-nothing"]
    (info / "sparse-checkout").write_text("\n".join(patterns) + "\n", encoding="utf-8")
    git(["checkout", "--quiet", "--detach", commit], dest, check=True)
    return Scratch(dest, commit, notes)


def _prepare_plain(tree: Path, dest: Path, paths: Sequence[str]) -> Scratch:
    """Scratch directory holding copies of the touched files of a plain directory;
    its repository (one base commit of these files) is made when git first runs."""
    refuse_symlinks_on_disk(tree, paths)
    dest.mkdir()
    scratch = Scratch(
        dest,
        None,
        ["tree is a plain directory: applied in a scratch repository"],
        set(),
        has_repo=False,
    )
    for path in paths:
        src = tree / path
        if not src.is_file():
            note_copy(tree, path, None, 0)
            continue
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        target.write_bytes(data)
        shutil.copymode(src, target)
        note_copy(tree, path, data, src.stat().st_mode & 0o7777)
        _remember(scratch, data)
    limit_unsaved(scratch)
    return scratch


def _write_blob(git_dir: Path, data: bytes) -> None:
    """Store `data` as a loose blob object in `git_dir`, as `git hash-object -w` would."""
    oid = _blob_id(data)
    folder = git_dir / "objects" / oid[:2]
    target = folder / oid[2:]
    if target.exists():
        return
    folder.mkdir(exist_ok=True)
    temp = folder / f"tmp_obj_{oid[2:]}"
    temp.write_bytes(zlib.compress(b"blob %d\0" % len(data) + data))
    temp.chmod(0o444)
    temp.replace(target)


def git_ready(scratch: Scratch) -> None:
    """Make the scratch what a repository made up front, with a commit after every
    patch, would be by now: `git init` a plain directory's scratch (with the blobs
    of file versions it no longer holds), and commit what fuzzy apply wrote."""
    root = scratch.root
    if not scratch.has_repo:
        git(["init", "--quiet", str(root)], root.parent, check=True)
        scratch.has_repo = True
        scratch.owed = "base"
    if scratch.owed is None:
        return
    for data in scratch.unsaved.values():
        _write_blob(root / ".git", data)
    scratch.unsaved.clear()
    git(["add", "--all", "--", "."], root, check=True)
    git(["commit", "--quiet", "--allow-empty", "--no-verify", "-m", scratch.owed], root, check=True)
    scratch.owed = None


def limit_unsaved(scratch: Scratch) -> None:
    """Commit now (what git would see later is the same) rather than hold more than
    UNSAVED_LIMIT bytes of file versions in memory."""
    if sum(len(data) for data in scratch.unsaved.values()) > UNSAVED_LIMIT:
        git_ready(scratch)


@contextmanager
def open_scratch(
    tree: Path, settings: Settings, base: str | None, paths: Sequence[str]
) -> Iterator[Scratch]:
    """A scratch repository holding the touched paths of `tree`, removed afterwards."""
    parent_dir = settings.scratch_dir
    try:
        if parent_dir is not None:
            parent_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="mmlc-apply-", dir=parent_dir))
    except OSError as exc:
        where = parent_dir or tempfile.gettempdir()
        raise InputError(f"cannot create a scratch directory in {where}: {exc.strerror}") from None
    try:
        dest = work / "tree"
        if _git_toplevel(tree) == tree:
            yield _prepare_git(tree, dest, base, paths)
        else:
            yield _prepare_plain(tree, dest, paths)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_text(root: Path, path: str | None) -> str | None:
    """Text of a regular file in the scratch tree, or None when it is not one."""
    target = inside(root, path) if path is not None else None
    if target is None or not target.is_file():
        return None
    return target.read_bytes().decode("utf-8", "replace")


_OID = re.compile(r"[0-9a-f]{40}")


def head_commit(root: Path) -> str:
    """The scratch repository's current commit: read from `.git/HEAD` (and the loose
    ref it names) when that is plain, else asked of `git rev-parse`."""
    git_dir = root / ".git"
    try:
        head = (git_dir / "HEAD").read_text(encoding="ascii").strip()
        ref = head.removeprefix("ref: ")
        if ref != head and ref.startswith("refs/") and ".." not in ref.split("/"):
            head = (git_dir / ref).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        head = ""
    if _OID.fullmatch(head):
        return head
    return git(["rev-parse", "HEAD"], root, check=True).text().strip()


def _blob_id(data: bytes) -> str:
    """The id git gives a blob with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _uncommitted(scratch: Scratch) -> bool:
    """Whether the scratch's files may hold versions no commit has stored yet."""
    return not scratch.has_repo or scratch.owed is not None


def _remember(scratch: Scratch, data: bytes) -> None:
    """Add one file version to the scratch's known blobs and, while no commit holds
    it, keep its bytes: git_ready stores them before it commits, so a version a
    later patch replaced before git ran is still there for `git am -3`."""
    oid = _blob_id(data)
    if scratch.blobs is not None:
        scratch.blobs.add(oid)
    if _uncommitted(scratch):
        scratch.unsaved[oid] = data


def remember_blobs(scratch: Scratch, paths: Sequence[str]) -> None:
    """Add the current content of `paths` in the scratch tree to its known blobs."""
    if scratch.blobs is None and not _uncommitted(scratch):
        return
    for path in paths:
        target = inside(scratch.root, path)
        if target is not None and target.is_file() and not target.is_symlink():
            _remember(scratch, target.read_bytes())
