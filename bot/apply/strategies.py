"""How one patch is put onto the scratch tree (bot.apply.series): the strategies
in the order they are tried, and the checks that skip one that cannot succeed.

    three_way_impossible(parsed, blobs)   `git am -3` has no blob to merge from
    exact_apply_impossible(root, parsed)  a hunk's pre-image is nowhere in its file
    try_git_am(root, parsed)              the mail as `git am -3` (guard.am_mail)
    try_git_apply(root, parsed, file)     the diff as `git apply --index`
    try_fuzzy(scratch, parsed)            GNU patch rules (bot.apply.fuzzy), what fits
    placements_after_git(pre, parsed, m)  where each hunk landed when git applied it

Each git step undoes itself when it fails; fuzzy apply keeps what applied, as GNU
patch does, and fails a file it cannot reach safely (through a symlink an earlier
patch created, a path that already exists).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from bot.apply.fuzzy import Placement, apply_hunks, locate_hunks, positions
from bot.apply.gitcmd import git
from bot.apply.guard import am_mail, inside
from bot.apply.parse import Parsed
from bot.apply.scratch import Scratch, read_text
from bot.model import ApplyMethod, FileDiff, HunkResult, LineKind


def _split(text: str) -> tuple[list[str], bool]:
    """Lines without terminators, and whether the text ends with a newline."""
    if text == "":
        return [], True
    ends = text.endswith("\n")
    return text.split("\n")[:-1] if ends else text.split("\n"), ends


_DIFF_GIT = re.compile(r"^diff --git ", re.M)
_INDEX_OLD = re.compile(r"^index ([0-9a-f]+)\.\.", re.M)
_NEW_FILE = re.compile(r"^new file mode ", re.M)


def three_way_impossible(parsed: Parsed, blobs: set[str] | None) -> bool:
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


def exact_apply_impossible(root: Path, parsed: Parsed) -> bool:
    """Whether a hunk's pre-image (context and removed lines) appears nowhere in its
    file in the scratch tree, so `git apply` (which needs it exactly) must fail."""
    for diff in parsed.files:
        if diff.is_binary or diff.old_path is None:
            continue
        text = read_text(root, diff.old_path)
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


def try_git_am(root: Path, parsed: Parsed) -> bool:
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


def try_git_apply(root: Path, parsed: Parsed, patch_file: Path) -> bool:
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
    root: Path, diff: FileDiff, file_index: int, parsed: Parsed
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
    results = [hunk_result(diff, p) for p in placements]
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


def hunk_result(diff: FileDiff, p: Placement) -> HunkResult:
    hunk = diff.hunks[p.index]
    return HunkResult(
        file=diff.path,
        hunk=hunk.header,
        applied=p.applied,
        offset=p.offset if p.applied else 0,
        fuzz=p.fuzz if p.applied else 0,
        reason=p.reason,
    )


def try_fuzzy(scratch: Scratch, parsed: Parsed) -> tuple[list[HunkResult], list[str]]:
    """Apply what fits with GNU patch rules, file by file. The commit of the result
    is owed until git next runs (git_ready): nothing reads it before then."""
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


def placements_after_git(
    pre: dict[str, str | None], parsed: Parsed, method: ApplyMethod
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
                results.append(hunk_result(diff, p))
            else:
                # git placed it where our exact search does not: a 3-way merge, or
                # git apply's own leniency. The hunk applied; its offset is unknown.
                hunk = diff.hunks[p.index]
                how = "merged by 3-way" if method is ApplyMethod.GIT_AM else "placed by git apply"
                results.append(HunkResult(diff.path, hunk.header, True, reason=how))
    return results
