"""A lock's protection of state: a state bit or counter of the locked object
(or of the object its lock was derived from) changed after the unlock instead
of before it. Small kernel-style code written for these tests."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.flow_build import flows_in_text
from bot.analyze.flow_source import SourceView
from bot.analyze.lock_sections import access_moved_out_of_lock
from bot.analyze.rules_match import Env, Side
from bot.config import Settings

ENV = Env(load_vocabulary(Settings().rules_dir), depth=2)
VIEW = SourceView({}, None)


def _sides(pre: str, post: str) -> tuple[Side, Side]:
    (a,) = flows_in_text(pre, "mm/t.c")
    (b,) = flows_in_text(post, "mm/t.c")
    return Side(a, VIEW, "mm/t.c"), Side(b, VIEW, "mm/t.c")


_CLAIM = """
int shrink_one(struct pool *pool, struct page *page)
{
	struct hdr *hdr = page_address(page);

	if (test_bit(PAGE_IDLE, &page->private)) {
		clear_bit(PAGE_CLAIMED, &page->private);
		return 0;
	}
	hdr_lock(hdr);
	if (list_empty(&hdr->buddy))
		add_to_list(pool, hdr);
	{order}
	return 0;
}
"""


def test_a_state_bit_of_the_locked_object_changed_after_unlock_is_reported() -> None:
    """The bit other holders test under the lock, now cleared after dropping it;
    another occurrence of the same text elsewhere in the function does not hide it."""
    under = "clear_bit(PAGE_CLAIMED, &page->private);\n\thdr_unlock(hdr);"
    after = "hdr_unlock(hdr);\n\tclear_bit(PAGE_CLAIMED, &page->private);"
    pre, post = _sides(_CLAIM.replace("{order}", under), _CLAIM.replace("{order}", after))
    hits = access_moved_out_of_lock(ENV, pre, post)
    assert [h.key for h in hits] == [
        ("access-moved-out-of-lock", "hdr", "clear_bit(PAGE_CLAIMED,&page->private)")
    ]
    assert access_moved_out_of_lock(ENV, post, pre) == []


def test_a_wakeup_or_a_state_change_of_an_unrelated_object_after_unlock_is_quiet() -> None:
    for moved in ("wake_up_all(&pool->wait);", "set_bit(POOL_DIRTY, &pool->flags);"):
        under = f"{moved}\n\thdr_unlock(hdr);"
        after = f"hdr_unlock(hdr);\n\t{moved}"
        pre, post = _sides(_CLAIM.replace("{order}", under), _CLAIM.replace("{order}", after))
        assert access_moved_out_of_lock(ENV, pre, post) == [], moved


_WALK = """
static void walk_pages(struct zone_set *set)
{
	struct page *page;

	{take}
	page = first_page(set);
	while (page) {
		{page_lock}
		page = next_page(page);
	}
	{drop}
}
"""


def _walk(take: str, page_lock: str, drop: str) -> str:
    return _WALK.replace("{take}", take).replace("{page_lock}", page_lock).replace("{drop}", drop)


def test_a_lock_wrapper_removed_is_protection_removed() -> None:
    from bot.analyze.locking import protection_removed

    pre, post = _sides(
        _walk("set_read_lock(set);", "trylock_page(page);", "set_read_unlock(set);"),
        _walk("", "lock_page(page);", ""),
    )
    assert [h.key for h in protection_removed(ENV, pre, post)] == [("protection-removed", "set")]


def test_the_same_object_locked_another_way_is_a_new_scheme() -> None:
    from bot.analyze.locking import protection_removed

    pre, post = _sides(
        _walk("spin_lock(&set->lock);", "", "spin_unlock(&set->lock);"),
        _walk("set_lock(set);", "", "set_unlock(set);"),
    )
    assert protection_removed(ENV, pre, post) == []
    # initialising a lock takes none
    pre, post = _sides(_walk("set_lock_init(set);", "", ""), _walk("", "", ""))
    assert protection_removed(ENV, pre, post) == []


def test_a_wrapper_section_removed_with_its_work_is_quiet() -> None:
    """The lock's line is its lock call, not the first call that names the
    object: the section (lock, work, unlock) went whole."""
    from bot.analyze.locking import protection_removed

    body = """
static void copy_one(struct page *old_page, bool locked)
{
	copy_data(old_page);
	flush_copy(old_page);
{section}	finish_copy(old_page);
}
"""
    section = (
        "\tif (locked) {\n\t\tlock_page(old_page);\n\t\tdrop_mlock(old_page);\n"
        "\t\tunlock_page(old_page);\n\t}\n"
    )
    pre, post = _sides(body.replace("{section}", section), body.replace("{section}", ""))
    assert protection_removed(ENV, pre, post) == []


def test_a_lock_moved_to_a_helper_on_a_derived_object_is_quiet() -> None:
    from bot.analyze.flow import Call
    from bot.analyze.locking import protection_removed

    body = "\nvoid drop_one(struct page *page)\n{{\n{take}\tpage_clear(page);\n{drop}}}\n"
    pre, post = _sides(
        body.format(take="\tpage_memcg_lock(page);\n", drop="\tpage_memcg_unlock(page);\n"),
        body.format(take="", drop=""),
    )
    assert [h.key for h in protection_removed(ENV, pre, post)] == [("protection-removed", "page")]
    relock = Call(name="lruvec_relock_irq", args=("page_folio(page)", "lruvec"), line=9, text="")
    moved = Env(ENV.vocab, depth=2, added=(("__drop_batch", relock),))
    assert protection_removed(moved, pre, post) == []
