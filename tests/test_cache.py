"""bot.cache: the private on-disk cache of loaded rules and vocabulary."""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cache
from bot.analyze import api, cfunc, csource, engine, flow_index, flow_source
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
    cache.flush()
    cache.configure(before)
    engine._load_rules_cached.cache_clear()
    api._load_cached.cache_clear()


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", dest)
    return dest


def _entries(directory: Path, namespace: str) -> list[str]:
    """Keys stored (flushed) in the cache database under `namespace`."""
    cache.flush()
    db_path = directory / cache.DB_NAME
    if not db_path.exists():
        return []
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT key FROM entries WHERE key LIKE ?", (f"{namespace}:%",))
        return sorted(r[0] for r in rows)


def _forget_process() -> None:
    """Write pending entries and reopen, as a new process would."""
    cache.flush()
    directory = cache.active()
    cache.configure(None)
    cache.configure(directory)


def test_cached_computes_once_then_reads_the_disk(cache_dir: Path) -> None:
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"answer": 42}

    assert cache.cached("demo", "k1", compute) == {"answer": 42}
    assert cache.cached("demo", "k1", compute) == {"answer": 42}
    assert len(calls) == 1
    _forget_process()
    assert cache.cached("demo", "k1", compute) == {"answer": 42}
    assert len(calls) == 1
    assert cache.cached("demo", "k2", compute) == {"answer": 42}
    assert len(calls) == 2
    assert len(_entries(cache_dir, "demo")) == 2
    assert (cache_dir.stat().st_mode & 0o777) == 0o700
    assert ((cache_dir / cache.DB_NAME).stat().st_mode & 0o777) == 0o600


def test_a_stored_none_is_a_hit(cache_dir: Path) -> None:
    calls: list[int] = []
    for _ in range(2):
        _forget_process()
        assert cache.cached("demo", "none", lambda: calls.append(1)) is None
    assert len(calls) == 1


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
    (key,) = _entries(cache_dir, "demo")
    for junk in (b"\x80\x05garbage", b"not a pickle", pickle.dumps([1, 2, 3])):
        with sqlite3.connect(cache_dir / cache.DB_NAME) as db:
            db.execute("UPDATE entries SET value = ? WHERE key = ?", (junk, key))
        _forget_process()
        assert cache.cached("demo", "k", lambda: [4]) == [4]
        cache.flush()


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
            cache.flush()
        assert len(calls) == 2
        assert list(shared.iterdir()) == []
    finally:
        cache.configure(before)


def test_a_database_others_may_write_is_not_used(cache_dir: Path) -> None:
    cache.cached("demo", "k", lambda: "v")
    cache.flush()
    (cache_dir / cache.DB_NAME).chmod(0o666)
    _forget_process()
    calls: list[int] = []
    assert cache.cached("demo", "k", lambda: calls.append(1) or "w") == "w"
    assert calls == [1]


def test_the_oldest_entries_are_trimmed(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_BYTES", 3000)
    for i in range(6):
        cache.cached("demo", f"k{i}", lambda i=i: "x" * 1000 + str(i))
        cache.flush()
    kept = _entries(cache_dir, "demo")
    assert 1 <= len(kept) <= 3
    _forget_process()
    calls: list[int] = []
    assert cache.cached("demo", "k5", lambda: calls.append(1) or "") == "x" * 1000 + "5"
    assert calls == []


def test_parsed_functions_come_back_without_a_parse(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "static int obj_get(struct obj *o)\n{\n\treturn kref_get(&o->ref);\n}\n"
    first = cfunc.parse_functions(text, "mm/obj.c")
    _forget_process()
    cfunc._parse_cached.cache_clear()

    def no_parse(*args: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(cfunc, "ts_functions", no_parse)
    assert cfunc.parse_functions(text, "mm/obj.c") == first
    with pytest.raises(AssertionError, match="parsed again"):
        cfunc.parse_functions(text.replace("obj_get", "obj_hold"), "mm/obj.c")
    with pytest.raises(AssertionError, match="parsed again"):
        cfunc.parse_functions(text, "mm/other.c")


def test_the_cli_fills_the_cache_and_no_cache_leaves_it_alone(tmp_path: Path) -> None:
    example = ROOT / "examples" / "objpool"
    # one hash seed: this test compares outputs with and without the cache only
    env = {**os.environ, "BOT_CACHE_DIR": str(tmp_path / "c1"), "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "bot", "review", str(example / "series.mbox")]
    cmd += ["--tree", str(example / "tree"), "-q", "--format", "json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 1, first.stderr
    for namespace in ("rules", "vocabulary", "cfunc", "flows-named"):
        assert _entries(tmp_path / "c1", namespace), namespace
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 1 and second.stdout == first.stdout

    env["BOT_CACHE_DIR"] = str(tmp_path / "c2")
    off = subprocess.run([*cmd, "--no-cache"], env=env, capture_output=True, text=True, check=False)
    assert off.returncode == 1 and off.stdout == first.stdout
    assert not (tmp_path / "c2").exists()


def test_tree_file_definitions_and_flows_come_back_without_a_parse(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        "static void obj_release(struct kref *ref)\n{\n\tkfree(ref);\n}\n\n"
        "void obj_put(struct obj *o)\n{\n\tif (o)\n\t\tkref_put(&o->ref, obj_release);\n}\n"
    )
    view = flow_source.SourceView({"mm/obj.c": text}, None)
    first = view.definitions("obj_put", "mm/obj.c")
    assert [f.name for f in first] == ["obj_put"]
    _forget_process()
    flow_index.file_index.cache_clear()
    csource.forget_trees()

    def no_parse(*args: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(flow_index, "code_tree", no_parse)
    again = flow_source.SourceView({"mm/obj.c": text}, None).definitions("obj_put", "mm/obj.c")
    assert again == first
    # a flow no earlier review built needs the parse
    with pytest.raises(AssertionError, match="parsed again"):
        flow_source.SourceView({"mm/obj.c": text}, None).definitions("obj_release", "mm/obj.c")


def test_used_bytes_fall_after_a_trim_although_the_file_does_not_shrink(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(40):
        cache.cached("demo", f"k{i}", lambda i=i: "y" * 20_000 + str(i))
    cache.flush()
    db = sqlite3.connect(cache_dir / cache.DB_NAME)
    before_used = cache._used_bytes(db)
    before_file = (cache_dir / cache.DB_NAME).stat().st_size
    monkeypatch.setattr(cache, "MAX_BYTES", before_used // 2)
    cache.cached("demo", "last", lambda: "z")
    cache.flush()
    after_used = cache._used_bytes(db)
    assert after_used <= before_used // 2
    assert (cache_dir / cache.DB_NAME).stat().st_size >= before_file // 2
    db.close()
