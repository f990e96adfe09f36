"""A get or a release a patch takes out of the condition that guarded it
(MMLC002 `get-now-unconditional`, `release-now-unconditional`). Small
kernel-style code written for these tests, run through the real flow builder
and matcher."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.hoisted import step_now_unconditional
from bot.analyze.rules_match import Env, Hit
from bot.config import Settings
from tests.fixtures.sides import diff_sides as _sides

VOCAB = load_vocabulary(Settings().rules_dir)
ENV = Env(VOCAB, depth=2)
PATH = "mm/t.c"


def _variants(hits: list[Hit]) -> list[str]:
    return [h.variant for h in hits]


SPLIT = """
static void gizmo_split_entry(struct gizmo_entry *e, bool is_swap)
{
	struct page *page = NULL;

	if (is_swap) {
		gizmo_swap_entry(e);
	} else {
		page = gizmo_entry_page(e);
		page_ref_add(page, GIZMO_NR - 1);
	}
	gizmo_install(e, page);
}
"""

SPLIT_HOISTED = """
static void gizmo_split_entry(struct gizmo_entry *e, bool is_swap)
{
	struct page *page = NULL;

	if (is_swap) {
		gizmo_swap_entry(e);
	} else {
		page = gizmo_entry_page(e);
	}
	page_ref_add(page, GIZMO_NR - 1);
	gizmo_install(e, page);
}
"""


def test_a_get_moved_out_of_its_branch_is_reported() -> None:
    pre, post = _sides(SPLIT, SPLIT_HOISTED)
    hits = step_now_unconditional(ENV, pre, post)
    assert _variants(hits) == ["get-now-unconditional"]
    assert "is_swap" in hits[0].fields["condition"]
    # moved back under the branch: nothing to say
    assert step_now_unconditional(ENV, post, pre) == []


FREE = """
static void gizmo_slab_free(struct gizmo_cache *s, void *head, void *tail)
{
	/* the bulk path ran the hook already */
	if (!tail)
		gizmo_charge_free_hook(s, head);
	gizmo_do_free(s, head, tail);
}
"""


def test_a_release_hook_made_unconditional_is_reported() -> None:
    post_text = FREE.replace("\tif (!tail)\n\t\tgizmo_charge_free_hook", "\tgizmo_charge_free_hook")
    pre, post = _sides(FREE, post_text)
    hits = step_now_unconditional(ENV, pre, post)
    assert _variants(hits) == ["release-now-unconditional"]
    assert hits[0].fields["condition"] == "`!tail`"


NULL_SAFE = """
static void gizmo_teardown(struct gizmo *g)
{
	if (g->stats)
		kfree(g->stats);
	gizmo_unlink(g);
}
"""

OUTCOME = """
static int gizmo_attach(struct gizmo *g)
{
	int err = gizmo_register(g);

	if (err)
		gizmo_put(g);
	return err;
}
"""

FLAG = """
static void gizmo_finish(struct gizmo *g, struct page *page)
{
	bool got = false;

	if (gizmo_wants(g))
		got = gizmo_take(g, page);
	if (got)
		put_page(page);
}
"""


def test_null_tests_outcomes_and_flags_are_not_reported() -> None:
    # `if (p) kfree(p)` -> `kfree(p)`: kfree() takes NULL, a cleanup
    pre, post = _sides(NULL_SAFE, NULL_SAFE.replace("\tif (g->stats)\n\t\tkfree", "\tkfree"))
    assert step_now_unconditional(ENV, pre, post) == []
    # a release on failure only is how ownership passes on success
    pre, post = _sides(OUTCOME, OUTCOME.replace("\tif (err)\n\t\tgizmo_put", "\tgizmo_put"))
    assert step_now_unconditional(ENV, pre, post) == []
    # a flag the function keeps tracks whether the step is owed
    pre, post = _sides(FLAG, FLAG.replace("\tif (got)\n\t\tput_page", "\tput_page"))
    assert step_now_unconditional(ENV, pre, post) == []


MERGED = """
static void gizmo_drop(struct gizmo *g, bool many)
{
	if (many)
		gizmo_put_many(g, 2);
	else
		gizmo_put(g);
}
"""


def test_two_branches_merged_into_one_step_are_not_reported() -> None:
    post_text = """
static void gizmo_drop(struct gizmo *g, bool many)
{
	gizmo_put(g);
}
"""
    pre, post = _sides(MERGED, post_text)
    assert step_now_unconditional(ENV, pre, post) == []


def test_a_release_freed_from_a_global_switch_is_the_fix_not_a_double() -> None:
    switched = """
static void gizmo_unaccount(struct gizmo_slab *slab)
{
	if (gizmo_stats_online() || need_gizmo_exts())
		free_gizmo_exts(slab);
	gizmo_mod_pages(slab);
}
"""
    post_text = switched.replace(
        "\tif (gizmo_stats_online() || need_gizmo_exts())\n\t\tfree_gizmo_exts", "\tfree_gizmo_exts"
    )
    pre, post = _sides(switched, post_text)
    assert step_now_unconditional(ENV, pre, post) == []
    # the same step under a test of this path's own state is reported
    own = switched.replace("gizmo_stats_online() || need_gizmo_exts()", "!bulk").replace(
        "*slab)", "*slab, bool bulk)"
    )
    pre, post = _sides(own, own.replace("\tif (!bulk)\n\t\tfree_gizmo_exts", "\tfree_gizmo_exts"))
    assert _variants(step_now_unconditional(ENV, pre, post)) == ["release-now-unconditional"]


POISON = """
static int gizmo_poison_free(struct page *p)
{
	int res;

	if (gizmo_take_off_free_list(p) > 0) {
		page_ref_inc(p);
		res = GIZMO_RECOVERED;
	} else {
		res = GIZMO_FAILED;
	}
	return res;
}
"""


def test_a_get_under_a_widened_comparison_is_reported() -> None:
    from bot.analyze.hoisted import step_guard_widened

    pre, post = _sides(POISON, POISON.replace("(p) > 0)", "(p) >= 0)"))
    hits = step_guard_widened(ENV, pre, post)
    assert _variants(hits) == ["get-guard-widened"]
    assert hits[0].fields["old_condition"] == "`gizmo_take_off_free_list(p) > 0`"
    # narrowed back: the fix, nothing to say
    assert step_guard_widened(ENV, post, pre) == []
    # another operand is another test, not a widening
    pre, post = _sides(POISON, POISON.replace("(p) > 0)", "(p) >= 1)"))
    assert step_guard_widened(ENV, pre, post) == []
