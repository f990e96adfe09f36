"""A free of the pointer the function holds turned into a free of a pointer
recomputed from another object (MMLC003 free-target-recomputed). Small
kernel-style code written for these tests."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.free_target import free_target_recomputed
from bot.analyze.rules_match import Env
from bot.config import Settings
from tests.fixtures.sides import diff_sides

ENV = Env(load_vocabulary(Settings().rules_dir), depth=2)

TABLE = """
static void table_free_level(struct tbl *start, struct dir *dir)
{
	int i;

	for (i = 0; i < PTRS_PER_TBL; i++)
		if (!tbl_none(start[i]))
			return;
	{free}
	dir_clear(dir);
}
"""


def _keys(before: str, after: str) -> list[tuple[str, ...]]:
    pre, post = diff_sides(TABLE.replace("{free}", before), TABLE.replace("{free}", after))
    return [h.key for h in free_target_recomputed(ENV, pre, post)]


def test_a_free_recomputed_from_another_object_is_reported() -> None:
    assert _keys(
        "tbl_free(&init_mm, start);",
        "tbl_free(&init_mm, (struct tbl *)page_to_virt(dir_page(*dir)));",
    ) == [("free-target-recomputed", "tbl_free", "start")]
    assert _keys("kfree(start);", "kfree(page_to_virt(dir_page(*dir)));") == [
        ("free-target-recomputed", "kfree", "start")
    ]


def test_the_fix_direction_and_same_pointer_rewrites_are_quiet() -> None:
    # the fix: the recomputed pointer replaced by the one the function holds
    assert (
        _keys("tbl_free(&init_mm, page_to_virt(dir_page(*dir)));", "tbl_free(&init_mm, start);")
        == []
    )
    # still computed from the held pointer
    assert _keys("kfree(start);", "kfree(container_of(start, struct tbl, head));") == []
    # another argument changed, not the freed object
    assert _keys("tbl_free(&init_mm, start);", "tbl_free(current_mm(dir), start);") == []
    # not a release
    assert _keys("tbl_flush(start);", "tbl_flush(page_to_virt(dir_page(*dir)));") == []
