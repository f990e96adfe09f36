"""`bot review --guess-base`: the base found from the patches' index lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import git
import pytest

from bot.apply.guess_base import guess_base, preimage_blobs
from bot.assemble import assemble, select
from bot.config import load_settings
from bot.errors import InputError
from bot.ingest import load

ROOT = Path(__file__).resolve().parent.parent

BODY = """\
#include <linux/slab.h>

struct widget {
\tint refs;
};

void widget_put(struct widget *w)
{
\tif (--w->refs == 0)
\t\tkfree(w);
}
"""


def _history(tmp_path: Path) -> tuple[Path, list[str], str]:
    """A repo of four commits; the patch is written against the second."""
    repo_dir = tmp_path / "linux"
    repo = git.Repo.init(repo_dir, initial_branch="master")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "T")
        cw.set_value("user", "email", "t@example.org")
    src = repo_dir / "mm" / "widget.c"
    src.parent.mkdir()
    other = repo_dir / "mm" / "other.c"
    commits: list[str] = []
    versions = [BODY.replace("int refs;", "int refs; /* v0 */"), BODY]
    for i, text in enumerate(versions):
        src.write_text(text)
        other.write_text(f"int other = {i};\n")
        repo.index.add(["mm/widget.c", "mm/other.c"])
        commits.append(repo.index.commit(f"commit {i}").hexsha)
    # the patch, against commit 1
    src.write_text(BODY.replace("\t\tkfree(w);\n", "\t\treturn;\n"))
    patch = repo.git.diff("--full-index", "HEAD", "--", "mm/widget.c")
    repo.git.checkout("--", "mm/widget.c")
    # two later commits: one touches another file only, one changes widget.c
    other.write_text("int other = 9;\n")
    repo.index.add(["mm/other.c"])
    commits.append(repo.index.commit("commit 2: other only").hexsha)
    src.write_text(BODY + "\nint widget_count;\n")
    repo.index.add(["mm/widget.c"])
    commits.append(repo.index.commit("commit 3: widget again").hexsha)
    mail = tmp_path / "p.eml"
    mail.write_text(
        "From: Dev <dev@example.org>\nSubject: [PATCH] mm/widget: stop freeing\n"
        "Message-ID: <p1@example.org>\nDate: Tue, 14 Nov 2023 10:00:00 +0000\n\n"
        "Stop freeing.\n\nSigned-off-by: Dev <dev@example.org>\n---\n" + patch + "\n"
    )
    return repo_dir, commits, str(mail)


def _series(mail: str):  # type: ignore[no-untyped-def]
    settings = load_settings()
    series, _, _ = select(assemble(load([mail], settings), settings))
    return series


def test_the_newest_commit_whose_blobs_match_is_the_base(tmp_path: Path) -> None:
    repo, commits, mail = _history(tmp_path)
    series = _series(mail)
    assert set(preimage_blobs(series)) == {"mm/widget.c"}
    guess = guess_base(repo, series)
    # commit 2 changed only other.c, so widget.c's blob there still matches: newest wins
    assert guess.commit == commits[2]
    assert guess.looked_at == 2 and guess.files == 1
    assert commits[2][:12] in guess.note and "1 commit(s) below HEAD" in guess.note


def test_no_match_within_the_bound_says_so(tmp_path: Path) -> None:
    repo, _, mail = _history(tmp_path)
    guess = guess_base(repo, _series(mail), max_commits=1)
    assert guess.commit is None and "none of the last 1 commits" in guess.note


def test_a_plain_directory_is_refused(tmp_path: Path) -> None:
    _, _, mail = _history(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InputError, match="needs a git tree"):
        guess_base(plain, _series(mail))


def test_cli_applies_at_the_guessed_base_and_says_so(tmp_path: Path) -> None:
    repo, commits, mail = _history(tmp_path)
    cmd = [sys.executable, "-m", "bot", "review", mail, "--tree", str(repo), "--guess-base"]
    proc = subprocess.run(
        [*cmd, "--format", "json", "--no-simulate"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["base_commit"] == commits[2]
    assert doc["patches"][0]["applied"]["ok"]
    assert any(n.startswith(f"--guess-base: applied on {commits[2][:12]}") for n in doc["notes"])
    bad = subprocess.run(
        [sys.executable, "-m", "bot", "review", mail, "--guess-base"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2 and "--guess-base needs --tree" in bad.stderr
