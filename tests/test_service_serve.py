"""`bot serve` end to end: a signed push to the running service is reviewed and served."""

from __future__ import annotations

import json
import mailbox
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from tests.fixtures.service.helpers import (
    ROOT,
    free_port,
    pushed_repo,
    undocumented_keys,
    wait_until,
)
from workers.webhook import sign

pytestmark = pytest.mark.integration

SECRET = "serve-e2e-secret"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _post(base: str, payload: dict[str, str], delivery: str) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Bot-Signature-256": sign(SECRET, body),
        "X-Bot-Delivery": delivery,
    }
    return httpx.post(base + "/hooks/generic", content=body, headers=headers, timeout=10)


def test_serve_reviews_a_signed_push_of_an_allow_listed_repo_and_serves_the_result(
    tmp_path: Path,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    repo, before, after = pushed_repo(tmp_path, "mm")
    config = tmp_path / "service.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repos": {"mm": {"url": str(repo)}},
                "publish": {"maildir": str(tmp_path / "outbox")},
            }
        )
    )
    env = dict(os.environ, BOT_SERVICE_CONFIG=str(config), BOT_WEBHOOK_SECRET=SECRET)
    for var in ("BOT_BROKER_URL", "BOT_FAULT_PAUSE", "BOT_REDIS_PREFIX"):
        env.pop(var, None)  # the embedded Redis, with the default key prefix
    env["XDG_STATE_HOME"] = str(tmp_path / "state")  # where serve records its Redis
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(port),
             "--data-dir", str(tmp_path / "data"), "--concurrency", "1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(lambda: _listening(port), "the webhook to listen", timeout=60, every=0.2)
            payload = {
                "repository": "mm",
                "before": before,
                "after": after,
                "ref": "refs/heads/main",
            }
            delivery = str(uuid.uuid4())
            accepted = _post(base, payload, delivery)
            assert accepted.status_code == 202, accepted.text
            assert accepted.json() == {
                "status": "queued",
                "scope": "push:mm",
                "key": f"{before}..{after}",
            }
            assert _post(base, payload, delivery).status_code == 409  # the replay
            stranger = {**payload, "repository": "elsewhere"}
            assert _post(base, stranger, str(uuid.uuid4())).status_code == 404

            query = {"scope": "push:mm", "key": f"{before}..{after}"}

            def served() -> bool:
                got = httpx.get(base + "/results", params=query, timeout=10)
                return got.status_code == 200

            wait_until(served, "the review at /results", timeout=120, every=0.3)
            result = httpx.get(base + "/results", params=query, timeout=10).json()
            assert [p["title"] for p in result["review"]["patches"]] == [
                "mm/demo_pool: part 1",
                "mm/demo_pool: part 2",
            ]
            assert result["ref"] == "refs/heads/main"
            assert any(f["rule_id"] == "MMLC002" for f in result["review"]["findings"])
            # published through the outbox: the maildir copy (mail is not opted in)
            wait_until(
                lambda: (
                    (tmp_path / "outbox" / "new").is_dir()
                    and len(mailbox.Maildir(tmp_path / "outbox", create=False)) == 1
                ),
                "the maildir copy",
            )
            match = re.search(r"embedded Redis at redis://127.0.0.1:(\d+)/0", log.read_text())
            assert match is not None
            redis_port = int(match.group(1))
            record = tmp_path / "state" / "mmlc-bot" / "serve-broker.json"
            client = redis.Redis.from_url(json.loads(record.read_text())["url"])
            try:
                assert int(client.get(f"bot:reviews:push:mm:{before}..{after}") or 0) == 1
                assert undocumented_keys(client) == []
            finally:
                client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
    assert code == 0
    assert "Traceback" not in log.read_text()
    assert not _listening(port) and not _listening(redis_port)
