"""`bot serve`'s own Redis: password-protected, recorded where only this user can read
it, and found there by `bot outbox list` and `bot mirror poll`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml

from tests.fixtures.service.helpers import ROOT, demo_series, free_port, wait_until, write_inbox

pytestmark = pytest.mark.integration

LIST = "test"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_finds_serves_password_protected_redis_and_nobody_else_can_use_it(
    tmp_path: Path,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    v1 = demo_series(1)
    write_inbox(tmp_path / "inbox", list(v1.messages.values()))
    config = tmp_path / "service.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "lists": {LIST: {"mirror": str(tmp_path / "inbox")}},
                "publish": {"maildir": str(tmp_path / "outbox")},
            }
        )
    )
    env = dict(os.environ, BOT_SERVICE_CONFIG=str(config), BOT_LOG_FORMAT="json")
    for var in ("BOT_BROKER_URL", "BOT_FAULT_PAUSE", "BOT_REDIS_PREFIX"):
        env.pop(var, None)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    record = tmp_path / "state" / "mmlc-bot" / "serve-broker.json"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(free_port()),
             "--data-dir", str(tmp_path / "data"), "--concurrency", "1", "--no-beat"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(record.exists, "serve to record its Redis", timeout=60, every=0.2)
            wait_until(lambda: "ready." in log.read_text(), "the worker to be ready", timeout=90)
            # the record and the Redis data are this user's alone
            assert stat.S_IMODE(record.stat().st_mode) == 0o600
            assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE((tmp_path / "data" / "redis").stat().st_mode) == 0o700
            url = json.loads(record.read_text())["url"]
            password = redis.Redis.from_url(url).connection_pool.connection_kwargs["password"]
            assert password and password not in log.read_text()
            stranger = redis.Redis.from_url(url.replace(f":{password}@", ""))
            with pytest.raises(redis.AuthenticationError):
                stranger.ping()  # a local user without the secret can write nothing
            stranger.close()

            # the CLI, with no BOT_BROKER_URL, polls into serve's Redis, not 6379
            polled = _cli(["mirror", "poll", "--list", LIST], env)
            assert polled.returncode == 0, polled.stderr
            client = redis.Redis.from_url(url)
            try:
                assert client.scard(f"bot:seen:{LIST}") == 3
                wait_until(
                    lambda: client.get(f"bot:reviews:{LIST}:{v1.cover_id}") == b"1",
                    "serve's worker to review the polled series",
                    timeout=120,
                    every=0.3,
                )
                wait_until(lambda: client.zcard("bot:outbox:pending") == 0, "the outbox to settle")
            finally:
                client.close()
            listed = _cli(["outbox", "list", "--all"], env)
            assert listed.returncode == 0, listed.stderr
            assert f" done {LIST} {v1.cover_id} " in listed.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
    assert code == 0
    assert not record.exists()  # gone with the serve that wrote it
    assert "Traceback" not in log.read_text()


def test_outbox_list_with_redis_unreachable_is_one_line_exit_2(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    env["BOT_BROKER_URL"] = f"redis://:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens
    got = _cli(["outbox", "list"], env)
    assert got.returncode == 2
    assert got.stderr.count("\n") == 1 and "Redis unreachable" in got.stderr
    assert "s3cret" not in got.stderr and "Traceback" not in got.stderr
