"""bot.cache: the private on-disk cache of loaded rules and vocabulary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cache
from bot.analyze import api, engine
from bot.errors import InputError

from .conftest import ROOT


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    before = cache.active()
    directory = tmp_path / "cache"
    cache.configure(directory)
    engine._load_rules_cached.cache_clear()
    api._load_cached.cache_clear()
    yield directory
    cache.configure(before)
    engine._load_rules_cached.cache_clear()
    api._load_cached.cache_clear()


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", dest)
    return dest


def _entries(directory: Path, namespace: str) -> list[Path]:
    return sorted(directory.glob(f"{namespace}-*.pickle"))


def test_cached_computes_once_then_reads_the_disk(cache_dir: Path) -> None:
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"answer": 42}

    assert cache.cached("demo", "k1", compute) == {"answer": 42}
    assert cache.cached("demo", "k1", compute) == {"answer": 42}
    assert len(calls) == 1
    assert cache.cached("demo", "k2", compute) == {"answer": 42}
    assert len(calls) == 2
    assert len(_entries(cache_dir, "demo")) == 2
    assert (cache_dir.stat().st_mode & 0o777) == 0o700


def test_rules_come_back_from_disk_and_an_edit_is_seen(cache_dir: Path, rules_copy: Path) -> None:
    first = engine.load_rules(rules_copy)
    assert len(_entries(cache_dir, "rules")) == 1
    engine._load_rules_cached.cache_clear()
    again = engine.load_rules(rules_copy)
    assert [r.id for r in again] == [r.id for r in first]
    assert again[0].message == first[0].message

    rule_file = rules_copy / first[0].id / "rule.yaml"
    text = rule_file.read_text(encoding="utf-8")
    rule_file.write_text(
        text.replace("name:", "name: edited", 1) if "name:" in text else text, encoding="utf-8"
    )
    os.utime(rule_file, ns=(rule_file.stat().st_atime_ns, rule_file.stat().st_mtime_ns + 10**9))
    engine._load_rules_cached.cache_clear()
    edited = engine.load_rules(rules_copy)
    assert edited[0].name.startswith("edited")
    assert len(_entries(cache_dir, "rules")) == 2


def test_vocabulary_round_trips(cache_dir: Path, rules_copy: Path) -> None:
    vocab = api.load_vocabulary(rules_copy)
    api._load_cached.cache_clear()
    again = api.load_vocabulary(rules_copy)
    assert again.names == vocab.names
    assert len(_entries(cache_dir, "vocabulary")) == 1


def test_a_broken_rule_is_an_error_and_nothing_is_stored(cache_dir: Path, rules_copy: Path) -> None:
    victim = next(iter(sorted(rules_copy.glob("MMLC*/rule.yaml"))))
    victim.write_text("id: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError):
        engine.load_rules(rules_copy)
    assert _entries(cache_dir, "rules") == []


def test_a_corrupt_entry_is_a_miss(cache_dir: Path) -> None:
    cache.cached("demo", "k", lambda: [1, 2, 3])
    (entry,) = _entries(cache_dir, "demo")
    entry.write_bytes(b"mmlc-cache-1\n\x80\x05garbage")
    assert cache.cached("demo", "k", lambda: [4]) == [4]
    entry.write_bytes(b"not ours at all")
    assert cache.cached("demo", "k", lambda: [5]) == [5]


def test_a_directory_others_may_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    before = cache.active()
    cache.configure(shared)
    try:
        calls: list[int] = []
        for _ in range(2):
            cache.cached("demo", "k", lambda: calls.append(1) or "v")
        assert len(calls) == 2
        assert list(shared.iterdir()) == []
    finally:
        cache.configure(before)


def test_entries_are_pruned(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    for i in range(6):
        cache.cached("demo", f"k{i}", lambda i=i: i)
    assert len(_entries(cache_dir, "demo")) == 3


def test_the_cli_fills_the_cache_and_no_cache_leaves_it_alone(tmp_path: Path) -> None:
    example = ROOT / "examples" / "objpool"
    # one hash seed: this test compares outputs with and without the cache only
    env = {**os.environ, "BOT_CACHE_DIR": str(tmp_path / "c1"), "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "bot", "review", str(example / "series.mbox")]
    cmd += ["--tree", str(example / "tree"), "-q", "--format", "json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 1, first.stderr
    assert _entries(tmp_path / "c1", "rules") and _entries(tmp_path / "c1", "vocabulary")
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 1 and second.stdout == first.stdout

    env["BOT_CACHE_DIR"] = str(tmp_path / "c2")
    off = subprocess.run([*cmd, "--no-cache"], env=env, capture_output=True, text=True, check=False)
    assert off.returncode == 1 and off.stdout == first.stdout
    assert not (tmp_path / "c2").exists()
