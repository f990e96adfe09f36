"""A reference step moved out of a callee the patch stops calling
(bot.analyze.callee_moves): the get a caller now takes itself is the one the
callee took before, so path-reference-leak reports nothing new. Small
kernel-style code written for these tests."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.flow import flows_in_text
from bot.analyze.flow_source import SourceView
from bot.analyze.infer import extend_vocabulary
from bot.analyze.refs import path_reference_leak
from bot.analyze.rules_match import Env, Side
from bot.config import Settings
from tests.fixtures.sides import changed_lines

VOCAB = load_vocabulary(Settings().rules_dir)
PATH = "mm/t.c"

CALLER = """
static int gizmo_poison(unsigned long pfn)
{
	struct page *p = pfn_to_page(pfn);
	int res;

	res = GIZMO_RECOVERED;
	if (!gizmo_mark_poison(p, true))
		res = GIZMO_FAILED;
	gizmo_report(pfn, res);
	return res == GIZMO_RECOVERED ? 0 : -EBUSY;
}
"""

SPLIT = CALLER.replace(
    """	res = GIZMO_RECOVERED;
	if (!gizmo_mark_poison(p, true))
		res = GIZMO_FAILED;
""",
    """	res = GIZMO_FAILED;
	if (__gizmo_mark_poison(p)) {
		get_page(p);
		res = GIZMO_RECOVERED;
	}
""",
)

CALLEE = """
static bool gizmo_mark_poison(struct page *page, bool free)
{
	if (free && !gizmo_take_off_list(page))
		return false;
	SetPageHWPoison(page);
	get_page(page);
	return true;
}
"""


def _leaks(pre_text: str, post_text: str, callee: str = "") -> list[str]:
    """path-reference-leak keys on the post-image of the caller."""
    pre_text, post_text = pre_text + callee, post_text + callee
    removed, added = changed_lines(pre_text, post_text)
    views = SourceView({PATH: pre_text}, None), SourceView({PATH: post_text}, None)
    pre_flow = next(f for f in flows_in_text(pre_text, PATH) if f.name == "gizmo_poison")
    post_flow = next(f for f in flows_in_text(post_text, PATH) if f.name == "gizmo_poison")
    vocab, inf = extend_vocabulary(VOCAB, [views[1], views[0]], [pre_flow, post_flow], 2)
    env = Env(vocab, depth=2, infer=inf)
    pre = Side(pre_flow, views[0], PATH, removed)
    post = Side(post_flow, views[1], PATH, added)
    return [h.key[0] for h in path_reference_leak(env, post, pre)]


def test_a_get_split_out_of_a_callee_with_no_body_visible_is_not_new() -> None:
    # no body of gizmo_mark_poison(): its inner variant now called is the split
    assert _leaks(CALLER, SPLIT) == []


def test_a_get_taken_over_from_a_callee_whose_body_gets_it_is_not_new() -> None:
    other = SPLIT.replace("__gizmo_mark_poison(p)", "gizmo_take_off_list(p)")
    assert _leaks(CALLER, other, CALLEE) == []


def test_a_get_beside_a_callee_that_took_nothing_is_reported() -> None:
    # the removed callee's body takes no reference: the get is new
    callee = CALLEE.replace("\tget_page(page);\n", "")
    other = SPLIT.replace("__gizmo_mark_poison(p)", "gizmo_take_off_list(p)")
    assert _leaks(CALLER, other, callee) == ["leak"]
    # no body and no variant of its name: the get is new too
    unrelated = SPLIT.replace("__gizmo_mark_poison(p)", "gizmo_is_free(p)")
    assert _leaks(CALLER, unrelated) == ["leak"]
