"""Operations tables a patch changes: a teardown member removed from a table that
stays (MMLC001 `teardown-callback-removed`). Small kernel-style patches written for
these tests, reviewed diff-only through the real pipeline."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from bot.model import Finding, Status
from bot.pipeline import review_inputs

SETTINGS = Settings(simulate=False)

HEAD = """From: Example Dev <dev@example.org>
Subject: [PATCH] mm/gizmo: {subject}

---
 mm/gizmo_debug.c | 2 +-
 1 file changed

diff --git a/mm/gizmo_debug.c b/mm/gizmo_debug.c
--- a/mm/gizmo_debug.c
+++ b/mm/gizmo_debug.c
"""


def _patch(
    body: list[str], section: str = "static int gizmo_stats_open(struct inode *inode)"
) -> str:
    old = sum(1 for ln in body if ln[:1] in " -")
    new = sum(1 for ln in body if ln[:1] in " +")
    return (
        HEAD.format(subject="tables")
        + f"@@ -60,{old} +60,{new} @@ {section}\n"
        + "\n".join(body)
        + "\n"
    )


def _review(tmp_path: Path, text: str) -> list[Finding]:
    path = tmp_path / "t.patch"
    path.write_text(text, encoding="utf-8")
    review = review_inputs([str(path)], SETTINGS)
    return [f for f in review.findings if f.status is Status.INTRODUCED]


TABLE = [
    " ",
    " static const struct file_operations gizmo_stats_fops = {",
    " \t.open = gizmo_stats_open,",
    " \t.read = seq_read,",
    "-\t.release = seq_release,",
    " };",
    " ",
]


def test_a_release_member_removed_from_a_table_that_stays_is_reported(tmp_path: Path) -> None:
    found = _review(tmp_path, _patch(TABLE))
    assert [(f.rule_id, f.function) for f in found] == [
        ("MMLC001", "struct file_operations gizmo_stats_fops")
    ]
    assert ".release = seq_release" in found[0].message


def test_a_teardown_member_replaced_or_a_plain_member_removed_is_quiet(tmp_path: Path) -> None:
    replaced = [*TABLE[:5], "+\t.release = single_release,", *TABLE[5:]]
    assert _review(tmp_path, _patch(replaced)) == []
    plain = [ln.replace("-\t.release = seq_release,", "-\t.llseek = seq_lseek,") for ln in TABLE]
    assert _review(tmp_path, _patch(plain)) == []


def test_a_table_removed_whole_is_not_a_lost_teardown(tmp_path: Path) -> None:
    gone = [ln if not ln.startswith(" ") or ln == " " else "-" + ln[1:] for ln in TABLE]
    assert _review(tmp_path, _patch(gone)) == []


def test_a_table_named_only_by_a_cut_hunk_section_is_still_found(tmp_path: Path) -> None:
    # git cuts the section after 80 columns: `...file_operations gizmo_st`
    body = [ln for ln in TABLE if "struct file_operations" not in ln]
    found = _review(tmp_path, _patch(body, section="static const struct file_operations gizmo_st"))
    assert [f.function for f in found] == ["struct file_operations gizmo_st..."]


def test_hostile_initializer_lines_are_read_in_one_pass(tmp_path: Path) -> None:
    # long runs of spaces where a member's value or a table's name ends: read
    # by hand, not by a backtracking regex (the review must still come back)
    wide = " " * 20000
    body = [
        " ",
        f" static const struct file_operations gizmo_stats_fops{wide}= {{",
        f" \t.open = gizmo_stats_open{wide}x",
        "-\t.release = seq_release,",
        f"-\t.flush = {wide};",
        " };",
        " ",
    ]
    found = _review(tmp_path, _patch(body))
    assert [f.function for f in found] == ["struct file_operations gizmo_stats_fops"]
