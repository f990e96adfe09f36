"""Reading the user's tree (issue 12): a patch's `#include "../../x"` or
`#include </abs/path>` must not make the rule engine or the simulator read a
file outside the tree, a symlink is never followed out, and a file edited since
it was read is read again (a warm daemon served stale text)."""

from __future__ import annotations

import os
from pathlib import Path

from bot.analyze.flow_source import SourceView
from bot.analyze.simulate.extract import SourceSet
from bot.safefs import read_tree_text, tree_listing

SECRET = "int secret_helper(void)\n{\n\treturn 42;\n}\n"


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.h").write_text(SECRET)
    tree = tmp_path / "work" / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "include" / "linux").mkdir(parents=True)
    (tree / "include" / "linux" / "ok.h").write_text("int ok(void);\n")
    (tree / "mm" / "link.h").symlink_to(outside / "secret.h")
    (tree / "mm" / "inner.h").symlink_to("../include/linux/ok.h")
    (tree / "include" / "out").symlink_to(outside)
    return tree, outside / "secret.h"


def test_the_rule_engine_reads_nothing_outside_the_tree(tmp_path: Path) -> None:
    tree, secret = _layout(tmp_path)
    patch = (
        '#include "../../../outside/secret.h"\n'
        f'#include "{secret}"\n'
        "#include <out/secret.h>\n"
        '#include "link.h"\n'
        "void f(void)\n{\n\tsecret_helper();\n}\n"
    )
    view = SourceView({"mm/f.c": patch}, str(tree))
    for path in (
        "../outside/secret.h",
        "mm/../../outside/secret.h",
        str(secret),
        "include/" + str(secret),  # `#include </abs>` as the view spells it: tree-relative
        "include/out/secret.h",
        "mm/link.h",
        "mm/inner.h",  # a symlink inside the tree is not followed either
    ):
        assert view.text(path) is None, path
    assert view.definitions("secret_helper", "mm/f.c") == ()
    assert view.text("include/linux/ok.h") == "int ok(void);\n"
    assert view.text("mm/../include/linux/ok.h") == "int ok(void);\n"


def test_the_simulator_reads_nothing_outside_the_tree(tmp_path: Path) -> None:
    tree, secret = _layout(tmp_path)
    src = SourceSet({"mm/f.c": '#include "../../outside/secret.h"\n'}, tree)
    for path in ("../outside/secret.h", str(secret), "include/out/secret.h", "mm/link.h"):
        assert src.text(path) is None, path
    assert src.text("include/linux/ok.h") == "int ok(void);\n"


def test_reads_are_bounded_and_special_files_are_not_read(tmp_path: Path) -> None:
    tree, _ = _layout(tmp_path)
    (tree / "mm" / "big.c").write_text("x" * 1000)
    assert read_tree_text(str(tree), "mm/big.c", max_bytes=999) is None
    assert read_tree_text(str(tree), "mm/big.c", max_bytes=1000) == "x" * 1000
    os.mkfifo(tree / "mm" / "fifo.c")
    assert read_tree_text(str(tree), "mm/fifo.c") is None  # returns, never blocks
    assert read_tree_text(str(tree), "mm") is None


def test_an_edited_tree_file_is_read_again(tmp_path: Path) -> None:
    tree, _ = _layout(tmp_path)
    target = tree / "mm" / "a.c"
    target.write_text("int a(void);\n")
    view = SourceView({}, str(tree))
    assert view.text("mm/a.c") == "int a(void);\n"
    target.write_text("int a(void);\nint b(void);\n")
    assert SourceView({}, str(tree)).text("mm/a.c") == "int a(void);\nint b(void);\n"
    # same size, new mtime
    target.write_text("int c(void);\nint d(void);\n")
    os.utime(target, ns=(1, 1))
    assert read_tree_text(str(tree), "mm/a.c") == "int c(void);\nint d(void);\n"
    assert tree_listing(str(tree), "mm", (".c",)) == ("mm/a.c",)
    (tree / "mm" / "b.c").write_text("")
    assert tree_listing(str(tree), "mm", (".c",)) == ("mm/a.c", "mm/b.c")
