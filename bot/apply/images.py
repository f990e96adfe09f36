"""File images rebuilt from a diff alone, for diff-only review and for patches
that did not apply: each hunk's lines sit at their own line numbers, every line
the diff does not show is blank, so tree-sitter sees the functions the hunks show
and line numbers still match the hunk headers."""

from __future__ import annotations

from collections.abc import Sequence

from bot.model import FileDiff, FileImage, LineKind, PatchImages

__all__ = ["diff_only_images", "partial_image"]


def _place(lines: dict[int, str]) -> str:
    """Text with each line at its 1-based number and blank lines between."""
    if not lines:
        return ""
    out = [""] * max(lines)
    for number, text in lines.items():
        out[number - 1] = text
    return "\n".join(out) + "\n"


def partial_image(diff: FileDiff) -> FileImage:
    """The pre and post text of one file as far as its hunks show them."""
    pre: dict[int, str] = {}
    post: dict[int, str] = {}
    for hunk in diff.hunks:
        for line in hunk.lines:
            if line.kind is not LineKind.ADDED and line.source_line is not None:
                pre[line.source_line] = line.text
            if line.kind is not LineKind.REMOVED and line.target_line is not None:
                post[line.target_line] = line.text
    return FileImage(
        path=diff.path,
        pre=None if diff.is_new else _place(pre),
        post=None if diff.is_deleted else _place(post),
        partial=True,
    )


def diff_only_images(number: int, files: Sequence[FileDiff]) -> PatchImages:
    """PatchImages for patch `number` from its diff alone (binary files left out)."""
    return PatchImages(
        number=number,
        files=tuple(files),
        images=tuple(partial_image(f) for f in files if not f.is_binary),
    )
