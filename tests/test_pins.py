"""A tryget pin replaced by a get of another counter of the same object type
(MMLC002 `pin-weakened`): two families on one object in the vocabulary, the
users' tryget and put removed, the struct's get added, the object still used."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.flow_build import flows_in_text
from bot.analyze.flow_source import SourceView
from bot.analyze.pins import pin_weakened
from bot.analyze.rules_match import Env, Side
from bot.config import Settings

VOCAB = load_vocabulary(Settings().rules_dir)
VIEW = SourceView(files={}, tree_root=None)
ENV = Env(vocab=VOCAB, depth=2)

PINNED = """
static int reap_task(struct task_struct *p)
{
	struct mm_struct *mm = NULL;
	int ret = 0;

	if (mmget_not_zero(p->mm)) {
		mm = p->mm;
		if (!task_exiting(p))
			ret = -EINVAL;
	}
	task_unlock(p);
	if (!mm)
		return ret;
	mmap_read_lock(mm);
	reap_address_space(mm);
	mmap_read_unlock(mm);
	mmput(mm);
	return ret;
}
"""

GRABBED = """
static int reap_task(struct task_struct *p)
{
	struct mm_struct *mm;
	int ret = 0;

	mm = p->mm;
	mmgrab(mm);
	if (!task_exiting(p))
		ret = -EINVAL;
	task_unlock(p);
	mmap_read_lock(mm);
	reap_address_space(mm);
	mmap_read_unlock(mm);
	mmdrop(mm);
	return ret;
}
"""


def _sides(pre: str, post: str) -> tuple[Side, Side]:
    (a,) = flows_in_text(pre, "mm/t.c")
    (b,) = flows_in_text(post, "mm/t.c")
    return Side(a, VIEW, "mm/t.c"), Side(b, VIEW, "mm/t.c")


def test_the_users_pin_replaced_by_a_grab_of_the_struct_is_reported() -> None:
    hits = pin_weakened(ENV, *_sides(PINNED, GRABBED))
    assert [h.key for h in hits] == [("pin-weakened", "mm_struct", "p->mm")]
    assert hits[0].fields["weaker"] == "mmgrab(mm)"
    assert hits[0].fields["use"] == "mmap_read_lock(mm)"


def test_the_other_direction_and_a_pin_of_the_same_counter_are_quiet() -> None:
    assert pin_weakened(ENV, *_sides(GRABBED, PINNED)) == []
    same = GRABBED.replace("mmgrab(mm)", "mmget(mm)").replace("mmdrop(mm)", "mmput(mm)")
    assert pin_weakened(ENV, *_sides(PINNED, same)) == []


def test_a_get_of_another_object_type_is_no_weaker_pin() -> None:
    other = GRABBED.replace("mmgrab(mm)", "get_task_struct(p)").replace(
        "mmdrop(mm)", "put_task_struct(p)"
    )
    assert pin_weakened(ENV, *_sides(PINNED, other)) == []
