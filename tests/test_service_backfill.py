"""`bot mirror backfill` applies the `bot: not-a-bug` replies it stores, as a poll does:
a real redis-server, a real worker, a v2 inbox and the CLI in its own process."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tests.fixtures.service.helpers import (
    ROOT,
    RedisServer,
    append_epoch,
    fresh_redis,
    own_redis,
    wait_until,
    worker_env,
)
from tests.test_service_dismiss import LIST, Mirror, _leak, mirror
from tests.test_web_fixtures import bot_reply_to, three_versions
from workers.dismissals import store_for

__all__ = ["fresh_redis", "mirror", "own_redis"]

pytestmark = pytest.mark.integration


def _backfill(mirror: Mirror, redis: RedisServer) -> subprocess.CompletedProcess[str]:
    env = worker_env(redis.url(), {"BOT_SERVICE_CONFIG": str(mirror.config)})
    return subprocess.run(
        [sys.executable, "-m", "bot", "mirror", "backfill", "--since", "2024-01-01"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_backfill_applies_trusted_replies_once_and_ignores_strangers(
    mirror: Mirror, fresh_redis: RedisServer
) -> None:
    v1, _v2, _v3 = three_versions()
    mirror.deliver(*v1.messages.values())
    leak = _leak(mirror.reviewed(v1.cover_id))
    short = leak["fingerprint"][:10]
    # the replies reach the mirror, but no poll reads them: the backfill does
    append_epoch(
        mirror.inbox,
        0,
        [
            bot_reply_to(v1, 2, "mallory-b@example.net", f"bot: not-a-bug {short}", "m@x.net"),
            bot_reply_to(
                v1,
                2,
                "grace-b@example.org",
                f"bot: not-a-bug {short} the walk never fails here",
                "Grace Hopper <grace@example.org>",
            ),
        ],
        datetime(2024, 3, 20, tzinfo=UTC),
    )
    store = store_for(mirror.state)
    assert store.dismissals() == []
    done = _backfill(mirror, fresh_redis)
    assert done.returncode == 0, done.stderr
    (d,) = store.dismissals()
    assert (d.target, d.by, d.reason) == (
        leak["fingerprint"],
        "grace@example.org",
        "the walk never fails here",
    )
    assert mirror.state.r.sismember(mirror.state.k("replied", LIST), "grace-b@example.org")
    # backfilled again from the same date: the reply is not applied twice
    again = _backfill(mirror, fresh_redis)
    assert again.returncode == 0, again.stderr
    wait_until(mirror.drained, "the queues to drain", timeout=120)
    assert len(store.dismissals()) == 1
