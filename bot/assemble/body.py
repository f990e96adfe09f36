"""Split a patch mail's body into commit message, diff and base commit.

    split_patch_body(body) -> (commit_message, diff_text, base_commit)

The commit message ends at the `---` separator (git am's rule); the diff starts
at the first `diff --git`, `diff -puN` (quilt), `Index:` (CVS/SVN) or
`--- a/` + `+++ b/` pair, and ends where the hunks' own line counts say it
ends. Counting, rather than cutting at the first `-- `, is what keeps mail
signatures and list footers ("-- \\n2.43.0", "--\\nTo unsubscribe...") out of
the diff while a removed line that reads "- " stays in.

A second diff later in the body (after the signature, after a footer) is part
of the diff too: `git am` would apply it, so the review must see it. The diff
text is every diff of the body, in order, without the prose between them, and
it is what the apply stage hands to git (bot.apply.guard.am_mail), so what is
applied and what is analysed are the same text.
"""

from __future__ import annotations

import email.utils
import re

from bot.ingest.message import check_line_lengths

__all__ = ["in_body_author", "split_patch_body"]

# Line counts of at most 9 digits: a longer one is junk, not a hunk (and int()
# of thousands of digits is refused by Python).
_HUNK_RE = re.compile(r"^@@ -\d{1,9}(?:,(\d{1,9}))? \+\d{1,9}(?:,(\d{1,9}))? @@")
_BASE_RE = re.compile(r"^base-commit:\s*([0-9a-fA-F]{7,64})\s*$", re.MULTILINE)
_SEPARATOR_RE = re.compile(r"^---\s*$")
# Lines that may sit between files and hunks of a diff (git extended headers,
# CVS/SVN `Index:` preambles, quilt/GNU `diff -puN` command lines).
_HEADER_PREFIXES = (
    "diff ",
    "index ",
    "Index: ",
    "====",
    "RCS file: ",
    "retrieving revision ",
    "old mode ",
    "new mode ",
    "deleted file mode ",
    "new file mode ",
    "copy from ",
    "copy to ",
    "rename from ",
    "rename to ",
    "rename old ",
    "rename new ",
    "similarity index ",
    "dissimilarity index ",
    "Binary files ",
    "Only in ",
    "\\ No newline at end of file",
)
# Lines that can never be a damaged context line: they start the next file or hunk.
_HUNK_BREAKERS = ("diff ", "Index: ", "@@ ", "--- ", "+++ ")
_IN_BODY_KEYS = ("from:", "date:", "subject:")
_GIT_ONLY_CHANGES = (
    "old mode ",
    "new mode ",
    "deleted file mode ",
    "new file mode ",
    "rename from ",
    "copy from ",
    "Binary files ",
    "GIT binary patch",
)


def _is_start(lines: list[str], i: int) -> bool:
    line = lines[i]
    if line.startswith(("diff --git ", "diff -")):
        return True
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    if line.startswith("Index: ") and nxt.startswith(("====", "--- ", "diff ")):
        return True
    return line.startswith("--- ") and nxt.startswith("+++ ")


def _has_change(lines: list[str]) -> bool:
    """A real diff has a hunk, or is a git header-only change (mode, rename, binary)."""
    return any(_HUNK_RE.match(line) or line.startswith(_GIT_ONLY_CHANGES) for line in lines)


def _find_diff(lines: list[str]) -> tuple[int, int] | None:
    """(start, end) of the diff; a "diff -u shows..." sentence in prose is skipped."""
    i = 0
    while i < len(lines):
        if _is_start(lines, i):
            end = _diff_end(lines, i)
            if _has_change(lines[i:end]):
                return i, end
            i = max(end, i + 1)
            continue
        i += 1
    return _find_damaged_diff(lines)


def _find_diffs(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) of every diff of the body, in order: the first as _find_diff
    finds it, then each later one with a change (prose between them skipped)."""
    first = _find_diff(lines)
    if first is None:
        return []
    found = [first]
    i = first[1]
    while i < len(lines):
        if _is_start(lines, i):
            end = _diff_end(lines, i)
            if _has_change(lines[i:end]):
                found.append((i, end))
            i = max(end, i + 1)
            continue
        i += 1
    return found


def _find_damaged_diff(lines: list[str]) -> tuple[int, int] | None:
    """A diff whose hunks are unreadable (bad @@ lines) but whose file headers are clear.

    It is still a patch, one that will not apply; calling it a comment would
    hide it. It runs to the mail signature ("-- ") or the end.
    """
    for i, line in enumerate(lines):
        if not line.startswith(("diff --git ", "--- a/")):
            continue
        window = lines[i + 1 : i + 8]
        if any(w.startswith("+++ ") for w in window) and any(
            w.startswith("@@") for w in lines[i + 1 : i + 12]
        ):
            end = next((j for j in range(i, len(lines)) if lines[j] == "-- "), len(lines))
            return i, end
    return None


def _diff_end(lines: list[str], start: int) -> int:
    """Index of the first line after the diff that begins at `start`.

    Repairs whitespace-damaged context lines in `lines` in place.
    """
    old = new = 0
    in_hunk = False
    in_binary = False
    i = start
    while i < len(lines):
        line = lines[i]
        if in_hunk:
            if line.startswith("\\"):
                pass  # "\ No newline at end of file" is not counted
            elif line.startswith("-"):
                old -= 1
            elif line.startswith("+"):
                new -= 1
            elif line.startswith(" ") or line == "":
                # "" is a context line whose single space a mailer stripped
                old -= 1
                new -= 1
            elif old > 0 and new > 0 and not line.startswith(_HUNK_BREAKERS):
                # A context line whose leading space a mailer ate ("\tfoo" for
                # " \tfoo"): put the space back so the diff parses and applies.
                lines[i] = " " + line
                old -= 1
                new -= 1
            else:
                return i  # malformed hunk: stop before the junk
            if old <= 0 and new <= 0:
                in_hunk = False
            i += 1
            continue
        if in_binary:
            if line.strip() == "":
                in_binary = False
            i += 1
            continue
        m = _HUNK_RE.match(line)
        if m:
            old = int(m.group(1)) if m.group(1) is not None else 1
            new = int(m.group(2)) if m.group(2) is not None else 1
            in_hunk = old > 0 or new > 0
            i += 1
            continue
        if line.startswith(("GIT binary patch", "literal ", "delta ")):
            in_binary = True
            i += 1
            continue
        if line.startswith(_HEADER_PREFIXES):
            i += 1
            continue
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            i += 2
            continue
        return i
    return len(lines)


def _strip_in_body_headers(lines: list[str]) -> list[str]:
    """Drop git's in-body `From:`/`Date:`/`Subject:` block at the top of the message."""
    i = 0
    while i < len(lines) and lines[i].lower().startswith(_IN_BODY_KEYS):
        i += 1
    if i and (i == len(lines) or lines[i].strip() == ""):
        return lines[i + 1 :] if i < len(lines) else []
    return lines


def split_patch_body(body: str) -> tuple[str, str, str | None]:
    """(commit message, diff text, base-commit sha or None) of one patch mail body.
    A line longer than MAX_LINE (a bare diff never went through parse_message)
    is refused: InputError."""
    check_line_lengths(body, "patch body")
    text = body.replace("\r\n", "\n")
    lines = text.split("\n")
    found = _find_diffs(lines)
    head_end = found[0][0] if found else len(lines)
    sep = next((i for i in range(head_end) if _SEPARATOR_RE.match(lines[i])), None)
    msg_lines = lines[: sep if sep is not None else head_end]
    message = "\n".join(_strip_in_body_headers(msg_lines)).strip("\n").rstrip()
    diff = ""
    if found:
        diff = "\n".join(ln for start, end in found for ln in lines[start:end]).rstrip("\n")
        diff += "\n"
    base = _BASE_RE.search(text)
    return message, diff, base.group(1).lower() if base else None


def in_body_author(body: str) -> tuple[str, str] | None:
    """(name, address) from a git in-body `From:` line at the top of the body, if any."""
    for line in body.replace("\r\n", "\n").split("\n"):
        if not line.lower().startswith(_IN_BODY_KEYS):
            break
        if line.lower().startswith("from:"):
            name, addr = email.utils.parseaddr(line[5:].strip())
            if addr:
                return name, addr
    return None
