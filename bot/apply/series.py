"""Applying a series to a kernel tree in a scratch repository.

    apply_series(series, tree, settings, progress=) -> AppliedSeries

The user's tree is only ever read: the series is applied in a scratch repository
holding just the paths it touches (bot.apply.scratch), after every diff has been
parsed and every path checked (bot.apply.parse). Each patch then tries, in order:
`git am -3` on the original mail, `git apply --index`, and our own
GNU-patch-style fuzzy apply (bot.apply.strategies, bot.apply.fuzzy); the git
steps only when they could succeed. Whatever happens is a PatchApplication with
the patch's images (renumbered hunks, pre/post file text) and one line for the
reader; only a hostile diff (UnsafePatchError) or an unusable tree (InputError)
raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bot.analyze.diff import check_path, parse_diff
from bot.apply.fuzzy import ALREADY
from bot.apply.gitcmd import git
from bot.apply.images import diff_only_images
from bot.apply.parse import Parsed, parse_all, series_base, touched_paths
from bot.apply.scratch import (
    Scratch,
    git_ready,
    head_commit,
    limit_unsaved,
    open_scratch,
    read_text,
    remember_blobs,
)
from bot.apply.strategies import (
    exact_apply_impossible,
    placements_after_git,
    three_way_impossible,
    try_fuzzy,
    try_git_am,
    try_git_apply,
)
from bot.config import Settings
from bot.errors import InputError
from bot.model import (
    AppliedSeries,
    ApplyMethod,
    FileDiff,
    FileImage,
    HunkResult,
    PatchApplication,
    PatchImages,
    Series,
)

__all__ = ["apply_series"]

Progress = Callable[[str], None]


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
    root: Path, before: str, parsed: Parsed, results: Sequence[HunkResult]
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
        post = read_text(root, f.new_path if f.new_path is not None else f.old_path)
        images.append(FileImage(path=f.path, pre=pre.get(f.path), post=post))
    return images


def _apply_one(
    scratch: Scratch, parsed: Parsed, work: Path
) -> tuple[PatchApplication, PatchImages, list[str]]:
    patch = parsed.patch
    root = scratch.root
    number = patch.number
    if parsed.error:
        app = PatchApplication(
            number, ApplyMethod.NOT_APPLIED, False, message=f"not applied: {parsed.error}"
        )
        return app, PatchImages(number, (), ()), []
    pre = {f.path: read_text(root, f.old_path) for f in parsed.files if not f.is_binary}
    method: ApplyMethod | None = None
    notes: list[str] = []
    # A hunk whose pre-image is nowhere in its file makes `git apply` fail, and
    # `git am -3` too when there is no blob to merge from: skip the subprocesses
    # (and, in a plain directory's scratch, the repository they would need).
    exact_impossible = exact_apply_impossible(root, parsed)
    try_am = bool(patch.message.raw) and not (
        exact_impossible and three_way_impossible(parsed, scratch.blobs)
    )
    before = ""
    if try_am or not exact_impossible:
        git_ready(scratch)
        before = head_commit(root)
        if try_am and try_git_am(root, parsed):
            method = ApplyMethod.GIT_AM
        elif not exact_impossible and try_git_apply(root, parsed, work / f"patch-{number}.diff"):
            method = ApplyMethod.GIT_APPLY
    if method is not None:
        hunks = placements_after_git(pre, parsed, method)
        files = _tree_files(root, before, parsed, hunks)
        app = PatchApplication(
            number, method, True, tuple(hunks), _message(method, hunks), parsed.skipped
        )
        return app, PatchImages(number, files, tuple(_images(root, files, pre))), notes
    hunks, fuzzy_notes = try_fuzzy(scratch, parsed)
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


def _diff_only(series: Series, parsed: Sequence[Parsed]) -> AppliedSeries:
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
    parsed = parse_all(series)
    if tree is None:
        return _diff_only(series, parsed)
    root = Path(tree).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"tree not found or not a directory: {tree}")
    paths = touched_paths(parsed)
    for path in paths:
        check_path(path, "series")
    apps: list[PatchApplication] = []
    images: list[PatchImages] = []
    notes: list[str] = []
    with open_scratch(root, settings, series_base(series), paths) as scratch:
        notes += scratch.notes
        work = scratch.root.parent
        for p in parsed:
            app, imgs, patch_notes = _apply_one(scratch, p, work)
            remember_blobs(scratch, [x for f in p.files for x in (f.old_path, f.new_path) if x])
            limit_unsaved(scratch)
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
