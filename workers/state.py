"""State that must survive a restart, in Redis, under documented keys.

Every key starts with a prefix (`bot` by default, `BOT_REDIS_PREFIX` to change it) so
several deployments, or the tests, can share one Redis. `scope` is a mailing list name
(`linux-mm`) or `push:<repo>` for push reviews; `key` is a series key (the Message-ID of
the cover letter, else of the first patch) or a commit range `A..B`.

    {p}:mirror:{scope}:cursor        HASH   epoch -> last commit whose message is queued
    {p}:polling:{scope}              STRING a live worker is polling this list's mirror (a lease:
                                            lapses soon after its worker dies)
    {p}:poller:{scope}               STRING the poll in progress (left behind by a poll that died)
    {p}:seen:{scope}                 SET    Message-IDs already stored (dedupe of deliveries)
    {p}:msg:{scope}                  HASH   Message-ID -> raw message bytes
    {p}:thread:{scope}:{root}        SET    Message-IDs of one thread (root = first Reference)
    {p}:title:{scope}:{author}|{t}   SET    thread roots whose patches carry title t (v1 <-> v2)
    {p}:quoted:{scope}:{t}           SET    thread roots holding a patch titled t or a reply
                                            quoting it (finds a v1 whose patch was lost)
    {p}:unthreaded:{scope}:{author}  ZSET   patches sent without threading -> Date (stitching)
    {p}:series:{scope}:{key}         HASH   state, version, total, missing, roots, first_seen,
                                            updated, reviewed_at, superseded_by, name, author,
                                            partial (1: the stored review was made with
                                            patches missing; the complete one is still owed)
    {p}:root-series:{scope}:{root}   SET    series keys assembly produced from this thread
    {p}:waiting:{scope}              ZSET   incomplete series key -> first seen (epoch seconds)
    {p}:series-index:{scope}         ZSET   every series key -> first seen
    {p}:reviewing:{scope}:{key}      STRING a live worker is reviewing it (a lease, renewed while
                                            the worker lives: see workers.leases)
    {p}:claims                       ZSET   scope and key of claimed reviews not settled yet ->
                                            when the sweep looks at it (re-queued when its
                                            lease lapsed without a review)
    {p}:result:{scope}:{key}         STRING the stored review (JSON): written once, or twice
                                            when a partial review is superseded by the
                                            review of the complete series
    {p}:partial:{scope}:{key}        STRING the partial review a complete one superseded (JSON)
    {p}:reviews:{scope}:{key}        STRING how many reviews were committed (1; 2 after a
                                            partial review and its complete successor)
    {p}:outbox:{id}                  HASH   scope, key, created, status, payload (JSON),
                                            part:{n} = sending | sent | uncertain | skipped:<why>
                                            | failed:<why>, note:{n} = why uncertain, or the
                                            last error of a send to be tried again
    {p}:outbox:{id}:lock             STRING a live worker is delivering this entry (a lease)
    {p}:outbox:pending               ZSET   outbox id -> created
    {p}:target:{kind}                HASH   a publish target (email, maildir, patchwork) is failing:
                                            since, last, error (cleared by the next good send)
    {p}:delivery:{id}                STRING webhook delivery ID seen (expires after a week)
    {p}:push:{scope}:{key}           STRING the webhook queued a review of this push range
                                            (the same range pushed twice is queued once;
                                            expires after a week; dropped when its review
                                            failed, so it may be pushed again)
    {p}:metrics                      HASH   counters: series_seen, series_reviewed,
                                            series_failed, series_requeued, outbox_uncertain,
                                            publish_errors_{kind}, latency_sum,
                                            latency_count, latency_le_{bucket}
    {p}:dismiss:dismissals           HASH   dismissal id -> JSON (bot.dismiss.RedisStore: target,
                                            series identity, by, at, reason)
    {p}:dismiss:dismissal-next       STRING the last dismissal id given
    {p}:dismiss:reviews              HASH   series key -> what its review raised (fingerprint ->
                                            rule) and the series identity
    {p}:dismiss:review-order         ZSET   series key -> when recorded (the oldest are trimmed)
    {p}:dismiss:review-ids           HASH   Message-ID of a reviewed patch or cover -> series key
                                            (a reply to the review finds its series)
    {p}:replied:{scope}              SET    Message-IDs of `bot: not-a-bug` replies already applied
    {p}:later:{scope}:{key}          SET    keys of later versions of the series (results page)
    {p}:confirmed:{rule}             SET    scope|series|function|file of findings a later version
                                            resolved (the rule's confirmed count)
    {p}:confirmed-rules              SET    rules with a confirmed finding
    {p}:fault:{point}                STRING set when a fault-injection pause was reached
    {p}:fault:{point}:release        STRING set by a test: paused workers go on (tests only)

Series states: incomplete -> complete -> reviewed; incomplete or complete -> superseded
when a later version arrives first. A review is committed by a Lua script that checks
and writes the result, the outbox entry and the state together, so a worker killed at
any point either committed everything or nothing. `reviewed` is final, with one
exception: a series reviewed after its wait ran out with patches missing is stored with
`partial` = 1, and when assembly later finds it complete it goes back to `complete`;
its complete review is committed by the same script only while `partial` is 1, and the
commit sets it to 0, so the complete review happens exactly once (the partial review is
kept under `{p}:partial:...`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from workers.leases import ClaimStore
from workers.outbox_state import OutboxKeys

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
# Deliveries are remembered this long; a replay older than a week is still refused
# by GitHub/GitLab's own timestamp checks on their side, and Redis must not grow forever.
DELIVERY_TTL_SECONDS = 7 * 24 * 3600
# Review latency histogram buckets, seconds (Prometheus-style upper bounds).
LATENCY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class SeriesState:
    INCOMPLETE = "incomplete"
    COMPLETE = "complete"
    REVIEWED = "reviewed"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    # A key that assembly no longer produces: the series was first seen under its
    # first patch's Message-ID and its cover letter arrived later (the key moved).
    MERGED = "merged"


def broker_url() -> str:
    """The Redis URL for broker, results and state: `BOT_BROKER_URL` or the local default."""
    return os.environ.get("BOT_BROKER_URL", DEFAULT_BROKER_URL)


@dataclass(frozen=True)
class StoredMessage:
    """One message as the ingest side stores it."""

    message_id: str
    root: str
    title: str
    author: str
    is_patch: bool
    raw: bytes
    date: float | None = None  # Date header, epoch seconds
    quotes_patch: bool = False  # a reply whose subject names a patch's title


# KEYS: result, reviews, series, outbox item, outbox pending, waiting, metrics, partial
# ARGV: result json, outbox id ('' = none), outbox payload, now, series key, scope, latency,
#       mode, then the latency bucket field names the latency falls into.
# mode: 'first' (no review stored yet), 'partial' (the same, and the series owes a
# complete review), 'complete' (supersede the stored partial review: only while owed).
# A partial review committed after assembly found the series complete (the missing
# patch arrived while it was being written) leaves the series `complete`, still owed.
_COMMIT_REVIEW = """
local mode = ARGV[8]
if mode == 'complete' then
  if redis.call('HGET', KEYS[3], 'partial') ~= '1' then return 0 end
  local old = redis.call('GET', KEYS[1])
  if old then redis.call('SET', KEYS[8], old) end
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local after = 'reviewed'
if mode == 'partial' and redis.call('HGET', KEYS[3], 'state') == 'complete' then
  after = 'complete'
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], 'state', after, 'reviewed_at', ARGV[4], 'updated', ARGV[4],
           'partial', mode == 'partial' and '1' or '0')
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[4], 'scope', ARGV[6], 'key', ARGV[5], 'created', ARGV[4],
             'status', 'pending', 'payload', ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
end
redis.call('ZREM', KEYS[6], ARGV[5])
redis.call('HINCRBY', KEYS[7], 'series_reviewed', 1)
redis.call('HINCRBYFLOAT', KEYS[7], 'latency_sum', ARGV[7])
redis.call('HINCRBY', KEYS[7], 'latency_count', 1)
for i = 9, #ARGV do redis.call('HINCRBY', KEYS[7], ARGV[i], 1) end
return 1
"""

# KEYS: series hash, series index, metrics, waiting. ARGV: key, now, state ('' = keep),
# then field/value pairs. Returns {1 when the series is new, its state after the update}.
_UPDATE_SERIES = """
local cur = redis.call('HGET', KEYS[1], 'state')
local new = 0
if not cur then
  new = 1
  redis.call('HSET', KEYS[1], 'first_seen', ARGV[2])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'series_seen', 1)
end
local state = ARGV[3]
if cur == 'reviewed' and state == 'complete' and redis.call('HGET', KEYS[1], 'partial') == '1' then
  -- reviewed with patches missing, and now complete: it owes its complete review
  state = 'complete'
elseif cur == 'reviewed' or cur == 'superseded' or cur == 'failed' then
  state = ''
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'updated', ARGV[2])
if state ~= '' then
  redis.call('HSET', KEYS[1], 'state', state)
  -- review latency runs from the moment the last patch arrived
  if state == 'complete' then redis.call('HSETNX', KEYS[1], 'complete_at', ARGV[2]) end
  if state == 'incomplete' then
    redis.call('ZADD', KEYS[4], 'NX', ARGV[2], ARGV[1])
  else
    redis.call('ZREM', KEYS[4], ARGV[1])
  end
end
return {new, redis.call('HGET', KEYS[1], 'state') or ''}
"""


class State(ClaimStore, OutboxKeys):
    """Typed access to the service's Redis keys (see the module docstring)."""

    def __init__(self, client: redis.Redis, prefix: str | None = None) -> None:
        self.r = client
        self.p = prefix or os.environ.get("BOT_REDIS_PREFIX", "bot")
        self._commit = self.r.register_script(_COMMIT_REVIEW)
        self._update = self.r.register_script(_UPDATE_SERIES)

    @classmethod
    def from_url(cls, url: str | None = None, prefix: str | None = None) -> State:
        client = redis.Redis.from_url(
            url or broker_url(), socket_timeout=10, socket_connect_timeout=5
        )
        return cls(client, prefix)

    # ------------------------------------------------------------------ mirror cursors

    def cursors(self, scope: str) -> dict[int, str]:
        raw = cast(dict[bytes, bytes], self.r.hgetall(self.k("mirror", scope, "cursor")))
        return {int(e): sha.decode() for e, sha in raw.items()}

    def set_cursor(self, scope: str, epoch: int, commit: str) -> None:
        self.r.hset(self.k("mirror", scope, "cursor"), str(epoch), commit)

    # ------------------------------------------------------------------ messages

    def store_messages(self, scope: str, messages: Sequence[StoredMessage]) -> list[StoredMessage]:
        """Store messages not seen before; return those that were new.

        SADD on the seen-set decides: the same message delivered twice (two mirror
        walks, a replayed batch after a crash) is stored once.
        """
        if not messages:
            return []
        seen_key = self.k("seen", scope)
        pipe = self.r.pipeline(transaction=False)
        for m in messages:
            pipe.sismember(seen_key, m.message_id)
        already = cast(list[int], pipe.execute())
        fresh: list[StoredMessage] = []
        chosen: set[str] = set()
        for m, was in zip(messages, already, strict=True):
            if not was and m.message_id not in chosen:
                fresh.append(m)
                chosen.add(m.message_id)
        if not fresh:
            return []
        pipe = self.r.pipeline(transaction=True)
        for m in fresh:
            pipe.hset(self.k("msg", scope), m.message_id, m.raw)
            pipe.sadd(self.k("thread", scope, m.root), m.message_id)
            if m.is_patch and m.title:
                pipe.sadd(self.k("title", scope, f"{m.author}|{m.title}"), m.root)
            if (m.is_patch or m.quotes_patch) and m.title:
                # a reply keeps the title of a patch that never reached us; assembly
                # uses it to link versions, so the thread must be assembled with them
                pipe.sadd(self.k("quoted", scope, m.title), m.root)
            if m.is_patch and m.root == m.message_id and m.date is not None:
                # git send-email without --thread: every patch is a thread of its own;
                # assembly stitches them by author and time, so it must see them together
                pipe.zadd(self.k("unthreaded", scope, m.author), {m.root: m.date})
            pipe.sadd(seen_key, m.message_id)
        pipe.execute()
        return fresh

    def seen_count(self, scope: str) -> int:
        return int(self.r.scard(self.k("seen", scope)))

    def threads_ids(self, scope: str, roots: Iterable[str]) -> set[str]:
        """Message-IDs of every thread in `roots`, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for root in roots:
            pipe.smembers(self.k("thread", scope, root))
        return {m.decode() for ids in cast(list[set[bytes]], pipe.execute()) for m in ids}

    def thread_ids(self, scope: str, root: str) -> set[str]:
        return {
            m.decode() for m in cast(set[bytes], self.r.smembers(self.k("thread", scope, root)))
        }

    def related_roots(
        self, scope: str, root: str, limit: int = 64, window: float = 3600.0
    ) -> list[str]:
        """Thread roots assembly must see together with `root`: threads whose patches
        share an author and title with its patches (other versions of the series posted
        as new threads), and unthreaded patches by the same author sent within
        `window` seconds of an unthreaded patch here (one series sent without --thread)."""
        ids = sorted(self.thread_ids(scope, root))
        if not ids:
            return [root]
        raws = cast(list[bytes | None], self.r.hmget(self.k("msg", scope), ids))
        from bot.ingest.mirror import routing_keys

        titles: dict[str, None] = {}
        loose: list[tuple[str, float]] = []
        for mid, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            keys = routing_keys(raw, mid)
            if keys.is_patch and keys.title:
                titles.setdefault(self.k("title", scope, f"{keys.author}|{keys.title}"), None)
                titles.setdefault(self.k("quoted", scope, keys.title), None)
            if keys.is_patch and keys.root == keys.message_id and keys.date is not None:
                loose.append((self.k("unthreaded", scope, keys.author), keys.date))
        pipe = self.r.pipeline(transaction=False)
        for tkey in titles:
            pipe.smembers(tkey)
        for akey, when in loose:
            pipe.zrangebyscore(akey, when - window, when + window)
        found: dict[str, None] = {root: None}
        for roots in cast(list[Iterable[bytes]], pipe.execute()):
            for r in sorted(x.decode() for x in roots):
                found.setdefault(r, None)
                if len(found) >= limit:
                    return list(found)
        return list(found)

    def messages(self, scope: str, ids: Iterable[str]) -> list[tuple[str, bytes]]:
        ordered = sorted(set(ids))
        if not ordered:
            return []
        raws = cast(list[bytes | None], self.r.hmget(self.k("msg", scope), ordered))
        return [(i, raw) for i, raw in zip(ordered, raws, strict=True) if raw is not None]

    # ------------------------------------------------------------------ series

    def series(self, scope: str, key: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self.r.hgetall(self.k("series", scope, key)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def update_series(
        self, scope: str, key: str, fields: Mapping[str, str | int | float]
    ) -> tuple[bool, str]:
        """Record what assembly saw of a series; returns (is it new, its state now).

        A reviewed, superseded or failed series keeps its state: assembly re-running
        after a late reply must not reopen it. The one exception is a series reviewed
        with patches missing (`partial` 1) that is now complete: it goes back to
        complete, to be reviewed again as a whole. One script, so one round trip.
        """
        data = dict(fields)
        state = str(data.pop("state", ""))
        flat: list[str] = []
        for name, value in data.items():
            flat += [name, str(value)]
        new, now = self._update(
            keys=[
                self.k("series", scope, key),
                self.k("series-index", scope),
                self.k("metrics"),
                self.k("waiting", scope),
            ],
            args=[key, f"{time.time():.6f}", state, *flat],
        )
        return bool(new), now.decode() if isinstance(now, bytes) else str(now)

    def stale_keys(self, scope: str, current: Mapping[str, Iterable[str]]) -> list[str]:
        """Record the series keys each thread root assembles to now (root -> keys);
        return keys a root gave before and no longer does, so they can be retired."""
        roots = sorted(current)
        pipe = self.r.pipeline(transaction=False)
        for root in roots:
            pipe.smembers(self.k("root-series", scope, root))
        befores = cast(list[set[bytes]], pipe.execute())
        every_now = {k for keys in current.values() for k in keys}
        stale: set[str] = set()
        pipe = self.r.pipeline(transaction=True)
        for root, raw in zip(roots, befores, strict=True):
            rkey = self.k("root-series", scope, root)
            now = set(current[root])
            gone = {x.decode() for x in raw} - now
            stale |= gone - every_now
            if now:
                pipe.sadd(rkey, *sorted(now))
            if gone:
                pipe.srem(rkey, *sorted(gone))
        pipe.execute()
        return sorted(stale)

    def mark_merged(self, scope: str, key: str) -> None:
        skey = self.k("series", scope, key)

        def update(pipe: redis.client.Pipeline) -> None:
            cur = cast(bytes | None, pipe.hget(skey, "state"))
            pipe.multi()
            if cur in {None, b"incomplete", b"complete"}:
                pipe.hset(skey, "state", SeriesState.MERGED)
            pipe.zrem(self.k("waiting", scope), key)

        # redis-py's WATCH/MULTI/EXEC loop: `update` runs again when skey changed
        self.r.transaction(update, skey)

    def mark_superseded(self, scope: str, key: str, by: str) -> bool:
        """Mark a not-yet-reviewed series superseded by a later version; True if it was."""
        skey = self.k("series", scope, key)
        changed = False

        def update(pipe: redis.client.Pipeline) -> None:
            nonlocal changed
            cur = cast(bytes | None, pipe.hget(skey, "state"))
            state = cur.decode() if cur else None
            pipe.multi()
            pipe.hset(skey, "superseded_by", by)
            changed = state in {None, SeriesState.INCOMPLETE, SeriesState.COMPLETE}
            if changed:
                pipe.hset(skey, "state", SeriesState.SUPERSEDED)
                pipe.zrem(self.k("waiting", scope), key)

        self.r.transaction(update, skey)
        return changed

    def waiting_since(self, scope: str, older_than: float) -> list[str]:
        """Incomplete series first seen before `older_than` (epoch seconds)."""
        out = cast(list[bytes], self.r.zrangebyscore(self.k("waiting", scope), "-inf", older_than))
        return [x.decode() for x in out]

    def series_keys(self, scope: str) -> list[str]:
        return [
            x.decode()
            for x in cast(list[bytes], self.r.zrange(self.k("series-index", scope), 0, -1))
        ]

    def mark_failed(self, scope: str, key: str, reason: str) -> None:
        """The series (or push range) failed for good; its claim is settled. A push range
        that failed may be pushed again: the webhook's record of it is dropped."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self.k("series", scope, key),
            mapping={"state": SeriesState.FAILED, "error": reason[:500]},
        )
        pipe.zrem(self.k("waiting", scope), key)
        pipe.hincrby(self.k("metrics"), "series_failed", 1)
        if scope.startswith("push:"):
            pipe.delete(self.k("push", scope, key))
        pipe.execute()
        self.settle_claim(scope, key)

    def reopen(self, scope: str, key: str) -> bool:
        """Put a failed series (or push range) back to complete, to be reviewed again;
        False when it is not failed."""
        skey = self.k("series", scope, key)
        reopened = False

        def update(pipe: redis.client.Pipeline) -> None:
            nonlocal reopened
            cur = cast(bytes | None, pipe.hget(skey, "state"))
            pipe.multi()
            reopened = cur == SeriesState.FAILED.encode()
            if reopened:
                pipe.hset(skey, "state", SeriesState.COMPLETE)
                pipe.hdel(skey, "error")

        self.r.transaction(update, skey)
        return reopened

    # ------------------------------------------------------------------ results

    def result(self, scope: str, key: str) -> dict[str, Any] | None:
        raw = cast(bytes | None, self.r.get(self.k("result", scope, key)))
        return cast(dict[str, Any], json.loads(raw)) if raw else None

    def partial_result(self, scope: str, key: str) -> dict[str, Any] | None:
        """The partial review a complete review superseded, if one did."""
        raw = cast(bytes | None, self.r.get(self.k("partial", scope, key)))
        return cast(dict[str, Any], json.loads(raw)) if raw else None

    def review_count(self, scope: str, key: str) -> int:
        raw = cast(bytes | None, self.r.get(self.k("reviews", scope, key)))
        return int(raw) if raw else 0

    def commit_review(  # noqa: PLR0917 - one caller, which names every argument
        self,
        scope: str,
        key: str,
        result: Mapping[str, Any],
        outbox_id: str | None,
        outbox_payload: Mapping[str, Any] | None,
        latency: float,
        *,
        mode: str = "first",
    ) -> bool:
        """Store a review and its outbox entry atomically; False if it was already stored.

        `mode` "first" and "partial" store the series' first review (a partial one owes a
        complete review later); "complete" replaces a stored partial review, once, keeping
        the partial one under `{p}:partial:...`.
        """
        if mode not in {"first", "partial", "complete"}:
            raise ValueError(f"unknown commit mode {mode!r}")
        buckets = [f"latency_le_{b:g}" for b in LATENCY_BUCKETS if latency <= b]
        done = self._commit(
            keys=[
                self.k("result", scope, key),
                self.k("reviews", scope, key),
                self.k("series", scope, key),
                self.k("outbox", outbox_id or "none"),
                self.k("outbox", "pending"),
                self.k("waiting", scope),
                self.k("metrics"),
                self.k("partial", scope, key),
            ],
            args=[
                json.dumps(result, sort_keys=True),
                outbox_id or "",
                json.dumps(outbox_payload or {}, sort_keys=True),
                f"{time.time():.6f}",
                key,
                scope,
                f"{max(latency, 0.0):.6f}",
                mode,
                *buckets,
            ],
        )
        return bool(done)

    # ------------------------------------------------------------------ webhook

    def first_delivery(self, delivery_id: str) -> bool:
        """True the first time a webhook delivery ID is seen; False on a replay."""
        return bool(
            self.r.set(self.k("delivery", delivery_id), "1", nx=True, ex=DELIVERY_TTL_SECONDS)
        )

    # ------------------------------------------------------------------ metrics, faults

    def metrics(self) -> dict[str, float]:
        raw = cast(dict[bytes, bytes], self.r.hgetall(self.k("metrics")))
        return {k.decode(): float(v) for k, v in raw.items()}

    def incr(self, name: str, by: int = 1) -> None:
        self.r.hincrby(self.k("metrics"), name, by)

    def mark_fault(self, point: str) -> None:
        self.r.set(self.k("fault", point), str(os.getpid()))

    def fault_hit(self, point: str) -> int | None:
        raw = cast(bytes | None, self.r.get(self.k("fault", point)))
        return int(raw) if raw else None

    def release_fault(self, point: str) -> None:
        """Let workers paused at `point` go on (and not stop there again)."""
        self.r.set(self.k("fault", point, "release"), "1")

    def fault_released(self, point: str) -> bool:
        return bool(self.r.exists(self.k("fault", point, "release")))


__all__ = [
    "DEFAULT_BROKER_URL",
    "LATENCY_BUCKETS",
    "SeriesState",
    "State",
    "StoredMessage",
    "broker_url",
]
