"""Unified diffs into FileDiffs, with hostile paths refused.

    parse_diff(text, source) -> tuple[FileDiff, ...]

Accepts git diffs (renames, new/deleted files, mode-only changes, binary
patches, `\\ No newline at end of file`) and quilt/`diff -puN` diffs (`Index:`
lines, `--- a/file~patch-name`, any first path component such as
`linux-2.6.orig/`). Patch text is hostile data: a path that is absolute, has a
`..` component or a NUL byte raises UnsafePatchError, and so does an ed script
(`diff -e` output), which GNU patch would otherwise run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchSet

from bot.errors import InputError, UnsafePatchError
from bot.model import FileDiff, Hunk, HunkLine, LineKind

__all__ = ["MAX_LINE_NUMBER", "NoNewline", "check_path", "parse_diff", "parse_diff_detail"]

# `diff -e` commands: `12a`, `3,5d`, `1,2c`, alone on a line.
_ED_COMMAND = re.compile(r"^\d+(?:,\d+)?[acd]$")
_UNIFIED_MARK = re.compile(r"^(?:--- |\+\+\+ |@@ |diff --git |Index: |GIT binary patch)", re.M)
_GIT_HEADER = re.compile(r"^diff --git (\S+) (\S+)\s*$")
_MODE_LINE = re.compile(r"^(?:old|new) mode \d+$", re.M)
_RENAME_LINE = re.compile(r"^rename (?:from|to) ", re.M)
_DEV_NULL = "/dev/null"
_CONTROL = re.compile(r"[\x01-\x08\x0a-\x1f\x7f]")
# Longest file a hunk may point into. The largest kernel sources are a few hundred
# thousand lines; a hostile `@@ -900000000,1 ...` would otherwise make the
# diff-only image rebuild allocate that many lines.
MAX_LINE_NUMBER = 2_000_000


@dataclass(frozen=True)
class NoNewline:
    """Which sides of which hunk end without a newline at end of file."""

    file_index: int
    hunk_index: int
    source: bool  # the pre-image's last line has no newline
    target: bool  # the post-image's last line has no newline


def check_path(path: str, source: str) -> str:
    """Return `path` when it is safe to write inside a tree, else raise
    UnsafePatchError: absolute, with a `..` or `.git` component, or with a NUL
    byte or control character."""
    if "\x00" in path:
        raise UnsafePatchError(f"refused: diff path contains a NUL byte ({path!r})", source=source)
    if _CONTROL.search(path):
        raise UnsafePatchError(
            f"refused: diff path contains a control character ({path!r})", source=source
        )
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", path):
        raise UnsafePatchError(f"refused: absolute path in diff: {path}", source=source)
    parts = re.split(r"[\\/]+", path)
    if ".." in parts:
        raise UnsafePatchError(f"refused: '..' in diff path: {path}", source=source)
    if any(p.casefold().rstrip(". ") == ".git" for p in parts):
        # A write under .git/ could set config (a filter or fsmonitor command) that
        # git would run in the scratch repository; git apply refuses these too.
        raise UnsafePatchError(f"refused: diff path inside .git: {path}", source=source)
    if not path or all(p in ("", ".") for p in parts):
        raise UnsafePatchError(f"refused: empty diff path {path!r}", source=source)
    return path


def _looks_like_ed_script(text: str) -> bool:
    """An ed script has command lines (`12a`, `3,5d`) and no unified headers."""
    if _UNIFIED_MARK.search(text):
        return False
    return any(_ED_COMMAND.match(line.strip()) for line in text.splitlines())


def _strip_prefix(path: str, strip: bool) -> str:
    if not strip:
        return path
    parts = path.split("/", 1)
    return parts[1] if len(parts) == 2 and parts[1] else path


def _paths(
    source_file: str, target_file: str, header: str, source: str
) -> tuple[str | None, str | None, bool]:
    """Old and new repository-relative paths, and whether the first component was
    a prefix (a/, b/, linux.orig/, ...). `git diff --no-prefix` has none."""
    old = None if source_file == _DEV_NULL else source_file
    new = None if target_file == _DEV_NULL else target_file
    # Judge the names as written: `-p1` would turn `/etc/x` into `etc/x`, but a
    # diff that names an absolute path was not made inside a kernel tree.
    for raw in (old, new):
        if raw is not None and raw.startswith("/"):
            raise UnsafePatchError(f"refused: absolute path in diff: {raw}", source=source)
    git = _GIT_HEADER.match(header.splitlines()[0]) if header else None
    if git:
        # git writes `diff --git a/x b/x`; with --no-prefix it writes `diff --git x x`,
        # and then stripping a component would move the change to another file.
        strip = git.group(1).startswith("a/") or (
            "/" in git.group(1) and git.group(1).split("/", 1)[0] != git.group(2).split("/", 1)[0]
        )
    else:
        strip = all("/" in p for p in (old, new) if p is not None)
    old_s = _strip_prefix(old, strip) if old is not None else None
    new_s = _strip_prefix(new, strip) if new is not None else None
    # quilt (`diff -puN`) names the backup `a/mm/x.c~patch-name`: the file is mm/x.c.
    if old_s and new_s and old_s != new_s and old_s.startswith(new_s + "~"):
        old_s = new_s
    return old_s, new_s, strip


_HUNK_HEAD = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def _repair_eaten_spaces(text: str) -> str:
    """Give back the leading space mailers eat from context lines.

    Inside a hunk (by its line counts) an empty line or one starting with a tab
    can only be a context line whose space was stripped; GNU patch reads it so
    too. Anything else unexpected is left for unidiff to report."""
    out: list[str] = []
    old = new = 0
    for raw in text.split("\n"):
        line = raw
        if old > 0 or new > 0:
            if line == "" or line.startswith("\t"):
                line = " " + line
            if line.startswith(" "):
                old, new = old - 1, new - 1
            elif line.startswith("-"):
                old -= 1
            elif line.startswith("+"):
                new -= 1
            elif not line.startswith("\\"):
                old = new = 0
        else:
            m = _HUNK_HEAD.match(line)
            if m:
                old = int(m.group(1)) if m.group(1) is not None else 1
                new = int(m.group(2)) if m.group(2) is not None else 1
        out.append(line)
    return "\n".join(out)


def parse_diff_detail(text: str, source: str) -> tuple[tuple[FileDiff, ...], tuple[NoNewline, ...]]:
    """Like parse_diff, also saying which hunks end without a final newline."""
    if "\x00" in text:
        raise UnsafePatchError("refused: diff contains a NUL byte", source=source)
    if _looks_like_ed_script(text):
        raise UnsafePatchError(
            "refused: ed script (diff -e output) instead of a unified diff", source=source
        )
    text = _repair_eaten_spaces(text.replace("\r\n", "\n"))
    try:
        patch_set = PatchSet(text)
    except UnidiffParseError as exc:
        detail = " ".join(str(exc).split())
        raise InputError(f"malformed diff: {detail}", source=source) from None
    files: list[FileDiff] = []
    no_newline: list[NoNewline] = []
    for file_index, pf in enumerate(patch_set):
        header = str(pf.patch_info) if pf.patch_info else ""
        header_lines = [ln for ln in header.splitlines() if ln.startswith("diff --git ")]
        first = header_lines[0] if header_lines else ""
        old, new, _ = _paths(pf.source_file, pf.target_file, first, source)
        if pf.is_added_file:
            old = None
        if pf.is_removed_file:
            new = None
        for p in (old, new):
            if p is not None:
                check_path(p, source)
        hunks: list[Hunk] = []
        for hunk_index, h in enumerate(pf):
            if max(h.source_start + h.source_length, h.target_start + h.target_length) > (
                MAX_LINE_NUMBER
            ):
                raise InputError(
                    f"malformed diff: hunk at line {max(h.source_start, h.target_start)} "
                    f"of {new or old} is beyond {MAX_LINE_NUMBER} lines",
                    source=source,
                )
            lines: list[HunkLine] = []
            src_nl = tgt_nl = False
            prev_kind: str | None = None
            for line in h:
                if line.line_type == "\\":
                    # The marker belongs to the line just before it.
                    if prev_kind in ("-", " "):
                        src_nl = True
                    if prev_kind in ("+", " "):
                        tgt_nl = True
                    continue
                if line.line_type not in ("+", "-", " "):
                    continue
                prev_kind = line.line_type
                lines.append(
                    HunkLine(
                        kind=LineKind(line.line_type),
                        text=line.value.rstrip("\n"),
                        source_line=line.source_line_no,
                        target_line=line.target_line_no,
                    )
                )
            if src_nl or tgt_nl:
                no_newline.append(NoNewline(file_index, hunk_index, src_nl, tgt_nl))
            hunks.append(
                Hunk(
                    source_start=h.source_start,
                    source_length=h.source_length,
                    target_start=h.target_start,
                    target_length=h.target_length,
                    section=(h.section_header or "").strip(),
                    lines=tuple(lines),
                )
            )
        mode_only = (
            not hunks
            and not pf.is_binary_file
            and not _RENAME_LINE.search(header)
            and bool(_MODE_LINE.search(header))
            and not pf.is_added_file
            and not pf.is_removed_file
        )
        files.append(
            FileDiff(
                old_path=old,
                new_path=new,
                hunks=tuple(hunks),
                is_binary=bool(pf.is_binary_file),
                # unidiff calls any old != new a rename, quilt's `x.c~name` included;
                # only git's `rename from` header says a file moved.
                is_rename=bool(_RENAME_LINE.search(header)) and old != new,
                mode_only=mode_only,
            )
        )
    return tuple(files), tuple(no_newline)


def parse_diff(text: str, source: str) -> tuple[FileDiff, ...]:
    """Every file a unified diff changes, with hunks and line numbers.

    Raises UnsafePatchError for hostile paths or an ed script, InputError for a
    diff unidiff cannot read; text without any diff gives an empty tuple."""
    return parse_diff_detail(text, source)[0]
