"""Operations tables a patch changes: a teardown callback unwired.

`teardown-callback-removed` (MMLC001): a designated initializer of a file-scope
table (`static const struct file_operations foo_fops = { ... }`, a
`kobj_type`, `vm_operations_struct`, `dev_pagemap_ops`...) loses the member
that tears down what the table's other callbacks set up (`.release`, `.free`,
`.put`, `.destroy`, `.close`, `.exit`...), the table stays, and the patch puts
no teardown member in its place. Whatever `.open` (or the object's setup)
allocated is then never freed: a `seq_open()` without its `seq_release()`, a
kobject without its release.

These hits come from the hunks themselves (a table is not a function), so the
same check runs with a tree and diff-only. Registered into
bot.analyze.rules_match.MATCHERS when imported; the engine runs "table"
matchers once per file diff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side, _named_release
from bot.model import LineKind

# `static const struct file_operations foo_fops = {`
_TABLE_START = re.compile(
    r"^\s*(?:static\s+)?(?:const\s+)?struct\s+(?P<type>\w+)\s+(?P<name>\w+)\s*(?:\[\w*\]\s*)?="
)
# the same in a hunk's section, which git cuts short (`...file_operations obje`)
_SECTION_START = re.compile(
    r"^\s*(?:static\s+)?(?:const\s+)?struct\s+(?P<type>\w+)\s+(?P<name>\w+)(?:\s*(?:\[\w*\]\s*)?=.*)?$"
)
# `.member =` (the value is cut out by hand: a regex over the rest of a hostile
# line of spaces backtracks quadratically)
_MEMBER_HEAD = re.compile(r"\s*\.(\w+)\s*=")
_TABLE_END = re.compile(r"^\s*\}\s*;")
# Teardown members beyond the release words of rule names
_TEARDOWN_MEMBERS = frozenset({"close"})


@dataclass
class _Table:
    type: str
    name: str
    removed: list[tuple[int, str, str]]  # (pre line, member, value)
    added: set[str]  # members set by added lines
    kept: int = 0  # member lines shown as context (the table is still there)
    ended: bool = False  # the hunk shows its end as context
    started_here: bool = False  # the start line is in the hunk
    start_removed: bool = False
    cut: bool = False  # the name comes from a hunk section and may be cut short


def _member(line: str) -> tuple[str, str] | None:
    """(member, value) of a designated-initializer line `.release = fn,`."""
    m = _MEMBER_HEAD.match(line)
    if m is None:
        return None
    value = line[m.end() :].split("/*", 1)[0].strip()
    value = value[:-1].rstrip() if value.endswith(",") else value
    if not value or "," in value or ";" in value:
        return None
    return m.group(1), value


def _teardown(member: str) -> bool:
    return member in _TEARDOWN_MEMBERS or _named_release(member)


def _tables(side: Side) -> list[_Table]:
    """The tables each hunk of the file diff shows, with the members it removes
    and adds in each."""
    diff = side.diff
    out: list[_Table] = []
    if diff is None or not diff.path.endswith((".c", ".h")):
        return out
    for hunk in diff.hunks:
        m = _SECTION_START.match(hunk.section or "")
        current = _Table(m.group("type"), m.group("name"), [], set(), cut=True) if m else None
        if current is not None:
            out.append(current)
        for hl in hunk.lines:
            start = _TABLE_START.match(hl.text)
            if start is not None and "(" not in hl.text:
                current = _Table(start.group("type"), start.group("name"), [], set())
                current.started_here = True
                current.start_removed = hl.kind is LineKind.REMOVED
                out.append(current)
                continue
            if current is None:
                continue
            if _TABLE_END.match(hl.text):
                current.ended = current.ended or hl.kind is LineKind.CONTEXT
                current = None
                continue
            member = _member(hl.text)
            if member is None:
                continue
            if hl.kind is LineKind.REMOVED and hl.source_line is not None:
                current.removed.append((hl.source_line, *member))
            elif hl.kind is LineKind.ADDED:
                current.added.add(member[0])
            else:
                current.kept += 1
    return out


def teardown_callback_removed(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A teardown member removed from a file-scope operations table that stays,
    with no teardown member added to it in its place."""
    del env
    hits: list[Hit] = []
    tables = _tables(pre)
    post_text = post.view.text(post.file) or ""
    for table in tables:
        # a name cut short in a hunk's section: completed from the file when it shows it
        full = re.search(
            rf"struct\s+{re.escape(table.type)}\s+({re.escape(table.name)}\w*)\s*(?:\[\w*\]\s*)?=",
            post_text,
        )
        if full is not None:
            table.name, table.cut = full.group(1), False
        if table.start_removed:
            continue  # the whole table goes
        if any(_teardown(a) for a in table.added):
            continue  # replaced (`.remove` -> `.remove_new`) or renamed
        still = re.search(
            rf"struct\s+{re.escape(table.type)}\s+{re.escape(table.name)}\b[^;(]*=", post_text
        )
        if still is None and not table.kept:
            continue  # the table is gone from the file (or nothing shows it stays)
        for line, member, value in table.removed:
            if not _teardown(member):
                continue
            name = f"{table.name}..." if table.cut else table.name
            hits.append(
                Hit(
                    key=("teardown-callback-removed", table.type, member),
                    line=None,
                    removed_line=line,
                    fields={
                        "function": f"struct {table.type} {name}",
                        "table": name,
                        "type": f"struct {table.type}",
                        "member": member,
                        "callback": value,
                    },
                    evidence=(
                        f"before: `.{member} = {value}` in {name} at {pre.file}:{line}",
                        f"after: {name} (struct {table.type}) has no .{member}, and the "
                        "patch sets no other teardown member in it",
                    ),
                    variant="teardown-callback-removed",
                )
            )
    return hits


MATCHERS.update(
    (m.name, m)
    for m in (
        Matcher(
            "teardown-callback-removed",
            "table",
            teardown_callback_removed,
            teardown_callback_removed.__doc__ or "",
        ),
    )
)

__all__ = ["teardown_callback_removed"]
