"""The tasks run eagerly in this process (errors propagate), on a Redis of our own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.ingest.mirror import routing_keys
from tests.fixtures.service.helpers import (
    RedisServer,
    demo_reply,
    demo_series,
    fresh_redis,
    own_redis,
)
from workers import tasks
from workers.celery_app import app
from workers.state import State, StoredMessage

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration  # a real redis-server, no worker process

LIST = "mm"


@pytest.fixture
def eager(
    tmp_path: Path, fresh_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[State]:
    cfg = tmp_path / "service.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "lists": {LIST: {"address": "linux-mm@kvack.org", "email": True}},
                "publish": {"maildir": str(tmp_path / "outbox")},
            }
        )
    )
    monkeypatch.setenv("BOT_SERVICE_CONFIG", str(cfg))
    saved = dict(app.conf)
    app.conf.update(
        broker_url=fresh_redis.url(),
        result_backend=fresh_redis.url(),
        task_always_eager=True,
        task_eager_propagates=True,
    )
    state = tasks.state()
    try:
        yield state
    finally:
        app.conf.update(
            {
                k: saved[k]
                for k in (
                    "broker_url",
                    "result_backend",
                    "task_always_eager",
                    "task_eager_propagates",
                )
            }
        )


def _store(state: State, *raws: bytes) -> list[str]:
    items = []
    for raw in raws:
        k = routing_keys(raw, "x")
        items.append(
            StoredMessage(
                k.message_id, k.root, k.title, k.author, k.is_patch, raw, k.date, k.quotes_patch
            )
        )
    state.store_messages(LIST, items)
    return sorted({i.root for i in items})


def test_an_incomplete_series_waits_and_is_not_reviewed(eager: State) -> None:
    v1 = demo_series(1)
    roots = _store(eager, v1.messages["cover"], v1.messages["2"])
    assert tasks.assemble_thread.run(LIST, roots) == {v1.cover_id: "incomplete"}
    assert eager.result(LIST, v1.cover_id) is None
    assert eager.waiting_since(LIST, float("inf")) == [v1.cover_id]


def test_a_complete_series_is_reviewed_stored_and_written_to_the_maildir(
    eager: State, tmp_path: Path
) -> None:
    v1 = demo_series(1)
    roots = _store(eager, *v1.messages.values(), demo_reply(v1, 1))
    assert tasks.assemble_thread.run(LIST, roots) == {v1.cover_id: "complete"}
    result = eager.result(LIST, v1.cover_id)
    assert result is not None and result["partial"] is False
    assert [f["rule_id"] for f in result["review"]["findings"] if f["status"] == "introduced"] == [
        "MMLC002"
    ]
    assert eager.series(LIST, v1.cover_id)["state"] == "reviewed"
    assert eager.outbox_pending() == []  # delivered eagerly: maildir yes, mail muted by dry-run
    assert len(list((tmp_path / "outbox" / "new").iterdir())) >= 1
    # running the assembly again (a late reply) does not review it again
    tasks.assemble_thread.run(LIST, roots)
    assert eager.review_count(LIST, v1.cover_id) == 1


def test_the_review_task_skips_a_series_another_worker_is_reviewing(eager: State) -> None:
    v1 = demo_series(1)
    roots = _store(eager, *v1.messages.values())
    eager.update_series(LIST, v1.cover_id, {"state": "complete", "roots": f'["{roots[0]}"]'})
    lease = eager.review_lease(LIST, v1.cover_id)  # another worker, alive
    assert lease.acquire()
    assert tasks.review_series.run(LIST, v1.cover_id) == "skipped: in progress elsewhere"
    lease.release()
    assert tasks.review_series.run(LIST, v1.cover_id) == "reviewed"
    assert tasks.review_series.run(LIST, v1.cover_id) == "skipped: reviewed"


def test_a_later_version_in_the_same_threads_supersedes_an_unreviewed_one(eager: State) -> None:
    v1, v2 = demo_series(1), demo_series(2)
    # v1 never completed (2/2 lost); v2 arrives complete
    roots = _store(eager, v1.messages["cover"], v1.messages["1"], *v2.messages.values())
    outcome = tasks.assemble_thread.run(LIST, roots)
    assert outcome == {v1.cover_id: "superseded", v2.cover_id: "complete"}
    assert eager.series(LIST, v1.cover_id)["superseded_by"] == v2.cover_id
    assert eager.waiting_since(LIST, float("inf")) == []
    assert eager.result(LIST, v2.cover_id) is not None


def test_a_push_with_non_hex_ids_is_refused_by_the_task_itself(eager: State) -> None:
    assert tasks.review_push.run("mm", "--upload-pack=evil", "b" * 40).startswith("failed")


def test_an_unthreaded_series_arriving_out_of_order_is_stitched_and_reviewed_once(
    eager: State,
) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.fixtures.service.helpers import HERE, mail

    start = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    patches = {
        n: mail(
            msgid=f"loose-{n}@example.org",
            subject=f"[PATCH {n}/2] mm/demo_pool: part {n}",
            body=f"Part {n}.\n\nSigned-off-by: Ada Lovelace <ada@example.org>\n"
            + (HERE / f"v1-{n}.diff").read_text(),
            date=start + timedelta(seconds=n),
        )
        for n in (1, 2)
    }  # git send-email without --thread: no In-Reply-To, no References
    assert tasks.assemble_thread.run(LIST, _store(eager, patches[2])) == {
        "loose-2@example.org": "incomplete"
    }
    outcome = tasks.assemble_thread.run(LIST, _store(eager, patches[1]))
    assert outcome == {"loose-1@example.org": "complete"}
    assert eager.review_count(LIST, "loose-1@example.org") == 1
    assert eager.series(LIST, "loose-2@example.org")["state"] == "merged"
    assert eager.waiting_since(LIST, float("inf")) == []
