"""path-loses-release (bot/analyze/pathdiff.py): a post-image path that leaves
without a release every corresponding pre-image path made. Each case is a pair of
small kernel-style functions (the whole image, as with a tree) and the diff
between them, run through the real flow, vocabulary and inference."""

from __future__ import annotations

import difflib

from bot.analyze.api import load_vocabulary
from bot.analyze.diff import parse_diff
from bot.analyze.flow_build import flows_in_text
from bot.analyze.flow_source import SourceView
from bot.analyze.infer import extend_vocabulary
from bot.analyze.pathdiff import path_loses_release
from bot.analyze.rules_match import Env, Side
from bot.config import Settings
from bot.model import LineKind

VOCAB = load_vocabulary(Settings().rules_dir)
PATH = "mm/widget.c"


def _hits(pre: str, post: str) -> list[tuple[str, str]]:
    text = "".join(
        difflib.unified_diff(
            pre.splitlines(keepends=True), post.splitlines(keepends=True), "a/" + PATH, "b/" + PATH
        )
    )
    (d,) = parse_diff(text, "t")
    lines = [hl for h in d.hunks for hl in h.lines]
    removed = frozenset(
        hl.source_line for hl in lines if hl.kind is LineKind.REMOVED and hl.source_line
    )
    added = frozenset(
        hl.target_line for hl in lines if hl.kind is LineKind.ADDED and hl.target_line
    )
    vpre, vpost = SourceView({PATH: pre}, None), SourceView({PATH: post}, None)
    fpre, fpost = flows_in_text(pre, PATH)[-1], flows_in_text(post, PATH)[-1]
    vocab, inf = extend_vocabulary(VOCAB, [vpre, vpost], [fpre, fpost], depth=2)
    hits = path_loses_release(
        Env(vocab, depth=2, infer=inf),
        Side(fpre, vpre, PATH, removed, diff=d),
        Side(fpost, vpost, PATH, added, diff=d),
    )
    return [(h.fields["object"], h.fields["exit"]) for h in hits]


PRE = """\
int widget_attach(struct device *dev, int id)
{
	struct widget *w;
	int err;

	w = widget_lookup(dev, id);
	if (!w)
		return -ENODEV;
	err = widget_prepare(w);
	if (err)
		goto out;
	err = widget_bind(w, dev);
out:
	widget_put(w);
	return err;
}
"""


def test_a_new_early_return_that_skips_the_common_put_loses_it() -> None:
    post = PRE.replace(
        "\terr = widget_bind(w, dev);\n",
        "\tif (w->busy)\n\t\treturn -EBUSY;\n\terr = widget_bind(w, dev);\n",
    )
    assert _hits(PRE, post) == [("w", "return -EBUSY;")]


def test_a_goto_retargeted_past_the_put_loses_it() -> None:
    post = PRE.replace("\t\tgoto out;\n", "\t\tgoto out_ret;\n").replace(
        "\twidget_put(w);\n\treturn err;", "\twidget_put(w);\nout_ret:\n\treturn err;"
    )
    assert _hits(PRE, post) == [("w", "return err;")]


def test_an_early_return_before_the_object_is_made_owes_nothing() -> None:
    post = PRE.replace(
        "\tw = widget_lookup(dev, id);\n",
        "\tif (id < 0)\n\t\treturn -EINVAL;\n\tw = widget_lookup(dev, id);\n",
    )
    assert _hits(PRE, post) == []


def test_a_new_exit_that_hands_the_object_back_owes_nothing() -> None:
    post = PRE.replace(
        "\terr = widget_bind(w, dev);\n",
        "\tif (w->busy) {\n\t\tdev->pending = w;\n\t\treturn -EBUSY;\n\t}\n"
        "\terr = widget_bind(w, dev);\n",
    )
    assert _hits(PRE, post) == []


def test_a_new_exit_that_puts_first_is_balanced() -> None:
    post = PRE.replace(
        "\terr = widget_bind(w, dev);\n",
        "\tif (w->busy) {\n\t\twidget_put(w);\n\t\treturn -EBUSY;\n\t}\n"
        "\terr = widget_bind(w, dev);\n",
    )
    assert _hits(PRE, post) == []


RELEASE = """\
static void gadget_release(struct gadget *g)
{
	gadget_unlink(g);
	kfree(g->name);
	kfree(g);
}
"""


def test_a_release_function_that_now_returns_early_leaks_its_parameter() -> None:
    post = RELEASE.replace("\tgadget_unlink(g);\n", "\tif (!gadget_unlink(g))\n\t\treturn;\n")
    assert _hits(RELEASE, post) == [("g", "return;")]


def test_an_unchanged_path_is_never_reported() -> None:
    post = PRE.replace("err = widget_bind(w, dev);", "err = widget_bind(w, dev) ?: 0;")
    assert _hits(PRE, post) == []


def _many(n: int) -> tuple[str, str]:
    branches = "".join(f"\tif (c{i})\n\t\tstep{i}(w);\n" for i in range(n))
    pre = (
        "int many(struct widget *w)\n{\n" + branches + "\tif (w->busy)\n\t\tgoto out;\n"
        "\tbind(w);\nout:\n\twidget_put(w);\n\treturn 0;\n}\n"
    )
    return pre, pre.replace("\t\tgoto out;\n", "\t\treturn -EBUSY;\n")


def test_a_function_with_more_paths_than_the_bound_is_skipped_not_walked() -> None:
    pre, post = _many(3)
    assert _hits(pre, post) == [("w", "return -EBUSY;")]
    pre, post = _many(40)  # 2**40 paths
    assert _paths_of(pre) == []  # past MAX_PATHS: no enumeration at all
    assert _hits(pre, post) == []


def _paths_of(code: str) -> list[object]:
    from bot.analyze.pathdiff import _paths

    got = _paths(flows_in_text(code, PATH)[-1])
    return [] if got is None else list(got)


OWNED = """\
int demo_attach(struct demo_dev *dev)
{
	struct demo_ctx *ctx;
	int err;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	err = demo_setup(ctx, dev);
	if (err)
		goto free;
	dev->ctx = ctx;
	return 0;
free:
	kfree(ctx);
	return err;
}
"""


def test_an_object_stored_on_success_and_freed_on_error_is_owed_on_a_new_exit() -> None:
    post = OWNED.replace(
        "\terr = demo_setup(ctx, dev);\n",
        "\terr = demo_setup(ctx, dev);\n\tif (dev->flags & DEMO_RO)\n\t\treturn -EROFS;\n",
    )
    assert _hits(OWNED, post) == [("ctx", "return -EROFS;")]


def test_a_new_exit_that_stores_the_object_owes_nothing() -> None:
    post = OWNED.replace(
        "\terr = demo_setup(ctx, dev);\n",
        "\terr = demo_setup(ctx, dev);\n\tif (dev->flags & DEMO_RO) {\n"
        "\t\tdev->ro_ctx = ctx;\n\t\treturn -EROFS;\n\t}\n",
    )
    assert _hits(OWNED, post) == []


def test_a_documented_leak_is_the_authors_choice() -> None:
    pre = (
        "void res_free(struct res *res)\n{\n\tif (!res)\n\t\treturn;\n"
        "\tif (!slab_backed(res)) {\n\t\tres->next = boot_free;\n\t\tboot_free = res;\n"
        "\t} else {\n\t\tkfree(res);\n\t}\n}\n"
    )
    leaky = (
        "void res_free(struct res *res)\n{\n\tif (res && slab_backed(res))\n\t\tkfree(res);\n}\n"
    )
    assert _hits(pre, leaky) == [("res", "the end of the function")]
    noted = leaky.replace("{\n", "{\n\t/* boot memory cannot be freed: we leak it here */\n", 1)
    assert _hits(pre, noted) == []
