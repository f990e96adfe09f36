"""Hostile git trees (issue 12): the user's tree's own config must not run code,
and a symlink beside a touched file must not crash a review. Real git, real
repositories, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.apply.gitcmd import foreign_config
from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"


def git_run(repo: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )


def git_tree(tmp_path: Path) -> Path:
    """The example tree as a git repository with one commit."""
    repo = tmp_path / "tree"
    shutil.copytree(EXAMPLE / "tree", repo)
    git_run(repo, "init", "-q")
    return repo


def commit_all(repo: Path) -> None:
    git_run(repo, "add", "-A")
    git_run(repo, "commit", "-q", "-m", "base")


def review(tree: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object], str]:
    code = main(
        [
            "review",
            str(EXAMPLE / "series.mbox"),
            "--tree",
            str(tree),
            "--format",
            "json",
            "--no-cache",
        ]
    )
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else {}), err


def findings(doc: dict[str, object]) -> list[str]:
    found = doc.get("findings")
    assert isinstance(found, list)
    return sorted(f["rule_id"] for f in found if f["status"] == "introduced")


def test_symlink_beside_a_touched_file_is_reviewed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = git_tree(tmp_path)
    (repo / "mm" / "zlink.c").symlink_to("objpool.c")  # a sibling of the touched file
    (repo / "include" / "alink").symlink_to("/etc")
    commit_all(repo)
    code, doc, err = review(repo, capsys)
    assert code == 1, err
    assert "MMLC001" in findings(doc)


def test_symlink_on_a_touched_path_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = git_tree(tmp_path)
    real = repo / "realmm"
    (repo / "mm").rename(real)
    (repo / "mm").symlink_to("realmm")
    commit_all(repo)
    code, _, err = review(repo, capsys)
    assert code == 2
    assert "symlink mm" in err


def _evil_tree(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A tree whose .git/config defines filters (clean, smudge, process) that
    would leave marker files, applied by .gitattributes to the touched files, and
    an uncommitted edit so `git diff HEAD` must clean a work-tree file."""
    repo = git_tree(tmp_path)
    (repo / ".gitattributes").write_text("*.c filter=evil\n*.h filter=ev.il\n")
    commit_all(repo)
    markers = [tmp_path / name for name in ("clean", "smudge", "process", "clean2")]
    git_run(repo, "config", "filter.evil.clean", f"touch {markers[0]}; cat")
    git_run(repo, "config", "filter.evil.smudge", f"touch {markers[1]}; cat")
    git_run(repo, "config", "filter.evil.process", f"touch {markers[2]}; exit 1")
    git_run(repo, "config", "filter.ev.il.clean", f"touch {markers[3]}; cat")
    with (repo / "mm" / "objpool.c").open("a") as fh:
        fh.write("/* local edit */\n")
    with (repo / "include" / "linux" / "objpool.h").open("a") as fh:
        fh.write("/* local edit */\n")
    os.utime(repo / "mm" / "objpool.c", (0, 0))  # stat differs from the index
    return repo, markers


def test_tree_git_config_filters_do_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, markers = _evil_tree(tmp_path)
    code, doc, err = review(repo, capsys)
    assert [m.name for m in markers if m.exists()] == []
    assert code == 1, err
    assert "MMLC001" in findings(doc)
    notes = doc.get("notes")
    assert isinstance(notes, list)
    assert any("uncommitted changes in the tree" in n for n in notes)


def test_foreign_config_names_every_filter(tmp_path: Path) -> None:
    repo, _ = _evil_tree(tmp_path)
    opts = foreign_config(repo)
    for name in ("evil", "ev.il"):
        for var in ("clean", "smudge", "process"):
            assert f"filter.{name}.{var}=" in opts
        assert f"filter.{name}.required=false" in opts
