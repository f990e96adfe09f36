"""Applying a series to a kernel tree in a scratch repository.

    apply_series(series, tree, settings, progress=) -> AppliedSeries

The user's tree is only ever read. A git tree is cloned with `--shared
--no-checkout` (objects borrowed through alternates, nothing copied) and only
the paths the series touches are checked out (sparse); a plain directory gets a
scratch directory holding copies of just those files, made a git repository only
when git is first going to run. Each patch then tries, in order: `git am -3` on
the original mail, `git apply --index`, and our own GNU-patch-style fuzzy apply
(bot.apply.fuzzy); the git steps only when they could succeed. Whatever happens is
a PatchApplication; only a hostile diff (UnsafePatchError) or an unusable tree
(InputError) raises.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from bot.analyze.diff import NoNewline, check_path, parse_diff, parse_diff_detail
from bot.apply.fuzzy import ALREADY, Placement, apply_hunks, locate_hunks, positions
from bot.apply.gitcmd import foreign_config, git
from bot.apply.guard import am_mail, inside, refuse_symlinks_in_commit, refuse_symlinks_on_disk
from bot.apply.images import diff_only_images
from bot.config import Settings
from bot.errors import InputError, UnsafePatchError
from bot.model import (
    AppliedSeries,
    ApplyMethod,
    FileDiff,
    FileImage,
    HunkResult,
    LineKind,
    Patch,
    PatchApplication,
    PatchImages,
    Series,
)
from bot.safefs import note_copy

__all__ = ["apply_series"]

Progress = Callable[[str], None]

# Bytes of uncommitted file versions a scratch may hold in memory (_Scratch.unsaved)
# before it is made a repository and committed anyway (a long series of big files).
UNSAVED_LIMIT = 64 << 20


@dataclass
class _Parsed:
    """One present patch with its diff parsed (or the reason it could not be)."""

    patch: Patch
    files: tuple[FileDiff, ...] = ()
    no_newline: tuple[NoNewline, ...] = ()
    error: str = ""
    strip: int = 1  # -p level for git apply

    @property
    def binaries(self) -> list[FileDiff]:
        return [f for f in self.files if f.is_binary]

    @property
    def skipped(self) -> tuple[str, ...]:
        return tuple(f"binary patch for {f.path} skipped" for f in self.binaries)


@dataclass
class _Scratch:
    """The scratch repository a series is applied in.

    A plain directory's scratch is not a repository until git is first going to
    run (_git_ready); a fuzzy-applied patch is committed only then too. Until that
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


# --------------------------------------------------------------------------- parsing


def _strip_level(diff_text: str) -> int:
    """-p level git apply needs: 0 for `git diff --no-prefix` output, else 1."""
    m = re.search(r"^diff --git (\S+) (\S+)", diff_text, re.M)
    if m is None or m.group(1).startswith("a/"):
        return 1
    old, new = m.group(1), m.group(2)
    no_prefix = "/" not in old or old.split("/")[0] == new.split("/")[0]
    return 0 if no_prefix else 1


def _parse_all(series: Series) -> list[_Parsed]:
    """Parse every present patch's diff. A hostile path anywhere refuses the whole
    series before anything is applied; a malformed diff is that patch's result."""
    parsed: list[_Parsed] = []
    for patch in series.patches:
        source = f"patch {patch.number}/{patch.total}"
        try:
            files, no_nl = parse_diff_detail(patch.diff, source)
        except UnsafePatchError:
            raise
        except InputError as exc:
            parsed.append(_Parsed(patch, error=exc.message))
            continue
        if not files:
            parsed.append(_Parsed(patch, error="no diff found in the patch"))
            continue
        parsed.append(_Parsed(patch, files, no_nl, strip=_strip_level(patch.diff)))
    return parsed


def _touched_paths(parsed: Sequence[_Parsed]) -> list[str]:
    """Every path any patch of the series reads or writes, in first-seen order."""
    paths: dict[str, None] = {}
    for p in parsed:
        for f in p.files:
            for path in (f.old_path, f.new_path):
                if path is not None:
                    paths.setdefault(path, None)
    return list(paths)


# --------------------------------------------------------------------------- scratch


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


def _prepare_git(tree: Path, dest: Path, base: str | None, paths: Sequence[str]) -> _Scratch:
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
    return _Scratch(dest, commit, notes)


def _prepare_plain(tree: Path, dest: Path, paths: Sequence[str]) -> _Scratch:
    """Scratch directory holding copies of the touched files of a plain directory;
    its repository (one base commit of these files) is made when git first runs."""
    refuse_symlinks_on_disk(tree, paths)
    dest.mkdir()
    scratch = _Scratch(
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
    _limit_unsaved(scratch)
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


def _git_ready(scratch: _Scratch) -> None:
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


def _limit_unsaved(scratch: _Scratch) -> None:
    """Commit now (what git would see later is the same) rather than hold more than
    UNSAVED_LIMIT bytes of file versions in memory."""
    if sum(len(data) for data in scratch.unsaved.values()) > UNSAVED_LIMIT:
        _git_ready(scratch)


@contextmanager
def _scratch(
    tree: Path, settings: Settings, base: str | None, paths: Sequence[str]
) -> Iterator[_Scratch]:
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


# --------------------------------------------------------------------------- one patch


def _read(root: Path, path: str | None) -> str | None:
    """Text of a regular file in the scratch tree, or None when it is not one."""
    target = inside(root, path) if path is not None else None
    if target is None or not target.is_file():
        return None
    return target.read_bytes().decode("utf-8", "replace")


def _split(text: str) -> tuple[list[str], bool]:
    """Lines without terminators, and whether the text ends with a newline."""
    if text == "":
        return [], True
    ends = text.endswith("\n")
    return text.split("\n")[:-1] if ends else text.split("\n"), ends


_OID = re.compile(r"[0-9a-f]{40}")


def _head(root: Path) -> str:
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


def _uncommitted(scratch: _Scratch) -> bool:
    """Whether the scratch's files may hold versions no commit has stored yet."""
    return not scratch.has_repo or scratch.owed is not None


def _remember(scratch: _Scratch, data: bytes) -> None:
    """Add one file version to the scratch's known blobs and, while no commit holds
    it, keep its bytes: _git_ready stores them before it commits, so a version a
    later patch replaced before git ran is still there for `git am -3`."""
    oid = _blob_id(data)
    if scratch.blobs is not None:
        scratch.blobs.add(oid)
    if _uncommitted(scratch):
        scratch.unsaved[oid] = data


def _remember_blobs(scratch: _Scratch, paths: Sequence[str]) -> None:
    """Add the current content of `paths` in the scratch tree to its known blobs."""
    if scratch.blobs is None and not _uncommitted(scratch):
        return
    for path in paths:
        target = inside(scratch.root, path)
        if target is not None and target.is_file() and not target.is_symlink():
            _remember(scratch, target.read_bytes())


_DIFF_GIT = re.compile(r"^diff --git ", re.M)
_INDEX_OLD = re.compile(r"^index ([0-9a-f]+)\.\.", re.M)
_NEW_FILE = re.compile(r"^new file mode ", re.M)


def _three_way_impossible(parsed: _Parsed, blobs: set[str] | None) -> bool:
    """Whether `git am -3` surely has no 3-way fallback: a file the patch changes
    names no pre-image blob, or one the scratch repository has never held (git's
    build-fake-ancestor then fails). Unknown (a clone's history): False."""
    if blobs is None:
        return False
    sections = _DIFF_GIT.split(parsed.patch.diff)[1:]
    if not sections:
        return True  # not a git diff: no blob ids at all
    for section in sections:
        header = section.split("\n@@", 1)[0]
        if _NEW_FILE.search(header):
            continue
        m = _INDEX_OLD.search(header)
        if m is None:
            return True
        prefix = m.group(1)
        if not any(b.startswith(prefix) for b in blobs):
            return True
    return False


def _exact_apply_impossible(root: Path, parsed: _Parsed) -> bool:
    """Whether a hunk's pre-image (context and removed lines) appears nowhere in its
    file in the scratch tree, so `git apply` (which needs it exactly) must fail."""
    for diff in parsed.files:
        if diff.is_binary or diff.old_path is None:
            continue
        text = _read(root, diff.old_path)
        if text is None or "\ufffd" in text or "\r" in text:
            # Missing (git says why), or bytes a str comparison could misjudge.
            continue
        lines, _ = _split(text)
        for hunk in diff.hunks:
            old = [ln.text for ln in hunk.lines if ln.kind is not LineKind.ADDED]
            if old and not _contains(lines, old):
                return True
    return False


def _contains(lines: Sequence[str], block: Sequence[str]) -> bool:
    """Whether `block` occurs as consecutive lines of `lines`."""
    size, want = len(block), list(block)
    return any(list(lines[i : i + size]) == want for i in positions(lines, block[0]))


# What git mailinfo accepts as the start of a mail: an mbox separator or a header.
_MAIL_START = re.compile(rb"From |[!-9;-~]+:")


def _try_git_am(root: Path, parsed: _Parsed) -> bool:
    """Apply the original mail with `git am -3`; undo and return False on failure."""
    raw = parsed.patch.message.raw
    if not raw or not _MAIL_START.match(raw):
        # git am's format detection wants a mbox "From " line or a header first;
        # a bare diff or quilt patch fails it (after git has read the index).
        return False
    excludes = [f"--exclude={f.path}" for f in parsed.binaries]
    # the analysed diff, not the mail as received (guard.am_mail)
    mail = am_mail(parsed.patch)
    res = git(["am", "-3", "--quiet", "--no-gpg-sign", *excludes], root, stdin=mail)
    if res.ok:
        return True
    git(["am", "--abort"], root)
    return False


def _try_git_apply(root: Path, parsed: _Parsed, patch_file: Path) -> bool:
    """Apply the diff with `git apply --index` and commit; False when git refuses."""
    patch_file.write_text(parsed.patch.diff, encoding="utf-8")
    excludes = [f"--exclude={f.path}" for f in parsed.binaries]
    res = git(["apply", "--index", f"-p{parsed.strip}", *excludes, str(patch_file)], root)
    if not res.ok:
        return False
    git(
        ["commit", "--quiet", "--allow-empty", "--no-verify", "-m", f"patch {parsed.patch.number}"],
        root,
        check=True,
    )
    return True


def _fuzzy_file(
    root: Path, diff: FileDiff, file_index: int, parsed: _Parsed
) -> tuple[list[HunkResult], list[str]]:
    """Apply one file's hunks in the scratch tree; return results and notes."""
    notes: list[str] = []

    def fail_all(reason: str) -> list[HunkResult]:
        return [HunkResult(diff.path, h.header, False, reason=reason) for h in diff.hunks]

    for path in {diff.old_path, diff.new_path} - {None}:
        if path is not None and inside(root, path) is None:
            return fail_all(f"{path} passes through a symlink an earlier patch created"), notes
    old = root / diff.old_path if diff.old_path else None
    new = root / diff.new_path if diff.new_path else None
    if new is not None and (diff.is_new or diff.is_rename) and os.path.lexists(new):
        return fail_all(f"{diff.path} already exists"), notes
    if old is not None and not (old.is_file() and not old.is_symlink()):
        return fail_all(f"{diff.old_path} is not a file in the tree"), notes
    # surrogateescape: a Latin-1 byte in an old file must survive the round trip.
    old_text = old.read_bytes().decode("utf-8", "surrogateescape") if old else ""
    lines, ends_nl = _split(old_text)
    new_lines, placements = apply_hunks(lines, diff.hunks)
    for nn in parsed.no_newline:
        if nn.file_index != file_index or nn.hunk_index >= len(placements):
            continue
        if placements[nn.hunk_index].applied:
            # `\ No newline at end of file` after a + or context line: the result
            # ends without one; after a - line only: the patch adds the newline.
            ends_nl = not nn.target
    # What applied is kept, as GNU patch keeps it and writes the rest to .rej.
    results = [_hunk_result(diff, p) for p in placements]
    if diff.mode_only:
        notes.append(f"mode change of {diff.path} not applied by fuzzy apply")
    text = "\n".join(new_lines) + ("\n" if new_lines and ends_nl else "")
    try:
        if diff.is_deleted:
            assert old is not None
            if not new_lines:
                old.unlink()
                return results, notes
            if all(p.applied for p in placements):
                notes.append(f"not deleting {diff.old_path}: its content differs from the patch")
            old.write_bytes(text.encode("utf-8", "surrogateescape"))
            return results, notes
        assert new is not None
        new.parent.mkdir(parents=True, exist_ok=True)
        new.write_bytes(text.encode("utf-8", "surrogateescape"))
        if diff.is_rename and old is not None and old != new:
            old.unlink()
    except OSError as exc:
        # A path that is a directory in the tree, say: the file cannot take the change.
        reason = f"cannot write {diff.path}: {exc.strerror or exc}"
        return fail_all(reason), notes
    return results, notes


def _hunk_result(diff: FileDiff, p: Placement) -> HunkResult:
    hunk = diff.hunks[p.index]
    return HunkResult(
        file=diff.path,
        hunk=hunk.header,
        applied=p.applied,
        offset=p.offset if p.applied else 0,
        fuzz=p.fuzz if p.applied else 0,
        reason=p.reason,
    )


def _try_fuzzy(scratch: _Scratch, parsed: _Parsed) -> tuple[list[HunkResult], list[str]]:
    """Apply what fits with GNU patch rules, file by file. The commit of the result
    is owed until git next runs (_git_ready): nothing reads it before then."""
    results: list[HunkResult] = []
    notes: list[str] = []
    for index, diff in enumerate(parsed.files):
        if diff.is_binary:
            continue
        r, n = _fuzzy_file(scratch.root, diff, index, parsed)
        results += r
        notes += n
    if scratch.has_repo:
        scratch.owed = f"patch {parsed.patch.number} (fuzzy)"
    return results, notes


def _placements_after_git(
    pre: dict[str, str | None], parsed: _Parsed, method: ApplyMethod
) -> list[HunkResult]:
    """Where each hunk landed when git applied the patch, GNU-patch style, so the
    reader sees offsets whichever tool did the work."""
    results: list[HunkResult] = []
    for diff in parsed.files:
        if diff.is_binary:
            continue
        lines, _ = _split(pre.get(diff.path) or "")
        placements = locate_hunks(lines, diff.hunks, forward_only=False)
        for p in placements:
            if p.applied:
                results.append(_hunk_result(diff, p))
            else:
                # git placed it where our exact search does not: a 3-way merge, or
                # git apply's own leniency. The hunk applied; its offset is unknown.
                hunk = diff.hunks[p.index]
                how = "merged by 3-way" if method is ApplyMethod.GIT_AM else "placed by git apply"
                results.append(HunkResult(diff.path, hunk.header, True, reason=how))
    return results


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else str(n)


_METHOD_WORDS = {
    ApplyMethod.GIT_AM: "git am -3",
    ApplyMethod.GIT_APPLY: "git apply",
    ApplyMethod.FUZZY: "fuzzy apply",
    ApplyMethod.NOT_APPLIED: "nothing",
    ApplyMethod.NO_TREE: "no tree",
}


def _short_header(header: str) -> str:
    """`@@ -1,2 +1,3 @@` without the section text after it."""
    end = header.find("@@", 2)
    return header[: end + 2] if end > 0 else header


def _message(method: ApplyMethod, hunks: Sequence[HunkResult]) -> str:
    """One line for the reader: how the patch applied, or which hunks did not."""
    failed = [h for h in hunks if not h.applied]
    if failed:
        ordinal: dict[int, int] = {}
        per_file: dict[str, int] = {}
        for i, h in enumerate(hunks):
            per_file[h.file] = per_file.get(h.file, 0) + 1
            ordinal[i] = per_file[h.file]
        # A file whose change is already there is one fact, not N failed hunks.
        already = list(dict.fromkeys(h.file for h in failed if h.reason.startswith(ALREADY)))
        parts = [
            f"hunk {ordinal[i]} of {h.file} ({_short_header(h.hunk)})"
            for i, h in enumerate(hunks)
            if not h.applied and h.file not in already
        ]
        pieces = []
        if len(parts) == 1:
            pieces.append(f"{parts[0]} does not apply")
        elif parts:
            pieces.append(f"{len(parts)} hunks do not apply: " + "; ".join(parts))
        if already:
            pieces.append(f"{', '.join(already)} skipped: looks already applied")
        text = "; ".join(pieces)
        applied = len(hunks) - len(failed)
        if applied:
            text += f" ({applied} other hunk{'s' if applied != 1 else ''} applied"
            text += f" by {_METHOD_WORDS[method]})"
        return text
    offsets = list(dict.fromkeys(h.offset for h in hunks if h.offset))
    fuzz = max((h.fuzz for h in hunks), default=0)
    how = f"by {_METHOD_WORDS[method]}"
    if not offsets and not fuzz:
        return f"applied cleanly {how}"
    text = "applied"
    if offsets:
        text += " with offsets (" + ", ".join(_signed(o) for o in offsets) + ")"
    if fuzz:
        text += f"{' and' if offsets else ' with'} fuzz {fuzz}"
    return f"{text} {how}"


def _regenerated(root: Path, before: str, after: str, source: str) -> tuple[FileDiff, ...]:
    """The change as the tree now has it, so hunk line numbers match the images."""
    res = git(
        [
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "-M",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            before,
            after,
        ],
        root,
        check=True,
    )
    return parse_diff(res.text(), source)


def _shifted(files: Sequence[FileDiff], results: Sequence[HunkResult]) -> tuple[FileDiff, ...]:
    """The patch's own hunks, renumbered to where they landed in the tree.

    With every hunk applied, a hunk's post-image lines move by the same offset as
    its pre-image lines, so adding the offset to both keeps the patch's text (what
    a reply quotes, what hunk indexes count) and makes the numbers match the images."""
    offsets = iter(r.offset for r in results)
    out: list[FileDiff] = []
    for f in files:
        if f.is_binary:
            continue
        hunks = []
        for h in f.hunks:
            d = next(offsets, 0)
            lines = tuple(
                replace(
                    ln,
                    source_line=None if ln.source_line is None else ln.source_line + d,
                    target_line=None if ln.target_line is None else ln.target_line + d,
                )
                for ln in h.lines
            )
            hunks.append(
                replace(
                    h,
                    source_start=h.source_start + d,
                    target_start=h.target_start + d,
                    lines=lines,
                )
            )
        out.append(replace(f, hunks=tuple(hunks)))
    return tuple(out)


def _tree_files(
    root: Path, before: str, parsed: _Parsed, results: Sequence[HunkResult]
) -> tuple[FileDiff, ...]:
    """FileDiffs whose line numbers match the tree's images: the patch's own hunks
    shifted by their offsets, or, when git merged a hunk our search cannot place,
    the change re-read from the scratch commits."""
    if all(r.applied and not r.reason for r in results):
        return _shifted(parsed.files, results)
    files = _regenerated(root, before, "HEAD", f"patch {parsed.patch.number}")
    seen = {f.path for f in files}
    # A file git left unchanged (an empty new file, a mode change) keeps its diff.
    return files + tuple(f for f in parsed.files if f.path not in seen and not f.is_binary)


def _images(root: Path, files: Sequence[FileDiff], pre: dict[str, str | None]) -> list[FileImage]:
    """Full pre/post images of the touched text files after a patch applied."""
    images: list[FileImage] = []
    for f in files:
        if f.is_binary:
            continue
        # A deletion that fuzzy apply refused to finish leaves the file in place.
        post = _read(root, f.new_path if f.new_path is not None else f.old_path)
        images.append(FileImage(path=f.path, pre=pre.get(f.path), post=post))
    return images


def _apply_one(
    scratch: _Scratch, parsed: _Parsed, work: Path
) -> tuple[PatchApplication, PatchImages, list[str]]:
    patch = parsed.patch
    root = scratch.root
    number = patch.number
    if parsed.error:
        app = PatchApplication(
            number, ApplyMethod.NOT_APPLIED, False, message=f"not applied: {parsed.error}"
        )
        return app, PatchImages(number, (), ()), []
    pre = {f.path: _read(root, f.old_path) for f in parsed.files if not f.is_binary}
    method: ApplyMethod | None = None
    notes: list[str] = []
    # A hunk whose pre-image is nowhere in its file makes `git apply` fail, and
    # `git am -3` too when there is no blob to merge from: skip the subprocesses
    # (and, in a plain directory's scratch, the repository they would need).
    exact_impossible = _exact_apply_impossible(root, parsed)
    try_am = bool(patch.message.raw) and not (
        exact_impossible and _three_way_impossible(parsed, scratch.blobs)
    )
    before = ""
    if try_am or not exact_impossible:
        _git_ready(scratch)
        before = _head(root)
        if try_am and _try_git_am(root, parsed):
            method = ApplyMethod.GIT_AM
        elif not exact_impossible and _try_git_apply(root, parsed, work / f"patch-{number}.diff"):
            method = ApplyMethod.GIT_APPLY
    if method is not None:
        hunks = _placements_after_git(pre, parsed, method)
        files = _tree_files(root, before, parsed, hunks)
        app = PatchApplication(
            number, method, True, tuple(hunks), _message(method, hunks), parsed.skipped
        )
        return app, PatchImages(number, files, tuple(_images(root, files, pre))), notes
    hunks, fuzzy_notes = _try_fuzzy(scratch, parsed)
    notes += [f"patch {number}: {n}" for n in fuzzy_notes]
    applied = sum(1 for h in hunks if h.applied)
    if hunks and applied == len(hunks):
        # Every hunk placed by our own search (no reason set): the patch's own
        # hunks shifted by their offsets; no scratch commit is read.
        files = _shifted(parsed.files, hunks)
        app = PatchApplication(
            number,
            ApplyMethod.FUZZY,
            True,
            tuple(hunks),
            _message(ApplyMethod.FUZZY, hunks),
            parsed.skipped,
        )
        return app, PatchImages(number, files, tuple(_images(root, files, pre))), notes
    method = ApplyMethod.FUZZY if applied else ApplyMethod.NOT_APPLIED
    message = _message(method, hunks) if hunks else "not applied: nothing to apply"
    notes.append(
        f"patch {number} did not apply fully; its functions are analysed on the diff's own context"
    )
    app = PatchApplication(number, method, False, tuple(hunks), message, parsed.skipped)
    return app, diff_only_images(number, parsed.files), notes


# --------------------------------------------------------------------------- series


def _diff_only(series: Series, parsed: Sequence[_Parsed]) -> AppliedSeries:
    """The AppliedSeries for no tree: every patch analysed on its own diff."""
    apps: list[PatchApplication] = []
    images: list[PatchImages] = []
    for p in parsed:
        n = p.patch.number
        if p.error:
            apps.append(
                PatchApplication(
                    n, ApplyMethod.NOT_APPLIED, False, message=f"not applied: {p.error}"
                )
            )
            images.append(PatchImages(n, (), ()))
            continue
        apps.append(
            PatchApplication(
                n,
                ApplyMethod.NO_TREE,
                True,
                message="no tree given: analysed on the diff's own context",
                skipped=p.skipped,
            )
        )
        images.append(diff_only_images(n, p.files))
    return AppliedSeries(
        series=series,
        tree=None,
        applications=tuple(apps),
        images=tuple(images),
        notes=("no tree given: functions are seen only as far as the hunks show them",),
    )


def _series_base(series: Series) -> str | None:
    """The first `base-commit:` any patch of the series names."""
    return next((p.base_commit for p in series.patches if p.base_commit), None)


def apply_series(
    series: Series,
    tree: str | None,
    settings: Settings,
    *,
    progress: Progress | None = None,
) -> AppliedSeries:
    """Apply every present patch of `series` in order onto `tree` (None: diff only).

    Never modifies `tree`. Raises UnsafePatchError for a hostile diff path (absolute,
    `..`, through a symlink) or an ed script, InputError for a tree that cannot be
    used; a patch that does not apply is recorded, and later patches still try."""
    parsed = _parse_all(series)
    if tree is None:
        return _diff_only(series, parsed)
    root = Path(tree).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"tree not found or not a directory: {tree}")
    paths = _touched_paths(parsed)
    for path in paths:
        check_path(path, "series")
    apps: list[PatchApplication] = []
    images: list[PatchImages] = []
    notes: list[str] = []
    with _scratch(root, settings, _series_base(series), paths) as scratch:
        notes += scratch.notes
        work = scratch.root.parent
        for p in parsed:
            app, imgs, patch_notes = _apply_one(scratch, p, work)
            _remember_blobs(scratch, [x for f in p.files for x in (f.old_path, f.new_path) if x])
            _limit_unsaved(scratch)
            apps.append(app)
            images.append(imgs)
            notes += patch_notes
            if progress:
                progress(f"patch {p.patch.number}/{p.patch.total}: {app.message}")
        base = scratch.base_commit
    return AppliedSeries(
        series=series,
        tree=str(tree),
        applications=tuple(apps),
        images=tuple(images),
        base_commit=base,
        notes=tuple(notes),
    )
