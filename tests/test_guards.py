"""Conditions and ordering a patch changes around an object's life: a release made
conditional, a state check removed or demoted to a warning, a re-check under a
lock dropped, a reset removed from a release path, a write barrier removed before
a page-table entry is installed. Small kernel-style code written for these tests,
run through the real flow builder and matchers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.analyze.api import load_vocabulary
from bot.analyze.flow_source import SourceView
from bot.analyze.guards import (
    release_now_conditional,
    reset_removed_from_release,
    state_check_removed,
)
from bot.analyze.ordering import barrier_removed_before_publish
from bot.analyze.rules_match import MATCHER_MODULES, Env, Hit, Side, member_declarations
from bot.config import Settings
from tests.fixtures.sides import diff_sides as _sides

VOCAB = load_vocabulary(Settings().rules_dir)
ENV = Env(VOCAB, depth=2)
PATH = "mm/t.c"


def _variants(hits: list[Hit]) -> list[str]:
    return [h.variant for h in hits]


# ---------------------------------------------------------------- release-now-conditional

UNACCOUNT = """
static void pool_unaccount(struct pool_slab *slab, int order)
{
	free_pool_stats(slab);
	pool_mod_pages(slab, -(1 << order));
}
"""


def test_a_release_put_under_a_feature_switch_is_reported() -> None:
    pre, post = _sides(
        UNACCOUNT,
        UNACCOUNT.replace(
            "\tfree_pool_stats(slab);", "\tif (pool_stats_enabled())\n\t\tfree_pool_stats(slab);"
        ),
    )
    hits = release_now_conditional(ENV, pre, post)
    assert _variants(hits) == ["release-now-conditional"]
    assert hits[0].fields["condition"] == "pool_stats_enabled()"
    # the other direction makes it unconditional again: nothing to say
    assert release_now_conditional(ENV, post, pre) == []


def test_a_null_test_of_the_object_or_a_release_on_failure_is_not_a_condition() -> None:
    for cond in ("slab", "slab->stats", "err", "IS_ERR(slab)"):
        pre, post = _sides(
            UNACCOUNT,
            UNACCOUNT.replace(
                "\tfree_pool_stats(slab);", f"\tif ({cond})\n\t\tfree_pool_stats(slab);"
            ),
        )
        assert release_now_conditional(ENV, pre, post) == [], cond


def test_a_release_under_a_flag_the_function_keeps_is_its_own_bookkeeping() -> None:
    # `got = pool_try_grab(slab)` ... `if (got) free_pool_stats(slab)`: the flag
    # says whether this function holds what it releases
    body = UNACCOUNT.replace("{\n", "{\n\tbool got = pool_try_grab(slab);\n\n", 1)
    pre, post = _sides(
        body, body.replace("\tfree_pool_stats(slab);", "\tif (got)\n\t\tfree_pool_stats(slab);")
    )
    assert release_now_conditional(ENV, pre, post) == []


def test_a_release_under_a_member_the_series_adds_is_an_opt_in_mode() -> None:
    # `if (!pool->keep_on_error)`: the series adds `bool keep_on_error;` to the
    # struct; every object that never sets it is released as before
    cond = "!pool->keep_on_error"
    pre, post = _sides(
        UNACCOUNT,
        UNACCOUNT.replace("\tfree_pool_stats(slab);", f"\tif ({cond})\n\t\tfree_pool_stats(slab);"),
    )
    assert _variants(release_now_conditional(ENV, pre, post)) == ["release-now-conditional"]
    members = member_declarations(["\tbool keep_on_error;", "\treturn err;", "\tint x = 1;"])
    assert members == frozenset({"keep_on_error"})
    env = Env(VOCAB, depth=2, members_added=members)
    assert release_now_conditional(env, pre, post) == []


def test_member_declarations_reads_declarations_not_statements() -> None:
    lines = [
        "\tstruct list_head list;",
        "\tunsigned long flags : 4;",
        "\tconst struct pool_ops *ops;",
        "\tchar name[16]; /* shown in sysfs */",
        "\tgoto out;",
        "\tbreak;",
        "\tfoo(bar);",
        "\tx = y;",
        "int global;",  # file scope: not indented, not a member
    ]
    assert member_declarations(lines) == frozenset({"list", "flags", "ops", "name"})


def test_a_release_on_one_branch_and_a_hand_off_on_the_other_is_not_a_leak() -> None:
    pre, post = _sides(
        UNACCOUNT,
        UNACCOUNT.replace(
            "\tfree_pool_stats(slab);",
            "\tif (pool_stats_enabled())\n\t\tfree_pool_stats(slab);\n"
            "\telse\n\t\tlist_add(&slab->node, &pool_orphans);",
        ),
    )
    assert release_now_conditional(ENV, pre, post) == []


# ---------------------------------------------------------------- state-check-removed

SCAN = """
static int pool_scan_mm(struct mm_struct *mm)
{
	struct vm_area_struct *vma;
	int ret = 0;

	mmap_read_lock(mm);
	if (check_stable_address_space(mm))
		goto unlock;
	for_each_pool_vma(mm, vma)
		ret |= pool_scan_vma(vma);
unlock:
	mmap_read_unlock(mm);
	return ret;
}
"""


def test_a_liveness_test_removed_before_a_walk_is_reported() -> None:
    pre, post = _sides(
        SCAN, SCAN.replace("\tif (check_stable_address_space(mm))\n\t\tgoto unlock;\n", "")
    )
    hits = state_check_removed(ENV, pre, post)
    assert _variants(hits) == ["liveness-check-removed"]
    assert hits[0].fields["object"] == "mm"


def test_a_liveness_test_rewritten_into_another_exit_is_not_a_removal() -> None:
    pre, post = _sides(
        SCAN, SCAN.replace("if (check_stable_address_space(mm))", "if (pool_mm_unsafe(mm))")
    )
    assert state_check_removed(ENV, pre, post) == []


def test_a_removed_check_that_is_not_a_liveness_test_is_not_reported() -> None:
    pre, post = _sides(
        SCAN.replace("check_stable_address_space(mm)", "pool_mm_empty(mm)"),
        SCAN.replace("\tif (check_stable_address_space(mm))\n\t\tgoto unlock;\n", ""),
    )
    assert state_check_removed(ENV, pre, post) == []


MOVE = """
void pool_move_mm(struct mm_struct *mm, struct pool_group *to)
{
	if (!mm->pool.group)
		return;

	if (mm->pool.group == to)
		return;

	pool_del_mm(mm);
	mm->pool.group = to;
	pool_add_mm(mm);
}
"""


def test_an_early_return_turned_into_a_warning_is_reported() -> None:
    post = MOVE.replace("\tif (!mm->pool.group)\n\t\treturn;\n\n", "").replace(
        "\tpool_del_mm(mm);", "\tVM_WARN_ON_ONCE(!mm->pool.group);\n\tpool_del_mm(mm);"
    )
    pre, post_side = _sides(MOVE, post)
    hits = state_check_removed(ENV, pre, post_side)
    assert _variants(hits) == ["exit-demoted-to-warning"]
    # a warning on another condition is no demotion
    other = post.replace("VM_WARN_ON_ONCE(!mm->pool.group)", "VM_WARN_ON_ONCE(!to)")
    assert state_check_removed(ENV, *_sides(MOVE, other)) == []


RETRACT = """
static int pool_retract(struct pool_area *area)
{
	int result = POOL_BUSY;

	if (READ_ONCE(area->owner))
		return POOL_OWNED;
	if (pool_write_trylock(area->space)) {
		if (area->owner) {
			result = POOL_OWNED;
			goto unlock;
		}
		pool_free_table(area);
		result = POOL_DONE;
unlock:
		pool_write_unlock(area->space);
	}
	return result;
}
"""


def test_a_recheck_under_the_lock_removed_is_reported() -> None:
    post = RETRACT.replace(
        "\t\tif (area->owner) {\n\t\t\tresult = POOL_OWNED;\n\t\t\tgoto unlock;\n\t\t}\n", ""
    )
    hits = state_check_removed(ENV, *_sides(RETRACT, post))
    assert _variants(hits) == ["recheck-under-lock-removed"]
    # without the unlocked test before the lock, it is a plain check removal
    # (not a liveness test): nothing to say
    bare = RETRACT.replace("\tif (READ_ONCE(area->owner))\n\t\treturn POOL_OWNED;\n", "")
    bare_post = post.replace("\tif (READ_ONCE(area->owner))\n\t\treturn POOL_OWNED;\n", "")
    assert state_check_removed(ENV, *_sides(bare, bare_post)) == []


# ---------------------------------------------------------------- reset-removed-from-release

PREPARE = """
static bool pool_free_prepare(struct page *page, unsigned int order)
{
	if (pool_page_busy(page))
		return false;
	page->flags &= ~POOL_CHECK_FLAGS;
	page->private = 0;
	pool_reset_owner(page, order);
	return true;
}
"""


def test_a_reset_removed_from_a_free_path_is_reported() -> None:
    pre, post = _sides(PREPARE, PREPARE.replace("\tpage->private = 0;\n", ""))
    hits = reset_removed_from_release(ENV, pre, post)
    assert _variants(hits) == ["reset-removed-from-release"]
    assert hits[0].fields["field"] == "page->private"


def test_a_reset_before_the_free_of_the_object_or_outside_a_release_path_is_moot() -> None:
    freed = PREPARE.replace("\tpool_reset_owner(page, order);", "\tkfree(page);")
    assert (
        reset_removed_from_release(ENV, *_sides(freed, freed.replace("\tpage->private = 0;\n", "")))
        == []
    )
    named = PREPARE.replace("pool_free_prepare", "pool_scan_prepare")
    assert (
        reset_removed_from_release(ENV, *_sides(named, named.replace("\tpage->private = 0;\n", "")))
        == []
    )


# ---------------------------------------------------------------- barrier-removed

REMAP = """
static void pool_remap_pte(pte_t *pte, unsigned long addr, struct pool_walk *walk)
{
	struct page *page = pool_next_page(walk);

	copy_page(page_to_virt(page), walk->from);
	smp_wmb();
	set_pte_at(&init_mm, addr, pte, mk_pte(page, PAGE_KERNEL));
}
"""


def test_a_write_barrier_removed_before_a_pte_is_installed_is_reported() -> None:
    pre, post = _sides(REMAP, REMAP.replace("\tsmp_wmb();\n", ""))
    hits = barrier_removed_before_publish(ENV, pre, post)
    assert _variants(hits) == ["barrier-removed"]
    # a barrier replaced by a stronger one still orders the stores
    stronger = REMAP.replace("\tsmp_wmb();", "\tsmp_mb();")
    assert barrier_removed_before_publish(ENV, *_sides(REMAP, stronger)) == []


UNREGISTER = """
void pool_unregister(struct pool_dev *pd)
{
	pool_shutdown(&pd->wb);
	if (pd->min_ratio)
		pool_set_min_ratio(pd, 0);
	if (pd->dev)
		device_unregister(pd->dev);
}
"""


def test_a_setter_reset_removed_from_an_unregister_path_is_reported() -> None:
    post = UNREGISTER.replace("\tif (pd->min_ratio)\n\t\tpool_set_min_ratio(pd, 0);\n", "")
    hits = reset_removed_from_release(ENV, *_sides(UNREGISTER, post))
    assert _variants(hits) == ["reset-removed-from-release"]
    assert "pool_set_min_ratio(pd, 0)" in hits[0].fields["field"]
    # a setter to a value that is not a reset is not a reset
    other = UNREGISTER.replace("pool_set_min_ratio(pd, 0)", "pool_set_min_ratio(pd, 5)")
    assert reset_removed_from_release(ENV, *_sides(other, post)) == []


@pytest.mark.parametrize("module", ["rules_match", *MATCHER_MODULES])
def test_every_matcher_module_can_be_imported_first(module: str) -> None:
    # the matcher modules import rules_match, which imports them all: whichever
    # a caller imports first, the cycle must resolve (a fresh interpreter each)
    done = subprocess.run(
        [sys.executable, "-c", f"import bot.analyze.{module}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-400:]


def test_a_lock_call_the_patch_adds_in_the_file_is_the_same_protection_moved() -> None:
    from bot.analyze.locking import _added_line_takes

    text = "void f(struct zone *zone)\n{\n\tdo {\n\t\tspin_lock_irqsave(&zone->lock, flags);\n"
    view = SourceView({PATH: text}, None)
    moved = Side(None, view, PATH, frozenset({4}))
    assert _added_line_takes(ENV, moved, "zone->lock")
    assert not _added_line_takes(ENV, moved, "zone->lru_lock")  # another lock
    assert not _added_line_takes(ENV, Side(None, view, PATH, frozenset({3})), "zone->lock")


# ---------------------------------------------------------------- barrier-removed-before-wakeup

WAKER = """
static void pool_dec_busy(struct gizmo_pool *pool)
{
	atomic_long_dec(&pool->busy);
	/* pairs with the smp_mb() in pool_drain() */
	smp_mb__after_atomic();
	if (atomic_long_read(&pool->busy) == 0 && pool->draining)
		wake_up_all(&pool->drain_wait);
}
"""


def test_a_barrier_removed_between_a_count_drop_and_its_wakeup_test_is_reported() -> None:
    from bot.analyze.ordering import barrier_removed_before_wakeup

    pre, post = _sides(WAKER, WAKER.replace("\tsmp_mb__after_atomic();\n", ""))
    hits = barrier_removed_before_wakeup(ENV, pre, post)
    assert _variants(hits) == ["barrier-removed-before-wakeup"]
    assert hits[0].fields["wake"] == "wake_up_all(&pool->drain_wait)"
    assert barrier_removed_before_wakeup(ENV, post, pre) == []


def test_a_barrier_removed_with_no_wakeup_after_it_or_a_new_test_is_not_reported() -> None:
    from bot.analyze.ordering import barrier_removed_before_wakeup

    # a barrier after a flag set, before a plain check: no waker (redundant ones go so)
    no_wake = """
static void gizmo_add(struct gizmo *g)
{
	gizmo_set_lru(g);
	smp_mb__after_atomic();
	if (gizmo_evictable(g))
		gizmo_count(g);
}
"""
    pre, post = _sides(no_wake, no_wake.replace("\tsmp_mb__after_atomic();\n", ""))
    assert barrier_removed_before_wakeup(ENV, pre, post) == []
    # the test changed with it (a lock now decides): a new scheme
    locked = WAKER.replace("\tsmp_mb__after_atomic();\n", "").replace(
        "pool->draining)", "pool_draining_locked(pool))"
    )
    pre, post = _sides(WAKER, locked)
    assert barrier_removed_before_wakeup(ENV, pre, post) == []
