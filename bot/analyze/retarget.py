"""A jump into an unwind ladder moved up it, through releases it skipped.

`release-on-retargeted-exit` (MMLC002): an error path's `goto A;` becomes
`goto B;`, where label `B` comes before `A` in the function's unwind ladder,
so the path now runs the releases between the two labels (`out: mmput(mm);
out_file: fput(file);`). The ladder's order says which exits hold what: the
path jumped past those releases because what they drop was not held there any
more (dropped before the jump: now dropped twice) or not yet (never taken: a
put without a get). Not reported when the patch also takes (gets, makes) the
object the release drops: the path then holds what it now releases.

Read from the hunks and the pre-image's lines (the ladder between the labels
is context the diff usually shows), so it runs with a tree and diff-only: a
label the image does not show leaves the jump unjudged. Registered into
bot.analyze.rules_match.MATCHERS when imported ("table" matchers run once per
file diff).
"""

from __future__ import annotations

import re

from bot.analyze.api import GET_ROLES, PUT_ROLES, RELEASE_ROLES
from bot.analyze.cfunc import function_at, function_name_from_section
from bot.analyze.naming import split_verb
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side
from bot.model import Hunk, LineKind

_GOTO = re.compile(r"^(?P<indent>\s*)goto\s+(?P<label>[A-Za-z_]\w*)\s*;")
_LABEL = re.compile(r"^(?P<label>[A-Za-z_]\w*):\s*(?:/[*/].*)?$")
# a release statement at the ladder's level: `\tmmput(mm);`
_STATEMENT = re.compile(r"^\t(?P<name>[A-Za-z_]\w*)\s*\((?P<args>.*)\)\s*;\s*(?:/[*/].*)?$")
_RELEASE_VERBS = frozenset({"free", "put", "release", "destroy", "unref"})
_ACQUIRE_VERBS = frozenset({"get", "alloc", "new", "create", "dup", "grab"})
# how far below a jump its ladder may be, in lines of the image
_REACH = 400


def _retargets(hunk: Hunk) -> list[tuple[int, str, str]]:
    """(pre line, old label, new label) of each `goto A;` the hunk replaces by
    `goto B;` at the same indentation (the first added jump after the removed
    one, in the same run of changed lines)."""
    out: list[tuple[int, str, str]] = []
    lines = hunk.lines
    for i, hl in enumerate(lines):
        if hl.kind != LineKind.REMOVED or hl.source_line is None:
            continue
        old = _GOTO.match(hl.text)
        if old is None:
            continue
        for nxt in lines[i + 1 :]:
            if nxt.kind == LineKind.CONTEXT:
                break
            new = _GOTO.match(nxt.text)
            if nxt.kind == LineKind.ADDED and new is not None:
                if new.group("indent") == old.group("indent") and new.group("label") != old.group(
                    "label"
                ):
                    out.append((hl.source_line, old.group("label"), new.group("label")))
                break
    return out


def _label_lines(lines: tuple[str, ...], start: int) -> dict[str, int]:
    """Labels below line `start` (1-based) within reach, to the function's end."""
    found: dict[str, int] = {}
    for n in range(start, min(len(lines), start + _REACH)):
        text = lines[n]
        if text.startswith("}"):
            break
        m = _LABEL.match(text)
        if m is not None:
            found.setdefault(m.group("label"), n + 1)
    return found


def _release(env: Env, name: str) -> bool:
    roles = {r.role for r in env.vocab.roles_of(name)}
    if roles:
        return bool(roles & (PUT_ROLES | RELEASE_ROLES))
    sv = split_verb(name)
    return sv is not None and sv[0] in _RELEASE_VERBS


def _acquires(env: Env, text: str, objects: set[str]) -> bool:
    """The added line `text` takes or makes one of `objects` (a get, a
    constructor, by the vocabulary or by its name; given it or assigning it)."""
    assigned = re.match(r"\s*([A-Za-z_]\w*)\s*=", text)
    for m in re.finditer(r"([A-Za-z_]\w*)\s*\(([^;]*)", text):
        name = m.group(1)
        roles = {r.role for r in env.vocab.roles_of(name)}
        sv = split_verb(name)
        if not (
            roles & (GET_ROLES | {"create"})
            or (not roles and sv is not None and sv[0] in _ACQUIRE_VERBS)
        ):
            continue
        if objects & set(re.findall(r"[A-Za-z_]\w*", m.group(2))) or (
            assigned is not None and assigned.group(1) in objects
        ):
            return True
    return False


def release_on_retargeted_exit(env: Env, pre: Side, post: Side) -> list[Hit]:
    """`goto A;` becomes `goto B;` with `B:` above `A:` in the unwind ladder:
    the path now runs the releases between them, which it skipped before, and
    the patch takes none of their objects."""
    diff = pre.diff
    if diff is None:
        return []
    lines = pre.view.lines(pre.file)
    added = [hl.text for h in diff.hunks for hl in h.lines if hl.kind == LineKind.ADDED]
    hits: list[Hit] = []
    for hunk in diff.hunks:
        for line, old, new in _retargets(hunk):
            labels = _label_lines(lines, line)
            if old not in labels or new not in labels or labels[new] >= labels[old]:
                continue  # a label not shown, or the jump moved down: fewer releases
            span = range(labels[new] + 1, labels[old])
            if any(not lines[n - 1].strip() and n not in _shown(pre) for n in span):
                continue  # lines of the ladder the image does not show
            for n in span:
                m = _STATEMENT.match(lines[n - 1])
                if m is None or not _release(env, m.group("name")):
                    continue
                objects = set(re.findall(r"[A-Za-z_]\w*", m.group("args")))
                if any(_acquires(env, t, objects) for t in added):
                    continue  # the path now holds what it releases
                call = f"{m.group('name')}({m.group('args').strip()})"
                name = _function(pre, line) or function_name_from_section(hunk.section)
                hits.append(
                    Hit(
                        key=("release-on-retargeted-exit", m.group("name"), new, old),
                        line=None,
                        removed_line=line,
                        fields={
                            "function": name or f"the jump to {new}",
                            "where": f"{name}()" if name else "this function",
                            "release": call,
                            "old_label": old,
                            "new_label": new,
                        },
                        evidence=(
                            f"before: `goto {old};` at {pre.file}:{line} jumped past "
                            f"`{call}` ({pre.file}:{n})",
                            f"after: `goto {new};` runs it: `{new}:` is above it in the ladder",
                        ),
                        variant="release-on-retargeted-exit",
                    )
                )
                break
    return hits


def _function(side: Side, line: int) -> str | None:
    """The function around `line` of a whole image (a partial one shows no heads)."""
    text = side.view.text(side.file)
    if side.view.partial or text is None:
        return None
    return function_at(text, side.file, line)


def _shown(side: Side) -> frozenset[int]:
    """Lines a partial image shows (every line of a whole one)."""
    shown = side.view.shown.get(side.file) if side.view.partial else None
    if shown is None:
        return frozenset(range(1, len(side.view.lines(side.file)) + 1))
    return shown


MATCHERS["release-on-retargeted-exit"] = Matcher(
    "release-on-retargeted-exit",
    "table",
    release_on_retargeted_exit,
    release_on_retargeted_exit.__doc__ or "",
)

__all__ = ["release_on_retargeted_exit"]
