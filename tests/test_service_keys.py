"""Every Redis key the service writes is documented, in docs/service.md and workers/state.py."""

from __future__ import annotations

import re
from pathlib import Path

import redis

from tests.fixtures.service.helpers import (
    ROOT,
    RedisServer,
    documented_keys,
    fresh_redis,
    key_patterns,
    own_redis,
    undocumented_keys,
)
from workers.state import State, StoredMessage

__all__ = ["fresh_redis", "own_redis"]


def _user_docs() -> str:
    return (ROOT / "docs" / "service.md").read_text(encoding="utf-8")


def test_the_user_docs_and_the_state_docstring_list_the_same_keys() -> None:
    in_docstring = documented_keys()
    assert len(in_docstring) >= 20
    assert key_patterns(_user_docs()) == in_docstring


def test_every_key_the_code_names_has_a_documented_first_component() -> None:
    # State.k("series", scope, key) and friends: the first component names the family
    used: set[str] = set()
    for path in [*(ROOT / "workers").glob("*.py"), ROOT / "bot" / "service_cli.py"]:
        used |= set(re.findall(r"\bk\(\s*\"([a-z-]+)\"", path.read_text(encoding="utf-8")))
    assert {"series", "result", "outbox", "push"} <= used
    documented = {pat.split(":")[1] for pat in documented_keys()}
    assert used - documented == set()


def test_a_key_outside_the_documented_families_is_reported(fresh_redis: RedisServer) -> None:
    client = redis.Redis(port=fresh_redis.port)
    try:
        state = State(client, prefix="bot")
        msg = StoredMessage("m1@x", "m1@x", "mm: t", "a@x", True, b"raw", date=1.0)
        state.store_messages("linux-mm", [msg])
        state.update_series("linux-mm", "m1@x", {"state": "incomplete"})
        state.commit_review("linux-mm", "m1@x", {"review": {}}, "ob1", {"parts": []}, 1.0)
        state.lock_outbox("ob1", 60)
        assert undocumented_keys(client) == []
        client.set("bot:scratch:thing", "1")
        client.set("other:not-ours", "1")  # another prefix is not ours to judge
        assert undocumented_keys(client) == ["bot:scratch:thing"]
    finally:
        client.close()


def test_the_key_patterns_of_a_markdown_table_are_read_with_escaped_bars(tmp_path: Path) -> None:
    text = "| `{p}:title:{list}:{author}\\|{title}` | set |\n| `{p}:metrics` | hash |\n"
    assert key_patterns(text) == {"{p}:title:{}:{}|{}", "{p}:metrics"}
