"""A state bit that says an object is going away, inferred from the function
that sets it and then drops the object; a lookup that stops testing it still
hands the object out (MMLC009 liveness-check-removed). Small kernel-style code
written for these tests."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.guards import state_check_removed
from bot.analyze.rules_match import Env, Side
from bot.config import Settings
from tests.fixtures.sides import diff_sides

ENV = Env(load_vocabulary(Settings().rules_dir), depth=2)

LOOKUP_PRE = """
static struct hdr *hdr_find(unsigned long handle)
{
	struct hdr *hdr;

	do {
		hdr = handle_to_hdr(handle);
		if (hdr_trylock(hdr)) {
			struct page *page = virt_to_page(hdr);

			if (!test_bit(PAGE_MOVED, &page->private))
				break;
			hdr_unlock(hdr);
		}
		cpu_relax();
	} while (true);
	return hdr;
}
"""

LOOKUP_POST = """
static struct hdr *hdr_find(unsigned long handle)
{
	struct hdr *hdr;

	do {
		hdr = handle_to_hdr(handle);
		if (hdr_trylock(hdr))
			break;
		cpu_relax();
	} while (true);
	return hdr;
}
"""

MOVE = """
static int hdr_move(struct page *newpage, struct page *page)
{
	struct hdr *hdr = page_address(page);

	copy_hdr(newpage, hdr);
	{mark}
	hdr_unlock(hdr);
	{drop}
	return 0;
}
"""


def _sides(pre_text: str, post_text: str) -> tuple[Side, Side]:
    return diff_sides(pre_text, post_text, name="hdr_find")


def _review(move_pre: str, move_post: str) -> list[tuple[str, ...]]:
    pre, post = _sides(LOOKUP_PRE + move_pre, LOOKUP_POST + move_post)
    return [h.key for h in state_check_removed(ENV, pre, post)]


def test_a_mark_set_before_the_object_is_dropped_is_a_liveness_test() -> None:
    marked = MOVE.replace("{mark}", "set_bit(PAGE_MOVED, &page->private);")
    marked = marked.replace("{drop}", "put_page(page);")
    unmarked = MOVE.replace("{mark}", "page->private = 0;").replace("{drop}", "put_page(page);")
    assert _review(marked, unmarked) == [("liveness-check-removed", "PAGE_MOVED", "page")]


def test_a_flag_whose_setter_keeps_the_object_is_only_state() -> None:
    kept = MOVE.replace("{mark}", "set_bit(PAGE_MOVED, &page->private);").replace("{drop}", "")
    assert _review(kept, kept) == []


def test_a_lookup_that_still_tests_the_mark_elsewhere_is_quiet() -> None:
    marked = MOVE.replace("{mark}", "set_bit(PAGE_MOVED, &page->private);")
    marked = marked.replace("{drop}", "put_page(page);")
    pre, post = _sides(
        LOOKUP_PRE + marked,
        LOOKUP_POST.replace(
            "return hdr;",
            "if (test_bit(PAGE_MOVED, &virt_to_page(hdr)->private))\n"
            "\t\treturn NULL;\n\treturn hdr;",
        )
        + marked,
    )
    assert state_check_removed(ENV, pre, post) == []
