"""A local flag that decides the exit's cleanup, no longer set on one of the
paths that set it (MMLC007 cleanup-flag-unset). Small kernel-style code
written for these tests."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.flag_paths import cleanup_flag_unset
from bot.analyze.rules_match import Env
from bot.config import Settings
from tests.fixtures.sides import diff_sides

ENV = Env(load_vocabulary(Settings().rules_dir), depth=2)

COPY = """
int slot_fill(struct pool *pool, struct slot *slot, bool cont)
{
	bool {flag} = false;
	int ret;

	if (cont) {
		ret = slot_lookup(pool, slot);
		if (ret)
			goto out;
		{first}
	} else {
		ret = slot_insert(pool, slot);
		if (ret)
			goto out;
		{flag} = true;
	}
	ret = 0;
out:
	if (!{flag})
		restore_reservation(pool, slot);
	return ret;
}
"""


def _text(flag: str, first: str) -> str:
    return COPY.replace("{first}", first).replace("{flag}", flag)


def test_a_flag_no_longer_set_on_one_path_is_reported() -> None:
    pre, post = diff_sides(_text("owned", "owned = true;"), _text("owned", ""))
    assert [h.key for h in cleanup_flag_unset(ENV, pre, post)] == [
        ("cleanup-flag-unset", "restore_reservation", "owned")
    ]


def test_a_renamed_flag_is_followed_through_the_exit() -> None:
    pre, post = diff_sides(_text("owned", "owned = true;"), _text("inserted", ""))
    hits = cleanup_flag_unset(ENV, pre, post)
    assert [h.key for h in hits] == [("cleanup-flag-unset", "restore_reservation", "owned")]
    assert hits[0].fields["flag"] == "owned (now inserted)"


def test_the_fix_direction_and_a_moved_assignment_are_quiet() -> None:
    pre, post = diff_sides(_text("inserted", ""), _text("owned", "owned = true;"))
    assert cleanup_flag_unset(ENV, pre, post) == []
    # the assignment moved up its branch, still made as often
    moved = _text("owned", "").replace(
        "ret = slot_lookup(pool, slot);\n", "ret = slot_lookup(pool, slot);\n\t\towned = true;\n"
    )
    pre, post = diff_sides(_text("owned", "owned = true;"), moved)
    assert cleanup_flag_unset(ENV, pre, post) == []
