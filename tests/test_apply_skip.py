"""apply_series skips git subprocesses that cannot succeed, and only those: the
methods and images stay what trying every step would give."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.apply import apply_series
from bot.config import Settings, load_settings
from bot.model import ApplyMethod
from tests.test_apply import (
    APPLY,
    P1,
    P2,
    git_tree,
    needs_fuzz,
    plain_tree,
    run_git,
    series_of,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings().with_(scratch_dir=tmp_path / "scratch")


def test_plain_tree_without_the_context_or_its_blob_goes_straight_to_fuzzy_apply(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    tree = plain_tree(tmp_path)
    needs_fuzz(tree)
    applied = apply_series(series_of([APPLY / P1]), str(tree), settings)
    (app,) = applied.applications
    assert (app.method, app.ok) == (ApplyMethod.FUZZY, True)
    assert [(h.offset, h.fuzz) for h in app.hunks] == [(0, 1)]
    assert "am" not in git_calls and "apply" not in git_calls


def test_git_tree_still_merges_from_its_history_when_the_context_is_missing(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    # A clone's history holds the patch's blob (the commit before the edit): the
    # same edit that sends a plain tree to fuzzy apply is a 3-way merge here.
    tree = git_tree(tmp_path)
    needs_fuzz(tree)
    run_git(tree, "commit", "-qam", "edit context")
    applied = apply_series(series_of([APPLY / P1]), str(tree), settings)
    (app,) = applied.applications
    assert (app.method, app.ok) == (ApplyMethod.GIT_AM, True)
    assert app.message == "applied with fuzz 1 by git am -3"
    assert "am" in git_calls


def test_plain_tree_still_merges_with_git_am_when_the_scratch_holds_the_blob(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    # The tree is P1 applied, so its widget.c is the blob P2's index line names.
    # An earlier patch of the series edits a context line of P2's hunk: git apply
    # cannot, but git am -3 merges from the blob the scratch's base commit holds.
    tree = plain_tree(tmp_path)
    subprocess.run(["git", "apply", str(APPLY / P1)], cwd=tree, check=True)
    work = tmp_path / "work"
    subprocess.run(["cp", "-r", str(tree), str(work)], check=True)
    run_git(work, "init", "-q", "-b", "master")
    run_git(work, "add", "-A")
    run_git(work, "commit", "-q", "-m", "base")
    widget = work / "mm" / "widget.c"
    widget.write_text(
        widget.read_text().replace(
            "static int __init widget_init(void)\n{\n",
            "static int __init widget_init(void)\n{ /* init */\n",
        )
    )
    run_git(work, "commit", "-qam", "mm/widget: mark widget_init")
    run_git(work, "format-patch", "-q", "-1", "-o", str(tmp_path / "out"))
    (edit,) = sorted((tmp_path / "out").iterdir())
    applied = apply_series(series_of([edit, APPLY / P2]), str(tree), settings)
    first, second = applied.applications
    assert (first.method, first.ok) == (ApplyMethod.GIT_AM, True)
    assert (second.method, second.ok) == (ApplyMethod.GIT_AM, True)
    assert second.message == "applied with fuzz 2 by git am -3"
    image = applied.images[1].image("mm/widget.c")
    assert image is not None and image.post is not None
    assert "void widget_flush(struct widget *w)" in image.post and "{ /* init */" in image.post
