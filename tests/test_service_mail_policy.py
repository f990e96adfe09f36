"""Who gets the bot's mail, through a real SMTP server (aiosmtpd), a real worker and
redis-server: a series with no finding gets no mail unless the list opts in
(`mail_clean`), and a reply Cc's everyone the patch was sent to (`cc_thread`), each
address once, never the bot itself."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.service.helpers import (
    RedisServer,
    Worker,
    append_epoch,
    demo_series,
    fresh_redis,
    own_redis,
    smtp_sink,
    wait_until,
    worker_env,
    write_inbox,
)
from workers.celery_app import QUEUES, make_app
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration

BOT = "mm-bot <bot@example.net>"
THREAD_CC = "Grace Hopper <grace@example.org>, mm-bot <BOT@example.net>, quiet@example.com"


def _with_cc(raw: bytes, cc: str) -> bytes:
    """The message as if sent with this Cc (To stays the list of the demo)."""
    head, sep, body = raw.partition(b"\n\n")
    return head + f"\nCc: {cc}".encode() + sep + body


def _settled(state: State, keys: list[tuple[str, str]]) -> bool:
    r = state.r
    done = all(state.result(scope, key) is not None for scope, key in keys)
    idle = all(r.llen(q) == 0 for q in QUEUES) and r.hlen("unacked") == 0
    return done and idle and state.outbox_pending() == []


def test_clean_series_mail_only_where_opted_in_and_replies_cc_the_thread_once(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    # "quiet": v1 (findings) and v2 (clean), Cc'd to the thread; "loud": a clean v2
    # of another series, on a list that wants clean reviews and no thread Cc
    q1, q2 = demo_series(1, tag="q"), demo_series(2, tag="q")
    loud = demo_series(2, tag="l")
    write_inbox(tmp_path / "quiet", [_with_cc(m, THREAD_CC) for m in q1.messages.values()])
    write_inbox(tmp_path / "loud", [_with_cc(m, THREAD_CC) for m in loud.messages.values()])
    with smtp_sink() as sink:
        cfg: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "lists": {
                "quiet": {
                    "mirror": str(tmp_path / "quiet"),
                    "address": "quiet@example.com",
                    "email": True,
                },
                "loud": {
                    "mirror": str(tmp_path / "loud"),
                    "address": "loud@example.com",
                    "email": True,
                    "mail_clean": True,
                    "cc_thread": False,
                },
            },
            "publish": {
                "dry_run": False,
                "from": BOT,
                "smtp": {"host": sink.host, "port": sink.port},
            },
        }
        config = tmp_path / "service.yaml"
        config.write_text(yaml.safe_dump(cfg))
        state = State.from_url(fresh_redis.url())
        client = make_app(fresh_redis.url())
        env = worker_env(fresh_redis.url(), {"BOT_SERVICE_CONFIG": str(config)})
        worker = Worker(env, log=tmp_path / "w1.log")
        try:
            for name in ("quiet", "loud"):
                client.send_task("workers.tasks.poll_mirror", args=[name]).get(timeout=120)
            first = [("quiet", q1.cover_id), ("loud", loud.cover_id)]
            wait_until(lambda: _settled(state, first), "v1 and loud published", timeout=240)
            # v2 after v1 was reviewed (posted together, v1 would be superseded)
            append_epoch(
                tmp_path / "quiet",
                0,
                [_with_cc(m, THREAD_CC) for m in q2.messages.values()],
                datetime(2024, 3, 9, tzinfo=UTC),
            )
            client.send_task("workers.tasks.poll_mirror", args=["quiet"]).get(timeout=120)
            keys = [*first, ("quiet", q2.cover_id)]
            wait_until(lambda: _settled(state, keys), "v2 reviewed and settled", timeout=240)
            found = [state.result(s, k)["review"]["summary"]["introduced"] for s, k in keys]  # type: ignore[index]
            assert found[0] >= 1 and found[1:] == [0, 0]
            assert state.result("quiet", q2.cover_id)["previous"] == q1.cover_id  # type: ignore[index]
        finally:
            worker.stop()
            state.r.close()

    by_parent: dict[str, list[tuple[list[str], Any]]] = {}
    for _sender, rcpts, raw in sink.messages:
        msg = message_from_bytes(raw)
        by_parent.setdefault(msg["In-Reply-To"].strip("<>"), []).append((rcpts, msg))
    q1_ids, q2_ids = {q1.cover_id, *q1.patch_ids}, {q2.cover_id, *q2.patch_ids}
    loud_ids = {loud.cover_id, *loud.patch_ids}
    assert set(by_parent) & q1_ids, "v1 has findings: mailed"
    assert not set(by_parent) & q2_ids, "the clean v2 on a list that did not opt in"
    assert len([p for p in by_parent if p in loud_ids]) == 1  # the clean summary, once

    for parent, mails in by_parent.items():
        for rcpts, msg in mails:
            cc = [a.lower() for _n, a in getaddresses([str(msg.get("Cc", ""))])]
            assert len(cc) == len(set(cc)), cc
            assert "bot@example.net" not in [r.lower() for r in rcpts]
            assert sorted(r.lower() for r in rcpts) == sorted({r.lower() for r in rcpts})
            if parent in q1_ids:
                assert sorted(rcpts) == sorted(
                    [
                        "ada@example.org",
                        "quiet@example.com",
                        "linux-mm@kvack.org",
                        "grace@example.org",
                    ]
                )
                assert cc == ["quiet@example.com", "linux-mm@kvack.org", "grace@example.org"]
            else:
                assert sorted(rcpts) == ["ada@example.org", "loud@example.com"]
                assert cc == ["loud@example.com"]
