"""State a retry path no longer resets.

`reset-removed-before-retry` (MMLC009): a path that jumps back to retry
(`goto retry;` to a label above it) reset a variable just before the jump
(`flags &= ~MF_COUNT_INCREASED;`, `page = NULL;`, `locked = false;`), and the
patch removes the reset while the jump stays and nothing else resets it. The
retry then runs with what the failed attempt left: a flag saying a reference
is already held (the retry's get is skipped, its put still made), a pointer to
what the attempt released.

Read from the hunks (a label and its jump are lines, and a diff often shows
the jump with the label only in its section: `@@ ... @@ retry:`), so the same
check runs with a tree and diff-only. Registered into
bot.analyze.rules_match.MATCHERS when imported; the engine runs "table"
matchers once per file diff.
"""

from __future__ import annotations

import re

from bot.analyze.cfunc import function_at, function_name_from_section
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side
from bot.model import Hunk, LineKind

# `v = 0;`, `p->x = NULL;`, `locked = false;`, `flags &= ~FLAG;`
_RESET = re.compile(
    r"^\s*(?P<var>[A-Za-z_]\w*(?:(?:->|\.)\w+)*)\s*"
    r"(?:=\s*(?P<value>0|NULL|false|true|-1|[A-Z][A-Z0-9_]*)|&=\s*~\s*\(?\s*(?P<mask>[A-Z][A-Z0-9_]*)\s*\)?)"
    r"\s*;\s*(?:/[*/].*)?$"
)
_GOTO = re.compile(r"^\s*goto\s+(?P<label>[A-Za-z_]\w*)\s*;")
_LABEL = re.compile(r"^(?P<label>[A-Za-z_]\w*):\s*(?:/[*/].*)?$")
_BLANK = re.compile(r"^\s*(?:$|/\*.*\*/\s*$|//)")
# how far above a jump its retry label may be, in lines of the image
_REACH = 400


def _label_above(side: Side, hunk: Hunk, index: int, label: str, line: int) -> bool:
    """`label:` is above the jump: in the hunk before it, in the hunk's
    section, or in the image's lines above (a whole image)."""
    for hl in hunk.lines[:index]:
        m = _LABEL.match(hl.text)
        if m is not None and m.group("label") == label and hl.kind != LineKind.REMOVED:
            return True
    if _LABEL.match(hunk.section.strip()) and hunk.section.strip().startswith(label + ":"):
        return True
    lines = side.view.lines(side.file) if side.view.text(side.file) is not None else []
    for text in reversed(lines[max(0, line - _REACH) : max(0, line - 1)]):
        if text.startswith("}"):
            return False  # the end of the function before: the label is not this one's
        m = _LABEL.match(text)
        if m is not None and m.group("label") == label:
            return True
    return False


def enclosing_function(side: Side, line: int) -> str | None:
    """The function around `line` of a whole image (a partial one shows no
    heads to find it by)."""
    text = side.view.text(side.file)
    if side.view.partial or text is None:
        return None
    return function_at(text, side.file, line)


def _assigns(text: str, var: str) -> bool:
    return re.search(rf"(?<![\w>.]){re.escape(var)}\s*(?:[&|^+-]?=)(?!=)", text) is not None


def reset_removed_before_retry(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A reset made just before a jump back to a retry label is removed; the
    jump stays, and the patch resets the variable nowhere else."""
    diff = pre.diff
    if diff is None:
        return []
    added = [hl.text for h in diff.hunks for hl in h.lines if hl.kind == LineKind.ADDED]
    hits: list[Hit] = []
    for hunk in diff.hunks:
        lines = hunk.lines
        for i, hl in enumerate(lines):
            if hl.kind != LineKind.REMOVED or hl.source_line is None:
                continue
            m = _RESET.match(hl.text)
            if m is None:
                continue
            var = m.group("var")
            # the next line that stays: the jump
            j = i + 1
            while j < len(lines) and (
                lines[j].kind == LineKind.REMOVED or _BLANK.match(lines[j].text)
            ):
                j += 1
            if j >= len(lines) or lines[j].kind != LineKind.CONTEXT:
                continue
            g = _GOTO.match(lines[j].text)
            if g is None:
                continue
            label = g.group("label")
            if not _label_above(pre, hunk, i, label, hl.source_line):
                continue
            if any(_assigns(t, var) for t in added):
                continue  # reset elsewhere now (after the label, in a helper's call)
            name = enclosing_function(pre, hl.source_line) or function_name_from_section(
                hunk.section
            )
            where = f"{name}()" if name else f"the code retried at `{label}:`"
            hits.append(
                Hit(
                    key=("reset-removed-before-retry", var, label),
                    line=None,
                    removed_line=hl.source_line,
                    fields={
                        "function": name or f"the retry at {label}",
                        "where": where,
                        "reset": hl.text.strip(),
                        "variable": var,
                        "label": label,
                    },
                    evidence=(
                        f"before: `{hl.text.strip()}` at {pre.file}:{hl.source_line}, then "
                        f"`goto {label};`",
                        f"after: the jump back to `{label}:` stays, and the patch resets "
                        f"{var} nowhere else",
                    ),
                    variant="reset-removed-before-retry",
                )
            )
    return hits


MATCHERS["reset-removed-before-retry"] = Matcher(
    "reset-removed-before-retry",
    "table",
    reset_removed_before_retry,
    reset_removed_before_retry.__doc__ or "",
)

__all__ = ["reset_removed_before_retry"]
