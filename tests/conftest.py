"""Shared fixtures. The corpus is read in place from BOT_CORPUS_DIR (default
../shared/corpus); tests that need it skip cleanly when it is absent."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

import bot.apply.scratch
import bot.apply.series
import bot.apply.strategies
from bot.apply.gitcmd import GitResult, git
from bot.config import load_settings

# Reviews in tests never share bot.cache entries with the user's own cache (or with
# an earlier test run): one private directory for this pytest process, inherited by
# the CLI and worker subprocesses tests start. Tests of the cache set their own.
# Under pytest-xdist each worker process makes its own too (the one the controller
# made is inherited, marked with the controller's pid), so no two tests running at
# once share one.
_CACHE_OWNER = "MMLC_TEST_CACHE_OWNER"
if "BOT_CACHE_DIR" not in os.environ or (
    os.environ.get(_CACHE_OWNER) not in (None, str(os.getpid()))
    and os.environ.get("PYTEST_XDIST_WORKER")
):
    os.environ["BOT_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmlc-test-cache-")
    os.environ[_CACHE_OWNER] = str(os.getpid())
    atexit.register(shutil.rmtree, os.environ["BOT_CACHE_DIR"], True)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def corpus_path() -> Path:
    return load_settings().corpus_dir


@pytest.fixture
def corpus() -> Path:
    """The shared corpus directory; skips the test when it is not there."""
    path = corpus_path()
    if not (path / "README.md").is_file():
        pytest.skip(f"corpus not found at {path} (set BOT_CORPUS_DIR)")
    return path


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The git subcommands apply_series runs (the real git still runs them)."""
    calls: list[str] = []

    def recording(
        args: Sequence[str], cwd: Path | str, *, stdin: bytes | None = None, check: bool = False
    ) -> GitResult:
        calls.append(args[0])
        return git(args, cwd, stdin=stdin, check=check)

    # every module of apply_series that runs git itself
    for module in (bot.apply.scratch, bot.apply.strategies, bot.apply.series):
        monkeypatch.setattr(module, "git", recording)
    return calls


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test), the files with integration tests (real
    Redis, workers, servers) go first, then those reading the corpus, then the
    rest, each file's tests in their own order: a worker that takes a long file
    last would otherwise run it alone while the other has finished. Every worker
    sorts alike, as xdist requires; a run in one process keeps the file order."""
    del config
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank: dict[str, int] = {}
    for item in items:
        path = str(item.path)
        if item.get_closest_marker("integration") is not None:
            weight = 0
        elif item.get_closest_marker("corpus") is not None or "corpus" in getattr(
            item, "fixturenames", ()
        ):
            weight = 1
        else:
            weight = 2
        rank[path] = min(rank.get(path, 2), weight)
    order = {id(item): n for n, item in enumerate(items)}
    items.sort(key=lambda item: (rank[str(item.path)], order[id(item)]))
