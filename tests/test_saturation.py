"""A reference the caller now takes itself instead of through a helper that
took it only under a count limit (MMLC002 get-limit-dropped). Small
kernel-style code written for these tests."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.rules_match import Env
from bot.analyze.saturation import get_limit_dropped
from bot.config import Settings
from tests.fixtures.sides import diff_sides

ENV = Env(load_vocabulary(Settings().rules_dir), depth=2)

HELPER = """
static struct tag *tag_reuse(struct tag *tag)
{
	if ({limit}) {
		tag_get(tag);
		return tag;
	}
	return tag_alloc(tag->name);
}
"""

THROUGH_HELPER = """
static void tag_copy(struct item *to, struct tag *tag)
{
	if (tag)
		to->tag = tag_reuse(tag);
}
"""

DIRECT = """
static void tag_copy(struct item *to, struct tag *tag)
{
	if (tag) {
		tag_get(tag);
		to->tag = tag;
	}
}
"""


def _keys(limit: str, after: str = DIRECT) -> list[tuple[str, ...]]:
    helper = HELPER.replace("{limit}", limit)
    pre, post = diff_sides(helper + THROUGH_HELPER, after, name="tag_copy")
    return [h.key for h in get_limit_dropped(ENV, pre, post)]


def test_a_get_taken_without_the_helpers_count_limit_is_reported() -> None:
    assert _keys("kref_read(&tag->kref) < REFCOUNT_MAX") == [
        ("get-limit-dropped", "tag_get", "tag")
    ]
    assert _keys("refcount_read(&tag->ref) <= TAG_MAX_USERS") == [
        ("get-limit-dropped", "tag_get", "tag")
    ]


def test_a_helper_whose_test_is_no_count_limit_is_quiet() -> None:
    assert _keys("tag->shared") == []
    assert _keys("kref_read(&tag->kref)") == []  # a count read, but no limit


def test_the_fix_direction_is_quiet() -> None:
    helper = HELPER.replace("{limit}", "kref_read(&tag->kref) < REFCOUNT_MAX")
    pre, post = diff_sides(DIRECT, helper + THROUGH_HELPER, name="tag_copy")
    assert get_limit_dropped(ENV, pre, post) == []
