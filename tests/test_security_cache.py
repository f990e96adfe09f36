"""The on-disk cache cannot run code and cannot crash a review (issue 12): a
planted pickle is never loaded, an entry naming a class outside the bot is a
miss, and an entry of the wrong type is a miss (the review is the same as with
no cache, not exit 3)."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cache, plaindata
from bot.analyze.flow import Flow, Return

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    before = cache.active()
    directory = tmp_path / "cache"
    cache.configure(directory)
    yield directory
    cache.flush()
    cache.configure(before)


class _Boom:
    """Pickles to a call of os.system: what a planted entry would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _store_raw(directory: Path, namespace: str, key: str, data: bytes) -> None:
    """Write `data` as the entry of (namespace, key), as another writer would."""
    cache.put(namespace, key, None)
    cache.flush()
    full = cache._full_key(namespace, key)
    with sqlite3.connect(directory / cache.DB_NAME) as db:
        db.execute("UPDATE entries SET value = ? WHERE key = ?", (data, full))
    cache.configure(None)
    cache.configure(directory)


def test_a_planted_pickle_is_never_loaded(cache_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _store_raw(cache_dir, "flow", "k", pickle.dumps((_Boom(marker),)))
    assert cache.get("flow", "k") is None
    assert cache.cached("flow", "k", lambda: "computed") == "computed"
    assert not marker.exists()


def _entry(classes: list[list[object]], body: object) -> bytes:
    """A hand-made entry in the format plaindata writes (header line, value line)."""
    return json.dumps([plaindata.FORMAT, classes]).encode() + b"\n" + json.dumps(body).encode()


def test_the_hand_made_entries_below_are_in_the_format_written() -> None:
    from bot.analyze.flow import Return

    made = _entry(
        [["bot.analyze.flow", "Return", ["expr", "line", "at"]]],
        {"t": [{"0": ["x", 3, {"t": [0, 0]}]}]},
    )
    assert plaindata.loads(made) == (Return("x", 3),)
    assert plaindata.loads(plaindata.dumps((Return("x", 3),))) == (Return("x", 3),)


def test_an_entry_naming_a_class_outside_the_bot_is_a_miss(cache_dir: Path) -> None:
    for module, qual in (("os", "system"), ("subprocess", "Popen"), ("builtins", "eval")):
        _store_raw(cache_dir, "flow", "k", _entry([[module, qual, []]], {"t": [{"0": []}]}))
        assert cache.get("flow", "k") is None
    # a name the bot module merely imports is not a class of the bot
    _store_raw(cache_dir, "flow", "k", _entry([["bot.cache", "Path", []]], {"t": [{"0": []}]}))
    assert cache.get("flow", "k") is None
    # a dunder attribute cannot be set either (it would change the class)
    doc = _entry([["bot.analyze.flow", "Flow", ["__class__"]]], {"t": [{"0": [1]}]})
    _store_raw(cache_dir, "flow", "k", doc)
    assert cache.get("flow", "k") is None


@pytest.mark.parametrize(
    "body",
    [
        {"t": [{"r": -1}]},  # a reference before the first value
        {"t": [{"r": 5}]},  # a reference to no value
        {"t": [{"0": ["x"]}]},  # an object with too few attributes
        {"t": [{"0": ["x", 3, {"t": [0, 0]}], "t": []}]},  # a node of two keys
        {"t": [{"e": [0, "x"]}]},  # an enum member of a class that is no enum
        {"t": [{"q": []}]},  # an unknown tag
        {"t": "abc"},  # a tuple of no list
    ],
)
def test_a_malformed_entry_is_refused(body: object) -> None:
    header = [["bot.analyze.flow", "Return", ["expr", "line", "at"]]]
    # the header itself is sound: the body alone makes the entry bad
    assert plaindata.loads(_entry(header, {"t": [{"0": ["x", 3, {"t": [0, 0]}]}]})) == (
        Return("x", 3),
    )
    with pytest.raises(ValueError):
        plaindata.loads(_entry(header, body))


def test_an_entry_of_the_earlier_format_is_a_miss(cache_dir: Path) -> None:
    doc = {"v": 1, "c": [], "x": ["t", None]}
    _store_raw(cache_dir, "flow", "k", json.dumps(doc).encode())
    assert cache.get("flow", "k") is None


def test_a_value_of_the_wrong_type_is_a_miss(cache_dir: Path) -> None:
    cache.put("sim-facts", "k", "not the facts of a file")
    cache.put("rules", "k", ("not a rule",))
    cache.flush()
    assert cache.get("sim-facts", "k") is None
    assert cache.get("rules", "k") is None
    assert cache.get("sim-facts", "none") is None
    cache.put("sim-facts", "none", None)
    assert cache.get("sim-facts", "none") == (None,)


def test_values_round_trip_keeping_shared_objects() -> None:
    from bot.analyze.flow import flow_of_definition

    flow = flow_of_definition(
        "int f(int a)\n{\n\twhile (a)\n\t\tg(a--);\n\treturn 0;\n}\n", "x.c", 1
    )
    assert isinstance(flow, Flow)
    back = plaindata.loads(plaindata.dumps((flow, flow)))
    assert isinstance(back, tuple) and back[0] is back[1]
    assert back[0] == flow
    # the calls are the node events' own objects, after a round trip too
    (call,) = back[0].calls
    assert any(ev is call for node in back[0].nodes.values() for ev in node.events)


def test_a_cycle_or_a_shared_list_is_not_stored(cache_dir: Path) -> None:
    from bot.analyze.flow import Node

    node = Node(id=1)
    node.events.append(node)  # type: ignore[arg-type]
    with pytest.raises(plaindata.Unencodable):
        plaindata.dumps(node)
    shared: list[object] = []
    with pytest.raises(plaindata.Unencodable):
        plaindata.dumps((shared, shared))
    cache.put("demo", "cycle", node)
    cache.flush()
    assert cache.get("demo", "cycle") is None


def _review(cache_dir: Path) -> tuple[int, str]:
    env = {**os.environ, "BOT_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from bot.cli import main; sys.exit(main(sys.argv[1:]))",
            "review",
            str(EXAMPLE / "series.mbox"),
            "--tree",
            str(EXAMPLE / "tree"),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_a_cache_of_wrong_typed_entries_gives_the_same_review(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    code, clean = _review(directory)
    assert code == 1, clean
    with sqlite3.connect(directory / cache.DB_NAME) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM entries")]
        assert keys
        junk = plaindata.dumps(({"junk": 1},))
        db.executemany("UPDATE entries SET value = ? WHERE key = ?", [(junk, k) for k in keys])
    code, again = _review(directory)
    assert (code, again) == (1, clean)
