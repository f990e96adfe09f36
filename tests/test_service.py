"""Running the service: `bot serve`, `bot mirror backfill|poll`, docker-compose.yml."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.errors import UsageError
from bot.service_cli import parse_since
from tests.fixtures.service.helpers import (
    ROOT,
    RedisServer,
    demo_series,
    free_port,
    fresh_redis,
    own_redis,
    wait_until,
    worker_env,
    write_inbox,
)
from workers.celery_app import QUEUES
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]

COMPOSE = ROOT / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_redis_webhook_beat_and_one_worker_per_queue() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "webhook", "beat"} | {f"worker-{q}" for q in QUEUES}
    for q in QUEUES:
        cmd = services[f"worker-{q}"]["command"]
        assert cmd[:4] == ["celery", "-A", "workers", "worker"]
        assert cmd[cmd.index("-Q") + 1] == q
    assert services["beat"]["command"][:4] == ["celery", "-A", "workers", "beat"]
    assert "workers.webhook:app_from_env" in services["webhook"]["command"]


def test_compose_points_every_bot_service_at_the_persistent_redis() -> None:
    services = _compose()["services"]
    assert "--appendonly" in services["redis"]["command"]
    for name, svc in services.items():
        if name == "redis":
            continue
        env = svc["environment"]
        assert env["BOT_BROKER_URL"] == "redis://redis:6379/0"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        # secrets are passed through from the operator's environment, never written here
        for key in ("BOT_WEBHOOK_SECRET", "BOT_SMTP_PASSWORD", "BOT_PATCHWORK_TOKEN"):
            assert env[key] == "${" + key + ":-}"


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_works(), reason="docker compose is not installed here")
def test_docker_compose_config_validates_the_file(tmp_path: Path) -> None:
    env = dict(os.environ, BOT_WEBHOOK_SECRET="x")
    out = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_parse_since_accepts_dates_and_refuses_nonsense() -> None:
    assert parse_since("2024-03-01") == datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="not a date"):
        parse_since("last tuesday")


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


@pytest.mark.integration
def test_mirror_backfill_stores_each_message_once_and_queues_assembly(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    v1, v2 = demo_series(1), demo_series(2)
    write_inbox(tmp_path / "inbox", [*v1.messages.values(), *v2.messages.values()])
    cfg = tmp_path / "service.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "lists": {"mm": {"mirror": str(tmp_path / "inbox")}},
            }
        )
    )
    env = worker_env(fresh_redis.url(), {"BOT_SERVICE_CONFIG": str(cfg)})
    first = _cli(["mirror", "backfill", "--since", "2023-12-01"], env)
    assert first.returncode == 0, first.stderr
    assert "mm: 6 commit(s) read, 6 new message(s), 0 already seen" in first.stderr
    state = State.from_url(fresh_redis.url())
    assert state.seen_count("mm") == 6
    assert state.r.llen("ingest") >= 1  # assembly queued for a worker (none runs here)
    again = _cli(["mirror", "poll"], env)
    assert again.returncode == 0 and "0 commit(s) read" in again.stderr
    state.r.close()


@pytest.mark.integration
def test_mirror_commands_give_one_line_errors(tmp_path: Path, fresh_redis: RedisServer) -> None:
    env = worker_env(fresh_redis.url(), {"BOT_SERVICE_CONFIG": str(tmp_path / "missing.yaml")})
    bad_date = _cli(["mirror", "backfill", "--since", "someday"], env)
    assert bad_date.returncode == 2
    assert bad_date.stderr.strip().splitlines() == [
        "bot: error: --since 'someday': not a date (use YYYY-MM-DD)"
    ]
    no_config = _cli(["mirror", "poll"], env)
    assert no_config.returncode == 2 and "cannot read service config" in no_config.stderr
    assert "Traceback" not in no_config.stderr
    cfg = tmp_path / "service.yaml"
    cfg.write_text("lists: {mm: {}}\n")
    env["BOT_SERVICE_CONFIG"] = str(cfg)
    no_mirror = _cli(["mirror", "poll", "--list", "mm"], env)
    assert no_mirror.returncode == 2 and "has no mirror configured" in no_mirror.stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.integration
def test_serve_runs_everything_with_an_embedded_redis_and_stops_cleanly(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    env = dict(os.environ)
    for var in ("BOT_BROKER_URL", "BOT_SERVICE_CONFIG", "BOT_FAULT_PAUSE"):
        env.pop(var, None)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")  # where serve records its Redis
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(port),
             "--data-dir", str(tmp_path / "data"), "--concurrency", "1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: _listening(port), "the webhook to listen", timeout=60, every=0.2)
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {
                "status": "ok"
            }
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            assert 'bot_queue_depth{queue="ingest"}' in metrics  # read from the embedded Redis
            # no secret configured: pushes are refused, not accepted unsigned
            resp = httpx.post(f"http://127.0.0.1:{port}/hooks/generic", content=b"{}", timeout=10)
            assert resp.status_code == 503
            match = re.search(r"embedded Redis at redis://127.0.0.1:(\d+)/0", log.read_text())
            assert match is not None
            redis_port = int(match.group(1))
            wait_until(lambda: "ready." in log.read_text(), "the worker to be ready", timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
    assert code == 0
    assert not _listening(port) and not _listening(redis_port)


def test_service_config_defaults_send_nothing() -> None:
    from workers.config import parse_config

    cfg = parse_config({}, env={})
    assert cfg.dry_run is True and cfg.lists == () and cfg.smtp is None and cfg.patchwork is None
    assert cfg.list("linux-mm").email is False  # an unknown list is muted
    assert cfg.webhook_max_bytes == 1024 * 1024


def test_service_config_takes_secrets_from_the_environment_only() -> None:
    from workers.config import parse_config

    data = {
        "publish": {
            "smtp": {"host": "mx", "password": "in-the-file"},
            "patchwork": {"url": "https://pw/"},
        },
        "lists": {"linux-mm": {"mirror": "https://lore.kernel.org/linux-mm", "email": True}},
    }
    cfg = parse_config(data, env={"BOT_SMTP_PASSWORD": "pw", "BOT_PATCHWORK_TOKEN": "tok"})
    assert cfg.smtp is not None and cfg.smtp.password == "pw"
    assert (
        cfg.patchwork is not None
        and cfg.patchwork.token == "tok"
        and cfg.patchwork.url == "https://pw"
    )
    assert cfg.list("linux-mm").email is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lists: [unclosed", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
        ("lists: {mm: {email: 'yes'}}\n", "lists.mm.email must be true or false"),
        ("repos: {mm: {}}\n", "repos.mm needs a url"),
        ("lists: {mm: {wait_seconds: soon}}\n", "bad service config"),
    ],
)
def test_a_bad_service_config_is_one_line_input_error(
    tmp_path: Path, text: str, message: str
) -> None:
    from bot.errors import InputError
    from workers.config import load_service_config

    path = tmp_path / "service.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        load_service_config(str(path))
    assert "\n" not in err.value.one_line()


@pytest.mark.integration
def test_outbox_list_shows_an_uncertain_entry_and_retry_releases_it(
    fresh_redis: RedisServer,
) -> None:
    from bot.publish.outbox import email_part

    state = State.from_url(fresh_redis.url())
    payload = {"parts": [email_part(b"From: bot@x\nTo: a@b\n\nhi\n")]}
    state.commit_review("linux-mm", "k1", {"review": {}}, "ob1", payload, 1.0)
    state.commit_review("linux-mm", "k2", {"review": {}}, "ob2", payload, 1.0)
    state.set_part("ob1", "part:0", "uncertain")  # a worker died between claim and mark
    state.finish_outbox("ob1", "uncertain")
    state.set_part("ob2", "part:0", "sent")
    state.finish_outbox("ob2", "done")
    env = worker_env(fresh_redis.url())
    listed = _cli(["outbox", "list"], env)
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == ["ob1 uncertain linux-mm k1 0=uncertain"]
    assert len(_cli(["outbox", "list", "--all"], env).stdout.splitlines()) == 2
    retried = _cli(["outbox", "retry", "ob1"], env)
    assert retried.returncode == 0, retried.stderr
    assert "1 uncertain part(s) released" in retried.stderr
    assert state.outbox_pending() == ["ob1"] and "part:0" not in state.outbox_item("ob1")
    assert state.r.llen("publish") == 1  # the delivery is queued for a publish worker
    missing = _cli(["outbox", "retry", "nope"], env)
    assert missing.returncode == 2 and "no outbox entry 'nope'" in missing.stderr
    state.r.close()
