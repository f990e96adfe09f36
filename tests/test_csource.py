"""The C front end's source layer (bot.analyze.csource): one parser for every
reader of C, checked reads over patch images, and lexical facts kept per text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cache
from bot.analyze import cfacts, cfunc, csource, flow_build
from bot.analyze.flow_source import SourceView
from bot.analyze.simulate.sources import SourceSet

TEXT = (
    "#include <linux/obj_types.h>\n"
    '#include "local.h"\n'
    "struct obj {\n\tstruct kref ref;\n};\n\n"
    "static void obj_release(struct kref *ref)\n{\n\tkfree(ref);\n}\n\n"
    "static const struct obj_ops ops = {\n\t.release = obj_release,\n};\n"
)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    before = cache.active()
    cache.configure(tmp_path / "cache")
    csource.clear_memos()
    yield tmp_path / "cache"
    cache.flush()
    cache.configure(before)
    csource.clear_memos()


def test_every_reader_of_c_parses_through_the_one_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    real = csource.parser
    calls: list[str] = []

    def counting() -> object:
        calls.append("parse")
        return real()

    monkeypatch.setattr(csource, "parser", counting)
    text = TEXT.replace("obj_release", "obj_release_once")  # not in any memo yet
    cfunc._parse(text, "mm/a.c")
    assert len(calls) == 1
    # one parse of a text serves every reader of it: cfunc's definitions, the
    # rules' flows and the simulator's facts
    flow_build.flows_in_text(text, "mm/b.c")
    cfacts.parse_file("mm/c.c", text.encode())
    assert len(calls) == 1
    csource.forget_trees()
    cfacts.parse_file("mm/c.c", text.encode())
    assert len(calls) == 2


def test_the_lexicon_lists_heads_structs_includes_calls_and_ops_slots() -> None:
    lex = csource.lexicon(TEXT)
    assert "obj_release" in lex.defines and "obj_release" in lex.heads
    assert lex.structs == frozenset({"obj"})  # `struct obj_ops ops = {` defines no struct
    assert lex.includes == (("<", "linux/obj_types.h"), ('"', "local.h"))
    assert lex.include_paths() == ("linux/obj_types.h", "local.h")
    assert {"kfree", "obj_release"} <= lex.called
    assert lex.initialisers == (("release", "obj_release", 13),)
    assert cfacts.type_headers(lex) == ("include/linux/obj_types.h",)


def test_a_prototype_is_a_head_but_not_a_definition() -> None:
    lex = csource.lexicon("extern int f(int);\nstatic inline int\n\tg(void)\n{\n\treturn 0;\n}\n")
    assert "f" in lex.heads and "f" not in lex.defines


def test_a_lexicon_read_back_from_the_disk_equals_the_scan(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scanned = csource.lexicon(TEXT)
    cache.flush()
    csource.clear_memos()

    def no_scan(text: str) -> csource.Lexicon:
        raise AssertionError("scanned again")

    monkeypatch.setattr(csource, "_scan", no_scan)
    assert csource.lexicon(TEXT) == scanned
    with pytest.raises(AssertionError, match="scanned again"):
        csource.lexicon(TEXT + "\n")


def test_patch_images_win_over_the_tree_and_reads_stay_in_it(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "a.c").write_text("void tree_version(void)\n{\n}\n")
    (tree / "mm" / "b.c").write_text("void b(void)\n{\n}\n")
    (tmp_path / "secret.h").write_text("void secret(void)\n{\n}\n")
    texts = csource.Texts({"mm/a.c": "void image(void)\n{\n}\n", "mm/gone.c": None}, tree)
    assert texts.text("mm/a.c") == "void image(void)\n{\n}\n"
    assert texts.text("mm/gone.c") is None
    assert texts.text("mm/b.c") == "void b(void)\n{\n}\n"
    assert texts.text("../secret.h") is None
    # both views of a side read the tree through it
    view = SourceView({"mm/a.c": "void image(void)\n{\n}\n"}, str(tree))
    assert [f.name for f in view.definitions("b", "mm/a.c")] == ["b"]
    assert view.definitions("secret", "mm/a.c") == ()
    sources = SourceSet({"mm/a.c": '#include "../../secret.h"\n'}, tree)
    assert sources.text("../secret.h") is None and not sources.defines("secret")


def test_the_simulator_lists_a_touched_directory_only_when_reached_without_a_symlink(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "b.c").write_text("void b(void)\n{\n}\n")
    (tree / "mm" / "notes.txt").write_text("b(\n")
    (tree / "lnk").symlink_to(tree / "mm")
    assert SourceSet({"mm/a.c": "void a(void)\n{\n}\n"}, tree).candidates() == ["mm/a.c", "mm/b.c"]
    assert SourceSet({"lnk/a.c": "void a(void)\n{\n}\n"}, tree).candidates() == ["lnk/a.c"]


def test_a_partial_image_looks_up_its_own_file_in_the_tree_before_a_namesake(
    tmp_path: Path,
) -> None:
    # mm/pool_b.c's image shows only a hunk; pool_shrink() is defined in the
    # tree's mm/pool_b.c and, for another build, in mm/pool_a.c as well
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "pool_a.c").write_text(
        "int pool_shrink(struct pool *p)\n{\n\tpool_a_drain(p);\n\treturn 0;\n}\n"
    )
    (tmp_path / "mm" / "pool_b.c").write_text(
        "int pool_shrink(struct pool *p)\n{\n\tpool_b_flush(p);\n\treturn 0;\n}\n\n"
        "void pool_offline(struct pool *p)\n{\n\tpool_shrink(p);\n}\n"
    )
    hunk = "\n" * 6 + "void pool_offline(struct pool *p)\n{\n\tpool_shrink(p);\n}\n"
    partial = SourceView({"mm/pool_b.c": hunk}, str(tmp_path), partial=True)
    (found,) = partial.definitions("pool_shrink", "mm/pool_b.c")
    assert [c.name for c in found.calls] == ["pool_b_flush"]
    # a whole image is the file: nothing else is consulted for it
    whole = SourceView({"mm/pool_b.c": hunk}, str(tmp_path))
    (other,) = whole.definitions("pool_shrink", "mm/pool_b.c")
    assert [c.name for c in other.calls] == ["pool_a_drain"]


def test_arms_that_each_open_a_block_keep_the_first_arm_only() -> None:
    text = (
        "int f(struct pool *p)\n{\n"
        "#ifdef CONFIG_POOL_DEBUG\n\tif (p->debug && p->ready) {\n"
        "#else\n\tif (p->ready) {\n#endif\n"
        "\t\treturn 1;\n\t}\n\treturn 0;\n}\n"
    )
    code = csource.code_text(text)
    assert len(code.data) == len(text.encode())
    assert "p->debug && p->ready" in code.text and "if (p->ready)" not in code.text
    assert code.arms == ()  # nothing of the second arm is left to skip
    assert "ERROR" not in str(csource.parse_code(text).root_node)


def test_balanced_arms_are_both_code_and_the_later_one_is_marked() -> None:
    text = (
        "void f(struct obj *o)\n{\n"
        "#ifdef CONFIG_OBJ /* a comment with { */\n\tkfree(o);\n"
        "#elif defined(CONFIG_OTHER)\n\tvfree(o);\n"
        "#else\n\to->ready = 1;\n#endif\n"
        '\tpr_info("}");\n}\n'
    )
    code = csource.code_text(text)
    data = text.encode()
    assert len(code.data) == len(data) and "#" not in code.text
    # the #elif and the #else arm (the configured build runs the first)
    assert [data[a:b].decode() for a, b in code.arms] == ["\tvfree(o);\n", "\to->ready = 1;\n"]
    (flow,) = flow_build.flows_in_text(text, "mm/f.c")
    assert {c.name for c in flow.calls} == {"kfree", "vfree", "pr_info"}
    arms = [n for n in flow.nodes.values() if n.kind == "arm"]
    assert len(arms) == 2


def test_an_unterminated_group_in_a_partial_image_keeps_every_line() -> None:
    text = "\tkfree(o);\n#else\n\tif (x) {\n"
    code = csource.code_text(text)
    assert code.arms == () and "if (x) {" in code.text and "#else" not in code.text


def test_kept_parses_are_bounded_by_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    csource.forget_trees()
    monkeypatch.setattr(csource, "_TREES_MAX", 2)
    texts = [f"int f{i}(void)\n{{\n\treturn {i};\n}}\n" for i in range(3)]
    first = csource.code_tree(texts[0])
    assert csource.code_tree(texts[0]) is first  # kept
    for text in texts[1:]:
        csource.code_tree(text)
    assert len(csource._TREES) == 2 and csource.code_tree(texts[0]) is not first
    assert csource._TREES_BYTES[0] == sum(len(c.data) for _, c in csource._TREES.values())
    monkeypatch.setattr(csource, "_TREES_MAX_BYTES", 1)
    csource.code_tree(texts[1])
    csource.code_tree("int g(void);\n")
    assert len(csource._TREES) == 1  # over the byte bound: only the newest stays
    csource.forget_trees()
    assert csource._TREES_BYTES[0] == 0


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("x = obj_get (o);", "obj_get"),
        ("x = my_obj_get(o);", "obj_get"),
        ("obj_get\n\t(o)", "obj_get"),
        ("obj_getter(o)", "obj_get"),
        ("/* obj_get */ obj_get(a); obj_get(b);", "obj_get"),
        ("", "f"),
        ("f", "f"),
    ],
)
def test_calls_spelled_agrees_with_the_pattern(text: str, name: str) -> None:
    import re

    count = len(re.findall(rf"\b{re.escape(name)}\s*\(", text))
    for more_than in range(3):
        assert csource.calls_spelled(text, name, more_than=more_than) == (count > more_than)
