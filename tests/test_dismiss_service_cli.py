"""`bot dismiss --service`: the service's dismissals (Redis) listed and undone from the
CLI, as real `bot` processes against a redis-server of the test's own, found the way
`bot outbox list` finds it (BOT_BROKER_URL, else the `bot serve` broker record)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.dismiss import ReviewRecord, SeriesIdentity
from tests.fixtures.service.helpers import ROOT, RedisServer, free_port, fresh_redis, own_redis
from workers.dismissals import store_for
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration

FP = "3f9c0a1b7d5e2468ace0"
SERIES = SeriesIdentity(
    key="demo-v1-0@example.org",
    author="ada@example.org",
    titles=("mm/demo_pool: add a pool",),
    message_ids=("demo-v1-0@example.org", "demo-v1-1@example.org"),
)


def _env(tmp: Path, broker: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("BOT_BROKER_URL", "BOT_REDIS_PREFIX", "BOT_FAULT_PAUSE", "BOT_DISMISS_FILE"):
        env.pop(var, None)
    env["XDG_STATE_HOME"] = str(tmp / "state")  # no `bot serve` record unless written
    env["BOT_CACHE_DIR"] = str(tmp / "cache")  # the local store, which must stay empty
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if broker is not None:
        env["BOT_BROKER_URL"] = broker
    return env


def _bot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "dismiss", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _state(redis: RedisServer) -> State:
    return State.from_url(redis.url(), prefix="bot")


def test_list_and_undo_the_services_dismissals(tmp_path: Path, fresh_redis: RedisServer) -> None:
    store = store_for(_state(fresh_redis))
    first = store.add(FP, SERIES, reason="the walk never fails", by="Grace", everywhere=False)
    second = store.add("MMLC002", SERIES, reason="", by="Ada (results page)", everywhere=False)
    env = _env(tmp_path, fresh_redis.url())

    listed = _bot(env, "--service", "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines == [
        f"#{first.id} {FP} {SERIES.key} by Grace at {first.at}: the walk never fails",
        f"#{second.id} MMLC002 {SERIES.key} by Ada (results page) at {second.at}",
    ]
    as_json = json.loads(_bot(env, "--service", "--list", "--json").stdout)
    assert [(d["id"], d["target"], d["by"]) for d in as_json] == [
        (first.id, FP, "Grace"),
        (second.id, "MMLC002", "Ada (results page)"),
    ]

    undone = _bot(env, "--service", "--undo", str(first.id))
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout.strip() == f"undone: #{first.id} {FP} ({SERIES.key})"
    assert [d.id for d in store.dismissals()] == [second.id]
    assert _bot(env, "--service", "--list").stdout.splitlines() == lines[1:]

    again = _bot(env, "--service", "--undo", str(first.id))
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.splitlines() == [
        f"bot: error: no dismissal #{first.id} in the service's store "
        "(bot dismiss --service --list)"
    ]
    # the local store was never touched
    local = _bot(env, "--list")
    assert (local.returncode, local.stdout) == (0, "no dismissals\n")
    assert [d.id for d in store.dismissals()] == [second.id]


def test_dismiss_a_finding_the_service_reviewed_and_count_it(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    store = store_for(_state(fresh_redis))
    store.record(ReviewRecord(series=SERIES, raised={FP: "MMLC002"}, at="2024-03-04T10:00:00"))
    env = _env(tmp_path, fresh_redis.url())
    counts = json.loads(_bot(env, "--service", "--counts", "--json").stdout)
    assert counts == {"MMLC002": {"raised": 1, "dismissed": 0}}

    done = _bot(env, "--service", "<demo-v1-1@example.org>", FP[:10], "--by", "Grace")
    assert done.returncode == 0, done.stderr
    (d,) = store.dismissals()
    assert (d.target, d.by, d.series.key) == (FP, "Grace", SERIES.key)
    assert done.stdout.strip() == f"dismissed #{d.id}: {FP} in every version of {SERIES.key}"
    counts = json.loads(_bot(env, "--service", "--counts", "--json").stdout)
    assert counts == {"MMLC002": {"raised": 1, "dismissed": 1}}

    assert _bot(env, "--service", "--undo", str(d.id)).returncode == 0
    counts = json.loads(_bot(env, "--service", "--counts", "--json").stdout)
    assert counts == {"MMLC002": {"raised": 1, "dismissed": 0}}


def test_the_bot_serve_record_is_used_without_bot_broker_url(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    store = store_for(_state(fresh_redis))
    d = store.add(FP, SERIES, reason="", by="Grace", everywhere=True)
    env = _env(tmp_path, None)
    record = tmp_path / "state" / "mmlc-bot" / "serve-broker.json"
    record.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:  # as `bot serve` writes it; this process is its pid
        json.dump({"url": fresh_redis.url(), "pid": os.getpid(), "data_dir": str(tmp_path)}, out)

    listed = _bot(env, "--service", "--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"#{d.id} {FP} everywhere by Grace at {d.at}"]
    assert _bot(env, "--service", "--undo", str(d.id)).returncode == 0
    assert store.dismissals() == []


@pytest.mark.parametrize("args", [["--list"], ["--undo", "1"], ["--counts"]])
def test_redis_unreachable_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    port = free_port()  # nothing listens there
    env = _env(tmp_path, f"redis://:not-shown-secret@127.0.0.1:{port}/0")
    got = _bot(env, "--service", *args)
    assert got.returncode == 2
    assert got.stdout == ""
    (line,) = got.stderr.splitlines()
    assert line.startswith(f"bot: error: Redis unreachable (redis://127.0.0.1:{port}/0): ")
    assert "not-shown-secret" not in got.stderr
    assert "Traceback" not in got.stderr
