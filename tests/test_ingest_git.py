"""A git revision range becomes one numbered, threaded message per commit."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from unidiff.patch import PatchSet

from bot.assemble import assemble
from bot.config import load_settings
from bot.errors import InputError, TooLargeError
from bot.ingest import load

_C_V1 = """#include <linux/slab.h>

static struct kmem_cache *foo_cache;

int foo_init(void)
{
\tfoo_cache = KMEM_CACHE(foo, 0);
\treturn foo_cache ? 0 : -ENOMEM;
}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo with a base commit and two commits that touch mm/foo.c."""
    path = tmp_path / "linux"
    r = git.Repo.init(path)
    with r.config_writer() as cw:
        cw.set_value("user", "name", "Ada Hacker")
        cw.set_value("user", "email", "ada@example.org")
    src = path / "mm" / "foo.c"
    src.parent.mkdir()
    src.write_text(_C_V1)
    r.index.add(["mm/foo.c"])
    r.index.commit("mm/foo: add the foo cache")
    src.write_text(_C_V1 + "\nvoid foo_exit(void)\n{\n}\n")
    r.index.add(["mm/foo.c"])
    r.index.commit("mm/foo: add foo_exit()\n\nSigned-off-by: Ada Hacker <ada@example.org>")
    src.write_text(_C_V1 + "\nvoid foo_exit(void)\n{\n\tkmem_cache_destroy(foo_cache);\n}\n")
    r.index.add(["mm/foo.c"])
    r.index.commit(
        "mm/foo: destroy the cache on exit\n\nSigned-off-by: Ada Hacker <ada@example.org>"
    )
    return path


def test_git_range_gives_one_numbered_message_per_commit(repo: Path) -> None:
    settings = load_settings()
    messages = load(["HEAD~2..HEAD"], settings, repo=str(repo))
    assert len(messages) == 2
    assert messages[0].subject == "[PATCH 1/2] mm/foo: add foo_exit()"
    assert messages[1].subject == "[PATCH 2/2] mm/foo: destroy the cache on exit"
    assert messages[1].in_reply_to == messages[0].message_id


def test_git_range_assembles_into_one_series_with_diffs(repo: Path) -> None:
    settings = load_settings()
    series_set = assemble(load(["HEAD~2..HEAD"], settings, repo=str(repo)), settings)
    (series,) = series_set.series
    assert series.total == 2 and series.complete
    last = PatchSet(series.patches[1].diff)
    assert [f.path for f in last] == ["mm/foo.c"]
    assert last[0].added == 1
    assert "kmem_cache_destroy(foo_cache);" in series.patches[1].diff
    assert series.patches[1].title == "mm/foo: destroy the cache on exit"
    assert "Signed-off-by: Ada Hacker" in series.patches[1].commit_message


def test_git_range_with_unknown_revision_is_a_one_line_input_error(repo: Path) -> None:
    with pytest.raises(InputError, match="git format-patch failed") as info:
        load(["nosuchref..HEAD"], load_settings(), repo=str(repo))
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize("bad", ["--output-directory=/tmp..HEAD", "HEAD~1..HEAD;id", "..HEAD"])
def test_git_range_that_could_be_an_option_or_shell_is_refused(repo: Path, bad: str) -> None:
    with pytest.raises(InputError):
        load([bad], load_settings(), repo=str(repo))


def test_empty_git_range_is_refused(repo: Path) -> None:
    with pytest.raises(InputError, match="no commits in range"):
        load(["HEAD..HEAD"], load_settings(), repo=str(repo))


def test_repository_config_cannot_change_the_patch_shape(repo: Path) -> None:
    with git.Repo(repo).config_writer() as cw:
        cw.set_value("diff", "noprefix", "true")
        cw.set_value("format", "coverLetter", "true")
    messages = load(["HEAD~2..HEAD"], load_settings(), repo=str(repo))
    assert len(messages) == 2  # no cover letter added
    assert "diff --git a/mm/foo.c b/mm/foo.c" in messages[0].body


def test_range_in_a_directory_that_is_not_a_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"git format-patch failed: .*not a git repository"):
        load(["HEAD~1..HEAD"], load_settings(), repo=str(tmp_path))


def test_range_output_over_the_size_limit_is_refused(repo: Path) -> None:
    with pytest.raises(TooLargeError):
        load(["HEAD~2..HEAD"], load_settings().with_(max_input_bytes=200), repo=str(repo))
