"""Leases: Redis keys that stay held only while the process holding them is alive.

A lease is a key whose value names its holder (host, pid, a random tag) and which
expires `LEASE_SECONDS` after it was last renewed. While the holder works, a heartbeat
thread renews it every third of that; a worker that dies (SIGKILL, OOM, the machine
lost) stops renewing, so its lease lapses within `LEASE_SECONDS`, not after the longest
a task may take. Renewing and releasing check the holder, so a process whose lease
lapsed (a long stall) never extends or deletes the lease another process took since.

The review of a series is claimed with a lease (`{p}:reviewing:{scope}:{key}`) and the
claim is also recorded in `{p}:claims` until the review is settled. A duplicate task
that finds the lease held skips; the sweep re-queues every recorded claim whose lease
lapsed without a review (`ClaimStore.lapsed_claims`), so a series whose worker died is
reviewed soon after, exactly once (the commit script stores one review). The mirror
poll of a list is held the same way (`{p}:polling:{scope}`), with `{p}:poller:{scope}`
naming the poll in progress, so the next poll can say that the last one died.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import cast

import redis

from workers.keys import KeyedStore

# A dead holder's lease lapses after at most this long.
LEASE_SECONDS = float(os.environ.get("BOT_LEASE_SECONDS", "30"))
# A claim the sweep re-queued is not re-queued again for this long (the task may be
# waiting behind others in the analyze queue; a second copy would only skip).
REQUEUE_GRACE_SECONDS = float(os.environ.get("BOT_REQUEUE_GRACE_SECONDS", "600"))

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def holder_token() -> str:
    """Who holds a lease: host, process and a random tag (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """One lease on key `name` (see the module docstring)."""

    def __init__(self, client: redis.Redis, name: str, ttl: float | None = None) -> None:
        self.r = client
        self.name = name
        self.ttl = LEASE_SECONDS if ttl is None else ttl
        self.token = holder_token()
        self.lost = False  # set when a renewal found another holder

    @property
    def _ms(self) -> int:
        return max(int(self.ttl * 1000), 1)

    def acquire(self) -> bool:
        return bool(self.r.set(self.name, self.token, nx=True, px=self._ms))

    def renew(self) -> bool:
        return bool(self.r.eval(_RENEW, 1, self.name, self.token, str(self._ms)))

    def release(self) -> None:
        self.r.eval(_RELEASE, 1, self.name, self.token)

    def holder(self) -> str | None:
        raw = cast(bytes | None, self.r.get(self.name))
        return raw.decode() if raw else None

    @contextmanager
    def kept(self) -> Iterator[Lease]:
        """Renew the lease from a background thread until the block ends, then release
        it. The thread dies with the process, which is the point."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl / 3):
                try:
                    if not self.renew():
                        self.lost = True
                        return
                except redis.RedisError:
                    continue  # a blip: the next beat tries again before the lease lapses

        thread = threading.Thread(target=beat, name=f"lease {self.name}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)
            with suppress(redis.RedisError):  # it lapses by itself
                self.release()


def _member(scope: str, key: str) -> str:
    return f"{scope}\x1f{key}"


class ClaimStore(KeyedStore):
    """Review claims and poll leases (mixed into workers.state.State)."""

    def review_lease(self, scope: str, key: str) -> Lease:
        return Lease(self.r, self.k("reviewing", scope, key))

    def poll_lease(self, scope: str) -> Lease:
        return Lease(self.r, self.k("polling", scope))

    def track_claim(self, scope: str, key: str) -> None:
        """Record that a review of the series was claimed and is not settled yet."""
        self.r.zadd(self.k("claims"), {_member(scope, key): time.time()})

    def settle_claim(self, scope: str, key: str) -> None:
        """The series needs no review from this claim any more (reviewed, failed, gone,
        or still incomplete: the wait's own sweep reviews it)."""
        self.r.zrem(self.k("claims"), _member(scope, key))

    def lapsed_claims(self, now: float) -> list[tuple[str, str]]:
        """Claims due for a look whose lease has lapsed: their worker is gone."""
        members = [
            m.decode()
            for m in cast(list[bytes], self.r.zrangebyscore(self.k("claims"), "-inf", now))
        ]
        return self._without_lease(members)

    def stuck_claims(self) -> int:
        """How many claimed series have no live worker and no review yet."""
        members = [m.decode() for m in cast(list[bytes], self.r.zrange(self.k("claims"), 0, -1))]
        return len(self._without_lease(members))

    def _without_lease(self, members: list[str]) -> list[tuple[str, str]]:
        if not members:
            return []
        pairs = [(m.partition("\x1f")[0], m.partition("\x1f")[2]) for m in members]
        pipe = self.r.pipeline(transaction=False)
        for scope, key in pairs:
            pipe.exists(self.k("reviewing", scope, key))
        alive = cast(list[int], pipe.execute())
        return [(s, k) for (s, k), held in zip(pairs, alive, strict=True) if not held]

    def requeued_claim(self, scope: str, key: str, now: float) -> None:
        """The sweep re-queued this claim: count it, and look again only after a grace."""
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(self.k("claims"), {_member(scope, key): now + REQUEUE_GRACE_SECONDS})
        pipe.hincrby(self.k("metrics"), "series_requeued", 1)
        pipe.execute()

    def start_poll(self, scope: str, token: str) -> str | None:
        """Name this poll as the one in progress; returns the poll that was named before
        and never finished (its worker died), if any."""
        raw = cast(bytes | None, self.r.set(self.k("poller", scope), token, get=True))
        return raw.decode() if raw else None

    def finish_poll(self, scope: str, token: str) -> None:
        self.r.eval(_RELEASE, 1, self.k("poller", scope), token)


__all__ = ["LEASE_SECONDS", "REQUEUE_GRACE_SECONDS", "ClaimStore", "Lease", "holder_token"]
