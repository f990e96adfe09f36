"""Fuzzy apply with GNU patch semantics on small kernel-style inputs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bot.analyze.diff import parse_diff
from bot.apply.fuzzy import apply_hunks, locate_hunks
from bot.model import Hunk

BASE = [
    "static void pool_release(struct pool *p)",
    "{",
    "\tcancel_work_sync(&p->work);",
    "\tkmem_cache_destroy(p->cache);",
    "\tkfree(p);",
    "}",
    "",
    "void pool_put(struct pool *p)",
    "{",
    "\tif (refcount_dec_and_test(&p->ref))",
    "\t\tpool_release(p);",
    "}",
    "",
    "void pool_get(struct pool *p)",
    "{",
    "\trefcount_inc(&p->ref);",
    "}",
]

# Change pool_put() to skip a NULL pool; three lines of context each side.
# (Built from a list so the blank context lines keep their one-space marker.)
PUT_DIFF = "\n".join(
    [
        "--- a/mm/pool.c",
        "+++ b/mm/pool.c",
        "@@ -7,6 +7,8 @@ static void pool_release(struct pool *p)",
        " ",
        " void pool_put(struct pool *p)",
        " {",
        "+\tif (!p)",
        "+\t\treturn;",
        " \tif (refcount_dec_and_test(&p->ref))",
        " \t\tpool_release(p);",
        " }",
        "",
    ]
)


def _hunks(diff: str = PUT_DIFF) -> tuple[Hunk, ...]:
    (fd,) = parse_diff(diff, "t")
    return fd.hunks


def _expected_put(lines: list[str]) -> list[str]:
    at = lines.index("void pool_put(struct pool *p)") + 2
    return [*lines[:at], "\tif (!p)", "\t\treturn;", *lines[at:]]


def test_exact_position_has_no_offset_or_fuzz() -> None:
    out, (p,) = apply_hunks(BASE, _hunks())
    assert (p.applied, p.offset, p.fuzz) == (True, 0, 0)
    assert out == _expected_put(BASE)


@pytest.mark.parametrize("shift", [5, -4])
def test_offsets_both_ways(shift: int) -> None:
    if shift > 0:
        lines = [f"/* line {i} */" for i in range(shift)] + BASE
        hunks = _hunks()
    else:
        lines = BASE
        hunks = _hunks(PUT_DIFF.replace("@@ -7,6 +7,8 @@", f"@@ -{7 - shift},6 +{7 - shift},8 @@"))
    out, (p,) = apply_hunks(lines, hunks)
    assert (p.applied, p.offset, p.fuzz) == (True, shift, 0)
    assert out == _expected_put(lines)


def test_fuzz_1_ignores_one_context_line_at_each_end() -> None:
    lines = list(BASE)
    lines[6] = "/* put side */"  # the hunk's first context line (blank) differs
    out, (p,) = apply_hunks(lines, _hunks())
    assert (p.applied, p.offset, p.fuzz) == (True, 0, 1)
    assert out == _expected_put(lines)
    assert out[6] == "/* put side */"  # ignored context keeps the tree's text


def test_fuzz_2_ignores_two_context_lines() -> None:
    lines = list(BASE)
    lines[6] = "/* put side */"
    lines[7] = "void pool_put(struct pool *pool)"
    out, (p,) = apply_hunks(lines, _hunks())
    assert (p.applied, p.offset, p.fuzz) == (True, 0, 2)
    assert out == [*lines[:9], "\tif (!p)", "\t\treturn;", *lines[9:]]


def test_three_changed_context_lines_are_beyond_fuzz_2() -> None:
    lines = list(BASE)
    lines[6] = "/* put side */"
    lines[7] = "void pool_put(struct pool *pool)"
    lines[8] = "{ /* brace */"
    out, (p,) = apply_hunks(lines, _hunks())
    assert not p.applied and "fuzz 2" in p.reason
    assert out == lines


def test_fuzz_limit_is_a_parameter() -> None:
    lines = list(BASE)
    lines[6] = "/* put side */"
    (p,) = locate_hunks(lines, _hunks(), max_fuzz=0)
    assert not p.applied


def test_already_applied_change_is_skipped_not_applied_twice() -> None:
    applied_once, _ = apply_hunks(BASE, _hunks())
    out, (p,) = apply_hunks(applied_once, _hunks())
    assert not p.applied and "already applied" in p.reason
    assert out == applied_once


def test_failed_hunk_does_not_stop_later_hunks() -> None:
    diff = """\
--- a/mm/pool.c
+++ b/mm/pool.c
@@ -1,4 +1,4 @@
 static void pool_release(struct pool *p)
 {
-\tcancel_work_sync(&p->work);
+\tflush_work(&p->work);
 \tkmem_cache_destroy(p->cache);
@@ -14,4 +14,5 @@ void pool_put(struct pool *p)
 void pool_get(struct pool *p)
 {
+\tWARN_ON(!refcount_read(&p->ref));
 \trefcount_inc(&p->ref);
 }
"""
    lines = list(BASE)
    lines[2] = "\tcancel_delayed_work_sync(&p->dwork);"  # hunk 1 cannot match
    lines[3] = "\tkmem_cache_destroy(p->slab);"
    out, placements = apply_hunks(lines, _hunks(diff))
    assert [p.applied for p in placements] == [False, True]
    assert "\tWARN_ON(!refcount_read(&p->ref));" in out and "\tflush_work(&p->work);" not in out


def test_new_file_hunk_inserts_into_empty_input() -> None:
    diff = "--- /dev/null\n+++ b/mm/new.c\n@@ -0,0 +1,2 @@\n+int a;\n+int b;\n"
    out, (p,) = apply_hunks([], _hunks(diff))
    assert p.applied and out == ["int a;", "int b;"]


def test_hunk_at_file_start_with_short_context_must_match_at_start() -> None:
    # Fewer leading than trailing context lines: the hunk sits at line 1.
    diff = """\
--- a/mm/pool.c
+++ b/mm/pool.c
@@ -1,3 +1,3 @@
-static void pool_release(struct pool *p)
+static void __pool_release(struct pool *p)
 {
 \tcancel_work_sync(&p->work);
"""
    out, (p,) = apply_hunks(BASE, _hunks(diff))
    assert p.applied and out[0] == "static void __pool_release(struct pool *p)"
    # Moved down one line it no longer sits at the start: as in GNU patch, only
    # fuzz 2 (which drops the trailing context) lets it move.
    moved = ["/* header */", *BASE]
    (q,) = locate_hunks(moved, _hunks(diff))
    assert (q.applied, q.offset, q.fuzz) == (True, 1, 2)
    (r,) = locate_hunks(moved, _hunks(diff), max_fuzz=1)
    assert not r.applied


@pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch not installed")
@pytest.mark.parametrize(
    "edit",
    [
        {},
        {6: "/* put side */"},
        {6: "/* put side */", 7: "void pool_put(struct pool *pool)"},
        {11: "} /* put */"},
        {6: "/* put side */", 11: "} /* put */"},
        {6: "/* put side */", 7: "void pool_put(struct pool *pool)", 8: "{ /* x */"},
    ],
)
def test_agrees_with_gnu_patch(tmp_path: Path, edit: dict[int, str]) -> None:
    lines = ["/* a */", "/* b */", *BASE]
    for i, text in edit.items():
        lines[i + 2] = text
    target = tmp_path / "mm" / "pool.c"
    target.parent.mkdir()
    target.write_text("\n".join(lines) + "\n")
    (tmp_path / "p.diff").write_text(PUT_DIFF)
    gnu = subprocess.run(
        ["patch", "-p1", "-N", "--no-backup-if-mismatch", "-r", "-", "-i", "p.diff"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    out, (p,) = apply_hunks(lines, _hunks())
    assert p.applied == (gnu.returncode == 0)
    assert "\n".join(out) + "\n" == target.read_text()
    if p.fuzz:
        assert f"with fuzz {p.fuzz}" in gnu.stdout
    if p.applied:
        assert f"(offset {p.offset} lines)" in gnu.stdout
