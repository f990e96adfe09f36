"""parse_functions / touched_functions / call_graph / find_function on kernel-style C."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.analyze.cfunc import (
    call_graph,
    find_function,
    function_name_from_section,
    parse_functions,
    touched_functions,
)
from bot.analyze.diff import parse_diff
from bot.apply.images import diff_only_images
from bot.model import ChangeKind, FileImage, PatchImages

CFUNC = Path(__file__).resolve().parent / "fixtures" / "cfunc"


def _read(name: str) -> str:
    return (CFUNC / name).read_text(encoding="utf-8")


def _by_name(text: str) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for f in parse_functions(text, "x.c"):
        out.setdefault(f.name, []).append((f.start_line, f.end_line))
    return out


def test_kernel_macros_do_not_lose_functions() -> None:
    found = _by_name(_read("kernel_macros.c"))
    assert found == {
        "fast_path": [(3, 6)],  # __always_inline
        "kmem_init": [(8, 11)],  # __init
        "drop_lock": [(13, 17)],  # __releases(x) after the parameter list
        "get_thing": [(19, 28)],  # __must_check, list_for_each_entry(...) {
        "sys_brk": [(30, 33)],  # SYSCALL_DEFINE1(brk, ...)
        "sys_mprotect": [(35, 39)],  # SYSCALL_DEFINE3 over two lines
        "memcg_thing": [(42, 45), (47, 49)],  # both #ifdef branches
        "old_style": [(52, 57)],  # K&R parameter declarations
        "get_fn": [(59, 62)],  # returns a function pointer
        "__weird": [(64, 67)],  # __meminit + __acquires + __releases
    }


def test_loop_macro_bodies_are_not_functions() -> None:
    # tree-sitter reads `list_for_each_entry(...) {` inside a body as a nested
    # definition; only file-scope definitions count.
    names = {f.name for f in parse_functions(_read("kernel_macros.c"), "x.c")}
    assert "list_for_each_entry" not in names and "pos" not in names


def test_calls_are_in_source_order_and_include_macros() -> None:
    funcs = {f.name: f for f in parse_functions(_read("kernel_macros.c"), "x.c")}
    assert funcs["get_thing"].calls == ("list_for_each_entry",)
    assert funcs["drop_lock"].calls == ("spin_unlock",)
    assert funcs["sys_mprotect"].calls == ("do_mprotect",)
    assert funcs["old_style"].calls == ("strlen",)
    assert funcs["fast_path"].calls == ()


def test_static_and_inline_flags() -> None:
    funcs = {f.name: f for f in parse_functions(_read("kernel_macros.c"), "x.c")}
    assert funcs["fast_path"].is_static and funcs["fast_path"].is_inline
    assert funcs["kmem_init"].is_static and not funcs["kmem_init"].is_inline
    assert not funcs["get_thing"].is_static


def test_body_is_the_full_definition_text() -> None:
    text = _read("kernel_macros.c")
    drop = next(f for f in parse_functions(text, "x.c") if f.name == "drop_lock")
    assert drop.body.splitlines()[0] == "static void drop_lock(struct foo *f)"
    assert drop.body.splitlines()[-1] == "}"
    assert drop.file == "x.c"


def test_calls_skip_keywords_comments_strings_and_member_calls() -> None:
    text = (
        "static int f(struct ops *o)\n"
        "{\n"
        "\t/* not_a_call(x) */\n"
        '\tpr_info("fake_call(%d)\\n", sizeof(int));\n'
        "\tif (o->release(o))\n"
        "\t\treturn real_call(o) + typeof_unused;\n"
        "\treturn (int)(long)o;\n"
        "}\n"
    )
    (f,) = parse_functions(text, "x.c")
    assert f.calls == ("pr_info", "real_call")


def test_define_bodies_are_not_functions() -> None:
    text = "#define FOO(x) \\\n\tdo { bar(x); } while (0)\n\nint f(void)\n{\n\treturn 0;\n}\n"
    assert [f.name for f in parse_functions(text, "x.c")] == ["f"]


def test_find_function_and_call_graph() -> None:
    text = _read("pool-pre.c")
    put = find_function(text, "mm/pool.c", "pool_buf_put")
    assert put is not None and put.start_line == 28 and put.is_inline
    assert find_function(text, "mm/pool.c", "no_such_function") is None
    graph = call_graph(parse_functions(text, "mm/pool.c"))
    assert graph["pool_buf_put"] == ("pool_schedule_destroy",)
    assert graph["pool_group_offline"] == ()
    assert graph["pool_destroy_work"] == ()


@pytest.mark.parametrize(
    ("section", "name"),
    [
        (
            "static void kmem_cache_destroy_work_func(struct work_struct *w)",
            "kmem_cache_destroy_work_func",
        ),
        ("static void memcg_oom_recover(struct mem", "memcg_oom_recover"),
        ("SYSCALL_DEFINE3(mprotect, unsigned long, start, size_t, len,", "sys_mprotect"),
        ("struct memcg_cache_params {", None),
        ("__memcg_kmem_get_cache(struct kmem_cache *cachep, gfp_t gfp);", None),
        ("", None),
        # `diff -p` cuts at 40 columns, before the parameter list
        ("static __always_inline void gizmo_slab_free", "gizmo_slab_free"),
        ("static unsigned long gizmo_pool_shrink_un", "gizmo_pool_shrink_un"),
        ("struct gizmo_pool_info * __init gizmo_all", "gizmo_all"),
        # short heads are not cut: no `(` means no function
        ("static int gizmo_count", None),
        ("struct gizmo_pool_info_with_a_long_name {", None),
        ("#define GIZMO_POOL_SHRINK_BATCH_SIZE_IN_PAGES", None),
        ("static const unsigned long long unsigned", None),
    ],
)
def test_function_name_from_section(section: str, name: str | None) -> None:
    assert function_name_from_section(section) == name


def _pool_images(partial: bool) -> PatchImages:
    files = parse_diff(_read("pool.diff"), "pool.diff")
    if partial:
        return diff_only_images(1, files)
    image = FileImage("mm/pool.c", _read("pool-pre.c"), _read("pool-post.c"))
    return PatchImages(1, files, (image,))


@pytest.mark.parametrize("partial", [False, True], ids=["full", "diff-only"])
def test_touched_functions_kinds(partial: bool) -> None:
    changes = {c.name: c for c in touched_functions(_pool_images(partial))}
    assert {n: c.kind for n, c in changes.items()} == {
        "pool_destroy_work": ChangeKind.MODIFIED,
        "pool_schedule_destroy": ChangeKind.REMOVED,
        "pool_buf_put": ChangeKind.MODIFIED,
        "pool_group_offline": ChangeKind.MODIFIED,
        "pool_buf_count": ChangeKind.ADDED,
    }
    put = changes["pool_buf_put"]
    assert put.pre is not None and put.post is not None
    assert "pool_schedule_destroy" in put.pre.calls
    assert "pool_schedule_destroy" not in put.post.calls and "atomic_dec" in put.post.calls
    assert changes["pool_schedule_destroy"].post is None
    assert changes["pool_buf_count"].pre is None
    assert all(c.hunks == (0,) for c in changes.values())


def test_full_images_give_whole_bodies() -> None:
    changes = {c.name: c for c in touched_functions(_pool_images(partial=False))}
    work = changes["pool_destroy_work"]
    assert work.pre is not None and work.post is not None
    assert work.pre.start_line == 9 and work.pre.body.startswith("static void pool_destroy_work(")
    assert "atomic_read" in work.post.calls and "atomic_read" not in work.pre.calls


def test_hunk_starting_inside_a_function_is_named_from_the_section_header() -> None:
    # Diff-only: the head of pool_destroy_work is above the hunk, only the
    # `@@ ... @@ static void pool_destroy_work(...)` header names it.
    changes = {c.name: c for c in touched_functions(_pool_images(partial=True))}
    work = changes["pool_destroy_work"]
    assert work.post is not None and work.post.start_line == 14
    assert "kmem_cache_destroy" in work.post.calls


def test_comment_only_hunk_touches_no_function() -> None:
    diff = (
        "--- a/mm/x.c\n+++ b/mm/x.c\n"
        "@@ -10,5 +10,4 @@ static void helper(void)\n"
        " /*\n"
        "  * Widgets are freed by the last put.\n"
        "- * Nobody else may free them.\n"
        "  */\n"
        " struct widget_table {\n"
    )
    images = diff_only_images(1, parse_diff(diff, "t"))
    assert touched_functions(images) == ()


def test_a_hunk_opening_with_the_body_brace_belongs_to_the_header_function() -> None:
    diff = (
        "--- a/mm/x.c\n+++ b/mm/x.c\n"
        "@@ -20,6 +20,5 @@ node_shrink_scan(struct shrinker *s, struct shrink_control *sc)\n"
        " {\n"
        " \tint i;\n"
        " \n"
        "-\tguard(mutex)(&purge_lock);\n"
        " \tfor (i = 0; i < nr_nodes; i++)\n"
        " \t\tdecay_node(&nodes[i]);\n"
    )
    (change,) = touched_functions(diff_only_images(1, parse_diff(diff, "t")))
    assert change.name == "node_shrink_scan"
    assert change.pre is not None and "guard(mutex)" in change.pre.body


def test_hunks_that_change_only_one_side_give_both_sides_the_same_span() -> None:
    diff = (
        "--- a/mm/x.c\n+++ b/mm/x.c\n"
        "@@ -10,4 +10,4 @@ static void reap(struct list_head *victims)\n"
        " \tstruct victim *v, *next;\n"
        " \n"
        "-\tlist_for_each_entry_safe(v, next, victims, node) {\n"
        "+\tlist_for_each_entry_safe (v, next, victims, node) {\n"
        " \t\tsignal_victim(v);\n"
        "@@ -20,5 +20,4 @@ static void reap(struct list_head *victims)\n"
        ' \t\t\tpr_err("cannot signal\\n");\n'
        " \t\t}\n"
        "-\t\tlist_del(&v->node);\n"
        " \t\tkfree(v);\n"
        " \t}\n"
    )
    (change,) = touched_functions(diff_only_images(1, parse_diff(diff, "t")))
    assert change.pre is not None and change.post is not None
    assert "kfree(v)" in change.post.body and "signal_victim(v)" in change.pre.body


# --------------------------------------------------------------------------- corpus


def _seed_images(corpus: Path, name: str) -> PatchImages:
    mail = (corpus / "seed" / name).read_text(encoding="utf-8")
    return diff_only_images(1, parse_diff(mail[mail.index("diff --git") :], name))


@pytest.mark.parametrize("name", ["v2-0001-patch-1of3.eml", "v3-0001-patch-1of3.eml"])
def test_seed_patch_diff_only_touched_functions(corpus: Path, name: str) -> None:
    changes = {(c.file, c.name): c for c in touched_functions(_seed_images(corpus, name))}
    release = changes[("mm/slab.h", "memcg_release_pages")]
    assert release.kind is ChangeKind.MODIFIED
    assert release.pre is not None and release.post is not None
    assert "mem_cgroup_destroy_cache" in release.pre.calls
    assert "mem_cgroup_destroy_cache" not in release.post.body
    destroy = changes[("mm/memcontrol.c", "mem_cgroup_destroy_cache")]
    assert destroy.kind is ChangeKind.REMOVED
    assert destroy.pre is not None and "schedule_work" in destroy.pre.calls
    work = changes[("mm/memcontrol.c", "kmem_cache_destroy_work_func")]
    assert work.kind is ChangeKind.MODIFIED


@pytest.mark.parametrize(
    "text",
    [
        "(" * 50_000,
        "{" * 50_000 + "}" * 50_000,
        "int f(void)\n" + "{" * 20_000,
        "(" + "){}\n" * 20_000,
        "a(" + "x)" * 20_000 + "{}",
    ],
    ids=["open-parens", "nested-braces", "unclosed-body", "paren-brace-pairs", "long-head"],
)
def test_hostile_text_parses_without_error(text: str) -> None:
    # Deep nesting must not exhaust recursion; pathological heads must not go
    # quadratic (the pytest timeout would catch that).
    functions = parse_functions(text, "hostile.c")
    assert all(f.file == "hostile.c" for f in functions)


def test_ifdef_twin_counterpart_is_the_nearest_definition() -> None:
    pre = (
        "#ifdef CONFIG_MEMCG\n"
        "static inline void pool_charge(struct pool *p)\n"
        "{\n"
        "\tcss_get(&p->css);\n"
        "}\n"
        "#else\n"
        "static inline void pool_charge(struct pool *p)\n"
        "{\n"
        "}\n"
        "#endif\n"
    )
    post = pre.replace("{\n}\n", "{\n\tp->charged = true;\n}\n")
    diff = (
        "--- a/mm/pool.h\n+++ b/mm/pool.h\n"
        "@@ -7,3 +7,4 @@\n"
        " static inline void pool_charge(struct pool *p)\n"
        " {\n"
        "+\tp->charged = true;\n"
        " }\n"
    )
    images = PatchImages(1, parse_diff(diff, "t"), (FileImage("mm/pool.h", pre, post),))
    (change,) = touched_functions(images)
    assert change.kind is ChangeKind.MODIFIED
    assert change.pre is not None and change.post is not None
    assert (change.pre.start_line, change.post.start_line) == (7, 7)
    assert change.pre.calls == () and "css_get" not in change.post.calls


def test_braces_opened_in_both_ifdef_branches_do_not_swallow_neighbours() -> None:
    text = (
        "static int pool_pick(struct pool *p)\n"
        "{\n"
        "#ifdef CONFIG_POOL_DEBUG\n"
        "\tif (p->debug && p->ready) {\n"
        "#else\n"
        "\tif (p->ready) {\n"
        "#endif\n"
        "\t\tpool_get(p);\n"
        "\t\treturn 1;\n"
        "\t}\n"
        "\treturn 0;\n"
        "}\n"
        "\n"
        "static void pool_free(struct pool *p)\n"
        "{\n"
        "\tkfree(p);\n"
        "}\n"
    )
    found = {f.name: f for f in parse_functions(text, "x.c")}
    assert (found["pool_pick"].start_line, found["pool_pick"].end_line) == (1, 12)
    assert found["pool_pick"].calls == ("pool_get",)
    assert (found["pool_free"].start_line, found["pool_free"].end_line) == (14, 17)


def test_non_c_files_touch_no_functions() -> None:
    # C in a document is an example, not a function of the tree.
    diff = (
        "--- a/Documentation/mm/pool.txt\n+++ b/Documentation/mm/pool.txt\n"
        "@@ -1,4 +1,4 @@\n"
        " void pool_example(struct pool *p)\n"
        " {\n"
        "-\tpool_get(p);\n"
        "+\tpool_put(p);\n"
        " }\n"
    )
    assert touched_functions(diff_only_images(1, parse_diff(diff, "t"))) == ()
    as_c = diff.replace("Documentation/mm/pool.txt", "mm/pool.c")
    (change,) = touched_functions(diff_only_images(1, parse_diff(as_c, "t")))
    assert change.name == "pool_example"


def test_non_ascii_comments_keep_offsets_right() -> None:
    text = (
        "/* Copyright (C) 2014 Jörg Müller — slab ↔ memcg glue */\n"
        "static void pool_drop(struct pool *p)\n"
        "{\n"
        '\tpr_debug("drop %s\\n", "naïve");\n'
        "\tpool_put(p); /* ↔↔↔↔↔↔↔↔↔↔↔↔↔↔↔↔↔↔↔↔ */\n"
        "}\n"
        "EXPORT_SYMBOL(pool_drop);\n"
        "/* ünïcödé */ int pool_size(struct pool *p)\n"
        "{\n"
        "\treturn pool_count(p);\n"
        "}\n"
    )
    found = {f.name: f for f in parse_functions(text, "x.c")}
    assert found["pool_drop"].calls == ("pr_debug", "pool_put")
    assert found["pool_size"].calls == ("pool_count",)
    assert (found["pool_size"].start_line, found["pool_size"].end_line) == (8, 11)


def test_ifdef_twins_touched_in_separate_hunks_stay_apart() -> None:
    # Diff-only: the CONFIG_POOL body and its #else stub are both changed.
    diff = (
        "--- a/mm/pool.c\n+++ b/mm/pool.c\n"
        "@@ -10,6 +10,6 @@\n"
        "#ifdef CONFIG_POOL\n"
        " static int pool_init(struct pool *p)\n"
        " {\n"
        "-\treturn pool_alloc(p);\n"
        "+\treturn pool_alloc_node(p, NUMA_NO_NODE);\n"
        " }\n"
        " #else\n"
        "@@ -80,5 +80,5 @@ static void pool_free(struct pool *p)\n"
        " #else\n"
        " static int pool_init(struct pool *p)\n"
        " {\n"
        "-\treturn -ENODEV;\n"
        "+\treturn 0;\n"
        " }\n"
    ).replace("#ifdef CONFIG_POOL\n", " #ifdef CONFIG_POOL\n")
    changes = touched_functions(diff_only_images(1, parse_diff(diff, "t")))
    assert [(c.name, c.kind, c.hunks) for c in changes] == [
        ("pool_init", ChangeKind.MODIFIED, (0,)),
        ("pool_init", ChangeKind.MODIFIED, (1,)),
    ]
    first, second = changes
    assert first.pre is not None and first.pre.start_line == 11 and first.pre.end_line == 14
    assert second.post is not None and second.post.calls == ()
    assert first.post is not None and first.post.calls == ("pool_alloc_node",)


def test_mask_blanks_comments_literals_and_directives_in_place() -> None:
    from bot.analyze.cscan import mask

    text = (
        '#define F(x) { \\\n\tx; }\nint f(void) /* a { */\n{\n\tchar *s = "}{";\n'
        "\tint c = '{'; // }\n#if A\n\treturn 0;\n#endif\n\tx = \"open\n# not a directive\n}\n"
    )
    masked = mask(text)
    assert len(masked) == len(text)
    assert [i for i, c in enumerate(masked) if c == "\n"] == [
        i for i, c in enumerate(text) if c == "\n"
    ]
    braces = "".join(c for c in masked if c in "{}")
    assert braces == "{}"  # only the body's own braces are left
    assert "return 0;" in masked and "#if" not in masked and "not a directive" in masked
