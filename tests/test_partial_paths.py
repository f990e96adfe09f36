"""Partial images and lost puts on one path: hunks that start inside a header or
close a block opened in lines the diff does not show, pre-to-post line mapping,
casts and loop cursors resolved to their objects, a `put_*` known by convention,
and a put removed from one path whose exit stays (release_paths)."""

from __future__ import annotations

import difflib

from bot.analyze.api import load_vocabulary
from bot.analyze.diff import parse_diff
from bot.analyze.flow import base_name
from bot.analyze.flow_build import flows_in_text
from bot.analyze.flow_source import HIDDEN_BLOCK, SourceView, _open_hidden_blocks, flow_of
from bot.analyze.infer import extend_vocabulary
from bot.analyze.release_paths import release_path_loses_put
from bot.analyze.rules_match import Env, Side, post_line_of
from bot.config import Settings
from bot.model import CFunction, LineKind

VOCAB = load_vocabulary(Settings().rules_dir)

DIFF = """\
--- a/mm/x.c
+++ b/mm/x.c
@@ -10,0 +11,2 @@ int f(void)
+\ta();
+\tb();
@@ -20,2 +21,0 @@ int f(void)
-\tc();
-\td();
@@ -40,3 +39,3 @@ int g(void)
 \te();
-\tf();
+\tff();
 \th();
"""


def test_post_line_of_follows_insertions_removals_and_context() -> None:
    (d,) = parse_diff(DIFF, "t")
    assert [post_line_of(d, n) for n in (9, 10, 11, 19)] == [9, 10, 13, 21]
    assert post_line_of(d, 20) is None and post_line_of(d, 21) is None
    assert post_line_of(d, 22) == 22
    assert post_line_of(d, 40) == 39  # context inside a hunk
    assert post_line_of(d, 41) is None  # replaced
    assert post_line_of(d, 42) == 41
    assert post_line_of(d, 100) == 99


def test_casts_and_parentheses_resolve_to_the_variable() -> None:
    assert base_name("(struct pid *)t->id") == "t"
    assert base_name("(void *)&w->node") == "w"
    assert base_name("(unsigned long)page") == "page"
    assert base_name("(a->b)") == "a"
    assert base_name("(x * y)") == "x"


PARTIAL = (
    "int f(struct ctx *ctx)\n{\n\tint err;\n\n"
    + "\n" * 12
    + "\t\tgoto out;\n\t}\n\tput_thing(ctx->thing);\n\treturn 0;\nout:\n\treturn err;\n}\n"
)


def test_a_brace_closing_a_hidden_block_does_not_end_the_function() -> None:
    opened = _open_hidden_blocks(PARTIAL)
    assert HIDDEN_BLOCK in opened
    assert opened.count("\n") == PARTIAL.count("\n")  # line numbers kept
    flow = flow_of(CFunction("f", "mm/x.c", 1, PARTIAL.count("\n"), PARTIAL, ()))
    assert flow is not None and "put_thing" in flow.call_names()


def test_a_whole_function_is_left_as_it_is() -> None:
    whole = "int f(void)\n{\n\tif (a) {\n\n\n\n\t\tb();\n\t}\n\tc();\n}\n"
    assert _open_hidden_blocks(whole) == whole


def test_a_hunk_that_starts_in_the_header_is_read_as_the_function() -> None:
    body = "\t\tsize_t count, loff_t *ppos)\n{\n\tstruct ctx *c = get_ctx(count);\n\tput_ctx(c);\n"
    flow = flow_of(CFunction("w", "mm/x.c", 5, 8, body, ()))
    assert flow is not None and flow.call_names() == ["get_ctx", "put_ctx"]
    assert [c.line for c in flow.calls] == [7, 8]


PRE = """\
static int pin_range(unsigned long pfn, unsigned long end)
{
\tstruct dev_pagemap *pgmap = NULL;

\tfor (; pfn < end; pfn++) {
\t\tpgmap = get_dev_pagemap(pfn, pgmap);
\t\tif (!pin_pfn(pfn)) {
\t\t\tput_dev_pagemap(pgmap);
\t\t\treturn 0;
\t\t}
\t}
\tput_dev_pagemap(pgmap);
\treturn 1;
}
"""


def _review(post: str, diff: str) -> list[tuple[str, ...]]:
    view_pre, view_post = SourceView({"mm/p.c": PRE}, None), SourceView({"mm/p.c": post}, None)
    (pre_flow,) = flows_in_text(PRE, "mm/p.c")
    (post_flow,) = flows_in_text(post, "mm/p.c")
    vocab, inf = extend_vocabulary(VOCAB, [view_pre, view_post], [pre_flow, post_flow], depth=2)
    (d,) = parse_diff(diff, "t")
    removed = frozenset(
        hl.source_line
        for h in d.hunks
        for hl in h.lines
        if hl.kind.name == "REMOVED" and hl.source_line
    )
    added = frozenset(
        hl.target_line
        for h in d.hunks
        for hl in h.lines
        if hl.kind.name == "ADDED" and hl.target_line
    )
    pre = Side(pre_flow, view_pre, "mm/p.c", removed, diff=d)
    post_side = Side(post_flow, view_post, "mm/p.c", added, diff=d)
    hits = release_path_loses_put(Env(vocab, depth=2, infer=inf), pre, post_side)
    return [(h.variant or "", h.fields.get("exit", "")) for h in hits]


def test_a_put_removed_from_a_path_that_keeps_its_return_is_lost_there() -> None:
    post = PRE.replace("\t\t\tput_dev_pagemap(pgmap);\n", "").replace(
        "\tput_dev_pagemap(pgmap);\n\treturn 1;",
        "\tif (pgmap)\n\t\tput_dev_pagemap(pgmap);\n\treturn 1;",
    )
    diff = """\
--- a/mm/p.c
+++ b/mm/p.c
@@ -7,7 +7,7 @@ static int pin_range(unsigned long pfn, unsigned long end)
 \t\tif (!pin_pfn(pfn)) {
-\t\t\tput_dev_pagemap(pgmap);
 \t\t\treturn 0;
 \t\t}
 \t}
-\tput_dev_pagemap(pgmap);
+\tif (pgmap)
+\t\tput_dev_pagemap(pgmap);
 \treturn 1;
"""
    assert _review(post, diff) == [("lost-put-on-path", "return 0;")]


def test_a_put_hoisted_above_the_branch_is_not_lost() -> None:
    post = (
        PRE.replace("\t\t\tput_dev_pagemap(pgmap);\n", "")
        .replace("\tput_dev_pagemap(pgmap);\n\treturn 1;", "\treturn 1;")
        .replace(
            "\t\tif (!pin_pfn(pfn)) {", "\t\tput_dev_pagemap(pgmap);\n\t\tif (!pin_pfn(pfn)) {"
        )
    )
    diff = """\
--- a/mm/p.c
+++ b/mm/p.c
@@ -6,8 +6,7 @@ static int pin_range(unsigned long pfn, unsigned long end)
 \t\tpgmap = get_dev_pagemap(pfn, pgmap);
+\t\tput_dev_pagemap(pgmap);
 \t\tif (!pin_pfn(pfn)) {
-\t\t\tput_dev_pagemap(pgmap);
 \t\t\treturn 0;
 \t\t}
 \t}
-\tput_dev_pagemap(pgmap);
 \treturn 1;
"""
    assert all(v != "lost-put-on-path" for v, _ in _review(post, diff))


def test_a_put_whose_get_the_series_removes_elsewhere_is_not_lost() -> None:
    post = PRE.replace("\t\t\tput_dev_pagemap(pgmap);\n", "").replace(
        "\tput_dev_pagemap(pgmap);\n\treturn 1;", "\treturn 1;"
    )
    view_pre, view_post = SourceView({"mm/p.c": PRE}, None), SourceView({"mm/p.c": post}, None)
    (pre_flow,) = flows_in_text(PRE, "mm/p.c")
    (post_flow,) = flows_in_text(post, "mm/p.c")
    vocab, inf = extend_vocabulary(VOCAB, [view_pre, view_post], [pre_flow, post_flow], depth=2)
    gets = [c for c in pre_flow.calls if c.name == "get_dev_pagemap"]
    removed = frozenset(c.line for c in pre_flow.calls if c.name == "put_dev_pagemap")
    pre = Side(pre_flow, view_pre, "mm/p.c", removed)
    post_side = Side(post_flow, view_post, "mm/p.c")
    lost = release_path_loses_put(Env(vocab, depth=2, infer=inf), pre, post_side)
    assert [h.variant for h in lost] == ["lost-put"]
    elsewhere = Env(vocab, depth=2, infer=inf, removed=[("other_fn", g) for g in gets])
    assert release_path_loses_put(elsewhere, pre, post_side) == []


def test_a_hunk_starting_at_an_else_or_inside_a_do_loop_keeps_its_calls() -> None:
    body = (
        "\t\tflags &= ~ALLOC_CPUSET;\n\t} else if (rt_task(current) && in_task())\n"
        "\t\tflags |= ALLOC_HARDER;\n\tdo {\n\t\tif (check(page))\n\t\t\tclear_skip(page);\n"
    )
    flow = flow_of(CFunction("g", "mm/x.c", 10, 15, body, ()))
    assert flow is not None
    assert set(flow.call_names()) >= {"rt_task", "in_task", "check", "clear_skip"}


def test_a_hunk_ending_inside_a_call_keeps_the_statements_before_it() -> None:
    body = (
        "\tif (lock_killable(mm))\n\t\treturn -EINTR;\n\tvma = find_vma(mm, addr);\n"
        "\tret = remap_to(addr, old_len, /* (see below */\n\t\tnew_addr,"
    )
    flow = flow_of(CFunction("h", "mm/x.c", 20, 24, body, ()))
    assert flow is not None and flow.call_names() == ["lock_killable", "find_vma"]


def _lost_puts(pre: str, post: str) -> list[str]:

    text = "".join(
        difflib.unified_diff(
            pre.splitlines(keepends=True), post.splitlines(keepends=True), "a/mm/q.c", "b/mm/q.c"
        )
    )
    (d,) = parse_diff(text, "t")
    lines = [hl for h in d.hunks for hl in h.lines]
    removed = frozenset(
        hl.source_line for hl in lines if hl.kind is LineKind.REMOVED and hl.source_line
    )
    vpre, vpost = SourceView({"mm/q.c": pre}, None), SourceView({"mm/q.c": post}, None)
    (fpre,), (fpost,) = flows_in_text(pre, "mm/q.c"), flows_in_text(post, "mm/q.c")
    vocab, inf = extend_vocabulary(VOCAB, [vpre, vpost], [fpre, fpost], depth=2)
    pre_side = Side(fpre, vpre, "mm/q.c", removed, diff=d)
    hits = release_path_loses_put(
        Env(vocab, depth=2, infer=inf), pre_side, Side(fpost, vpost, "mm/q.c", diff=d)
    )
    return [h.variant for h in hits]


SUBMIT = """\
static int submit(struct seg *seg, struct bio *bio)
{
	int err;

	if (seg->nbio > 0 && congested(seg)) {
		wait(seg);
		if (failed(seg)) {
			bio_put(bio);
			err = -EIO;
			goto failed;
		}
	}
	bio->private = seg;
	submit_bio(bio);
	return 0;
failed:
	return err;
}
"""


def test_a_removed_error_branch_takes_its_put_with_it() -> None:
    start = SUBMIT.index("\tif (seg->nbio")
    end = SUBMIT.index("\tbio->private")
    assert _lost_puts(SUBMIT, SUBMIT[:start] + SUBMIT[end:]) == []


def test_a_put_removed_from_a_kept_error_branch_is_lost() -> None:
    assert _lost_puts(SUBMIT, SUBMIT.replace("\t\t\tbio_put(bio);\n", "")) == ["lost-put"]


RELEASE = """\
void release_one(struct page *page)
{
	if (page_ref_dec_and_test(page))
		put_dev_pagemap(page->pgmap);
}
"""


def test_a_put_replaced_by_a_call_we_cannot_read_on_its_owner_is_handed_off() -> None:
    post = RELEASE.replace("put_dev_pagemap(page->pgmap);", "free_device_page(page);")
    assert _lost_puts(RELEASE, post) == []


def test_a_put_replaced_by_a_test_of_its_owner_is_still_lost() -> None:
    post = RELEASE.replace(
        "\t\tput_dev_pagemap(page->pgmap);\n", "\t\tif (PageTest(page))\n\t\t\tcount++;\n"
    )
    assert _lost_puts(RELEASE, post) == ["lost-put"]


def test_a_stand_in_opens_a_hidden_block_where_it_was_hidden_not_at_the_top() -> None:
    body = (
        "\t\tgoto put_task;\n\t}\n\tmm = p->mm;\n\tmmgrab(mm);\n\ttask_unlock(p);\n"
        + "\n" * 4
        + "\t\tret = -EINTR;\n\t\tgoto drop_mm;\n\t}\n\tunlock(mm);\ndrop_mm:\n\tmmdrop(mm);\n"
        "put_task:\n\tput_task_struct(task);\n\treturn ret;\n"
    )
    flow = flow_of(CFunction("rel", "mm/x.c", 10, 30, body, ()))
    assert flow is not None
    grab = next(c for c in flow.calls if c.name == "mmgrab")
    drop = next(c for c in flow.calls if c.name == "mmdrop")
    # the block the first hunk closes opens at the top and holds only its goto;
    # the one the second hunk closes opens in the hidden lines before it
    assert grab.guards == () and drop.guards == ()
    assert next(c for c in flow.calls if c.name == "task_unlock").guards == ()


DROP = """\
static void demo_drop(struct demo_obj *obj)
{
	list_del(&obj->node);
	kfree(obj);
}

int demo_remove(struct demo_obj *obj)
{
	demo_drop(obj);
	pr_info("removed %d\\n", obj->id);
	kfree(obj);
	return 0;
}
"""


def test_a_release_path_that_still_frees_its_object_once_loses_no_destroy() -> None:
    from bot.analyze.release_paths import release_path_loses_destroy

    post = DROP.replace("\tdemo_drop(obj);\n", "\tlist_del(&obj->node);\n")
    vpre, vpost = SourceView({"mm/d.c": DROP}, None), SourceView({"mm/d.c": post}, None)
    fpre = next(f for f in flows_in_text(DROP, "mm/d.c") if f.name == "demo_remove")
    fpost = next(f for f in flows_in_text(post, "mm/d.c") if f.name == "demo_remove")
    flows = list(flows_in_text(DROP, "mm/d.c")) + list(flows_in_text(post, "mm/d.c"))
    vocab, inf = extend_vocabulary(VOCAB, [vpre, vpost], flows, depth=2)
    env = Env(vocab, depth=2, infer=inf)
    pre_side = Side(fpre, vpre, "mm/d.c", frozenset({9}))
    assert release_path_loses_destroy(env, pre_side, Side(fpost, vpost, "mm/d.c")) == []
    gone = post.replace("\tkfree(obj);\n\treturn 0;", "\treturn 0;")
    fgone = next(f for f in flows_in_text(gone, "mm/d.c") if f.name == "demo_remove")
    vgone = SourceView({"mm/d.c": gone}, None)
    pre_both = Side(fpre, vpre, "mm/d.c", frozenset({9, 11}))
    assert release_path_loses_destroy(env, pre_both, Side(fgone, vgone, "mm/d.c")) != []
