"""Mirror intake: walk a public-inbox mirror from its cursor and store what is new.

Shared by the `poll_mirror` task and `bot mirror backfill`. The order of the three
steps is the point:

    1. store the batch's new messages (seen-set, raw bytes, thread and title indexes)
    2. queue an assembly of every thread the batch holds
    3. move the cursor past the batch

A crash or a lost Redis between any two steps re-reads the batch on the next run; the
seen-set makes that harmless. The cursor never runs ahead of what is queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import redis
from kombu.exceptions import OperationalError

from bot.ingest.mirror import MirrorMessage, PublicInboxMirror, routing_keys
from workers.state import State, StoredMessage

Enqueue = Callable[[str, list[str]], None]  # (scope, thread roots) -> queue assemblies


@dataclass
class IntakeStats:
    walked: int = 0  # commits visited
    stored: int = 0  # new messages stored
    duplicates: int = 0  # messages already seen
    threads: int = 0  # assemblies queued
    retries: int = 0  # Redis outages waited out


def _with_retry(step: Callable[[], object], stats: IntakeStats, attempts: int, wait: float) -> None:
    """Run one Redis step, waiting out an outage (Redis restarted, failover) a few times."""
    for attempt in range(attempts):
        try:
            step()
            return
        except (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.BusyLoadingError,
            OperationalError,  # Celery could not publish to the broker
        ):
            if attempt == attempts - 1:
                raise
            stats.retries += 1
            time.sleep(min(wait * (2**attempt), 5.0))


def _batches(items: Iterable[MirrorMessage], size: int) -> Iterable[list[MirrorMessage]]:
    batch: list[MirrorMessage] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ingest_mirror(
    state: State,
    scope: str,
    mirror: PublicInboxMirror,
    enqueue: Enqueue,
    *,
    batch_size: int = 200,
    since: datetime | None = None,
    ignore_cursor: bool = False,
    progress: Callable[[int], None] | None = None,
    redis_attempts: int = 30,
    redis_wait: float = 0.2,
    on_batch: Callable[[list[StoredMessage]], object] | None = None,
) -> IntakeStats:
    """Store every message after the cursors (or since `since`), batch by batch.

    `on_batch` sees each batch after it is stored and before the cursor moves (the
    service reads `bot: not-a-bug` replies there); it must be idempotent, since a
    batch is read again after a crash."""
    stats = IntakeStats()
    cursors: dict[int, str] = {}
    _with_retry(lambda: cursors.update(state.cursors(scope)), stats, redis_attempts, redis_wait)
    start = {} if ignore_cursor else dict(cursors)
    for batch in _batches(mirror.walk(start, since=since), batch_size):
        stats.walked += len(batch)
        items = []
        for m in batch:
            if not m.raw:
                continue  # a deletion commit
            keys = routing_keys(m.raw, f"{scope}-{m.commit}")
            items.append(
                StoredMessage(
                    message_id=keys.message_id,
                    root=keys.root,
                    title=keys.title,
                    author=keys.author,
                    is_patch=keys.is_patch,
                    raw=m.raw,
                    date=keys.date,
                    quotes_patch=keys.quotes_patch,
                )
            )
        fresh: list[StoredMessage] = []

        def store(items: list[StoredMessage] = items, fresh: list[StoredMessage] = fresh) -> None:
            fresh[:] = state.store_messages(scope, items)

        _with_retry(store, stats, redis_attempts, redis_wait)
        stats.stored += len(fresh)
        stats.duplicates += len(items) - len(fresh)
        # Every thread of the batch, not only those with new mail: a batch re-read after
        # a crash between storing and queueing has nothing "new", yet was never queued.
        # Assembly is idempotent, so queueing a thread twice costs only time.
        roots = list(dict.fromkeys(m.root for m in items))
        if roots:

            def queue(roots: list[str] = roots) -> None:
                enqueue(scope, roots)

            _with_retry(queue, stats, redis_attempts, redis_wait)
            stats.threads += len(roots)
        if on_batch is not None and items:

            def react(items: list[StoredMessage] = items) -> None:
                on_batch(items)

            _with_retry(react, stats, redis_attempts, redis_wait)
        last: dict[int, str] = {}
        for m in batch:
            last[m.epoch] = m.commit

        def move(last: dict[int, str] = last) -> None:
            for epoch, commit in last.items():
                state.set_cursor(scope, epoch, commit)

        _with_retry(move, stats, redis_attempts, redis_wait)
        if progress:
            progress(len(batch))
    return stats


__all__ = ["IntakeStats", "ingest_mirror"]
