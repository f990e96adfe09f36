"""bot.review_cache: a review on a plain tree is read back while the tree still
answers every question it asked the same way, and computed again otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cache, pipeline, safefs
from bot.config import load_settings
from bot.model import Review
from bot.report import render

from .conftest import ROOT

EXAMPLE = ROOT / "examples" / "objpool"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    before = cache.active()
    directory = tmp_path / "cache"
    cache.configure(directory)
    yield directory
    cache.flush()
    cache.configure(before)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    dest = tmp_path / "tree"
    shutil.copytree(EXAMPLE / "tree", dest)
    return dest


class _Counted:
    """pipeline._computed, counting the reviews actually computed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._real = pipeline._computed
        monkeypatch.setattr(pipeline, "_computed", self)

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self._real(*args, **kwargs)  # type: ignore[arg-type]


def _review(cache_dir: Path, tree: Path) -> Review:
    settings = load_settings().with_(cache_dir=cache_dir)
    review = pipeline.review_inputs([str(EXAMPLE / "series.mbox")], settings, tree=str(tree))
    cache.flush()
    return review


def test_the_same_series_on_the_same_tree_is_read_back_as_the_same_review(
    cache_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = _Counted(monkeypatch)
    first = _review(cache_dir, tree)
    assert first.reportable
    again = _review(cache_dir, tree)
    assert computed.calls == 1
    assert render(again, "json", color=False) == render(first, "json", color=False)
    assert render(again, "text", color=False) == render(first, "text", color=False)


def test_a_file_touched_but_not_changed_still_gives_the_same_answer(
    cache_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = _Counted(monkeypatch)
    _review(cache_dir, tree)
    for path in tree.rglob("*"):
        os.utime(path, (1, 1))
    _review(cache_dir, tree)
    assert computed.calls == 1


@pytest.mark.parametrize("path", ["mm/objpool.c", "include/linux/objpool.h"])
def test_an_edited_tree_file_the_review_read_is_reviewed_again(
    cache_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    computed = _Counted(monkeypatch)
    _review(cache_dir, tree)
    with (tree / path).open("a", encoding="utf-8") as f:
        f.write("\n/* edited */\n")
    _review(cache_dir, tree)
    assert computed.calls == 2


def test_a_new_file_beside_the_touched_one_is_reviewed_again(
    cache_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the analysis lists the touched file's directory for definitions
    computed = _Counted(monkeypatch)
    _review(cache_dir, tree)
    (tree / "mm" / "other.c").write_text("void other(void)\n{\n}\n", encoding="utf-8")
    _review(cache_dir, tree)
    assert computed.calls == 2


def test_a_git_tree_and_no_cache_keep_nothing(
    cache_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = _Counted(monkeypatch)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@invalid"]
    subprocess.run([*git, "init", "-q", str(tree)], check=True)
    subprocess.run([*git, "-C", str(tree), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(tree), "commit", "-qm", "base"], check=True)
    _review(cache_dir, tree)
    _review(cache_dir, tree)
    assert computed.calls == 2
    settings = load_settings().with_(cache_dir=None)
    cache.configure(None)
    for _ in range(2):
        pipeline.review_inputs([str(EXAMPLE / "series.mbox")], settings, tree=str(tree))
    assert computed.calls == 4


def test_a_file_that_changes_while_a_review_reads_it_makes_the_journal_unstable(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.c").write_text("int a;\n", encoding="utf-8")
    with safefs.asked() as journal:
        assert safefs.read_tree_text(str(tmp_path), "a.c") == "int a;\n"
        (tmp_path / "a.c").write_text("int b;\n", encoding="utf-8")
        os.utime(tmp_path / "a.c", ns=(1, 1))
        assert safefs.read_tree_text(str(tmp_path), "a.c") == "int b;\n"
    assert journal.unstable
    assert not safefs.still_true(journal.answers)


def test_still_true_asks_each_kind_of_question_again(tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "a.c").write_text("int a;\n", encoding="utf-8")
    with safefs.asked() as journal:
        safefs.read_tree_text(str(tmp_path), "mm/a.c")
        safefs.read_tree_text(str(tmp_path), "mm/missing.h")
        safefs.tree_listing(str(tmp_path), "mm", (".c", ".h"))
        safefs.tree_is_file(tmp_path, "mm/a.c")
        safefs.note_copy(tmp_path, "mm/a.c", b"int a;\n", 0o644)
    os.chmod(tmp_path / "mm" / "a.c", 0o644)
    assert not journal.unstable and safefs.still_true(journal.answers)
    (tmp_path / "mm" / "missing.h").write_text("", encoding="utf-8")
    assert not safefs.still_true(journal.answers)
