"""A release hook (`*_free_hook()`) dropped from a path that still frees
(MMLC007 `free-hook-dropped`). Small kernel-style code written for these tests,
run through the real flow builder and matcher."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.errpaths import undo_dropped
from bot.analyze.rules_match import Env
from bot.config import Settings
from tests.fixtures.sides import diff_sides as _sides

ENV = Env(load_vocabulary(Settings().rules_dir), depth=2)
PATH = "mm/t.c"


ABORT = """
static void gizmo_abort_alloc(struct gizmo_cache *c, void *obj)
{
	struct gizmo_slab *slab = obj_to_slab(obj);

	gizmo_tag_free_hook(c, slab, &obj, 1);
	if (gizmo_want_check(c))
		do_gizmo_free(c, slab, obj);
}
"""


def test_a_free_hook_dropped_before_a_kept_free_is_reported() -> None:
    post_text = ABORT.replace("\tgizmo_tag_free_hook(c, slab, &obj, 1);\n", "")
    hits = undo_dropped(ENV, *_sides(ABORT, post_text))
    assert [h.variant for h in hits] == ["free-hook-dropped"]
    assert hits[0].fields["free"] == "do_gizmo_free(c, slab, obj)"


def test_a_free_hook_dropped_with_the_free_or_moved_is_not_reported() -> None:
    # the free went too: the object is handed elsewhere, its hook with it
    gone = ABORT.replace("\tgizmo_tag_free_hook(c, slab, &obj, 1);\n", "").replace(
        "\t\tdo_gizmo_free(c, slab, obj);", "\t\tgizmo_defer(c, obj);"
    )
    assert undo_dropped(ENV, *_sides(ABORT, gone)) == []
    # the hook moved below the check: still run before the free
    moved = ABORT.replace("\tgizmo_tag_free_hook(c, slab, &obj, 1);\n", "").replace(
        "\t\tdo_gizmo_free(c, slab, obj);",
        "\t\tgizmo_tag_free_hook(c, slab, &obj, 1);\n\t\tdo_gizmo_free(c, slab, obj);",
    )
    assert undo_dropped(ENV, *_sides(ABORT, moved)) == []
