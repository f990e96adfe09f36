"""The outbox's Redis keys (mixed into workers.state.State; documented there).

An entry `{p}:outbox:{id}` holds `part:{n}` (sending, sent, uncertain, skipped:<why>,
failed:<why>) and, next to a part, `note:{n}`: why it is uncertain, or the last error
of a send that left nothing behind and will be tried again. `{p}:target:{kind}` says
that a publish target (email, maildir, patchwork) is failing, since when and why; the
next successful send to it clears it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, cast

from workers.keys import KeyedStore

TARGETS = ("email", "maildir", "patchwork")

# Claim one part of an outbox item for sending: only a part never tried may be claimed.
# KEYS: outbox item. ARGV: part field. Returns 1 when claimed.
_CLAIM_PART = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'sending')
return 1
"""


class OutboxKeys(KeyedStore):
    """Outbox entries, their parts, their locks, and the health of publish targets."""

    def outbox_item(self, outbox_id: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], self.r.hgetall(self.k("outbox", outbox_id)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def outbox_pending(self) -> list[str]:
        return [
            x.decode() for x in cast(list[bytes], self.r.zrange(self.k("outbox", "pending"), 0, -1))
        ]

    def outbox_ids(self) -> list[str]:
        """Every outbox entry stored, oldest first (by SCAN: no KEYS on a busy Redis)."""
        found: list[tuple[float, str]] = []
        prefix = self.k("outbox", "")
        for name in cast(Iterable[bytes], self.r.scan_iter(match=prefix + "*", count=500)):
            rest = name.decode()[len(prefix) :]
            if ":" in rest or rest == "pending":
                continue
            created = cast(bytes | None, self.r.hget(name, "created"))
            found.append((float(created or 0), rest))
        return [i for _c, i in sorted(found)]

    def release_uncertain(self, outbox_id: str) -> int | None:
        """Let the parts marked uncertain be sent again (the operator checked they never
        arrived): clear them and put the entry back to pending. None: no such entry."""
        name = self.k("outbox", outbox_id)
        item = self.outbox_item(outbox_id)
        if not item:
            return None
        uncertain = [k for k, v in item.items() if k.startswith("part:") and v == "uncertain"]
        notes = [f"note:{k.removeprefix('part:')}" for k in uncertain]
        pipe = self.r.pipeline(transaction=True)
        if uncertain:
            pipe.hdel(name, *uncertain, *notes)
        pipe.hset(name, "status", "pending")
        pipe.zadd(
            self.k("outbox", "pending"), {outbox_id: float(item.get("created") or time.time())}
        )
        pipe.execute()
        return len(uncertain)

    def claim_part(self, outbox_id: str, part: str) -> int:
        """1: claimed for sending; 0: already sending/sent/settled; -1: no such item."""
        return int(self.r.eval(_CLAIM_PART, 1, self.k("outbox", outbox_id), part))

    def set_part(self, outbox_id: str, part: str, status: str) -> None:
        name = self.k("outbox", outbox_id)
        self.r.hset(name, part, status)
        if status == "sent":
            self.r.hdel(name, f"note:{part.removeprefix('part:')}")  # an old error's note

    def clear_part(self, outbox_id: str, part: str) -> None:
        self.r.hdel(self.k("outbox", outbox_id), part)

    def note_part(self, outbox_id: str, part: str, note: str) -> None:
        """Say why a part is uncertain, or what its last failed attempt met."""
        self.r.hset(self.k("outbox", outbox_id), f"note:{part.removeprefix('part:')}", note[:300])

    def lock_outbox(self, outbox_id: str, ttl: float) -> bool:
        """Take the entry's send lock; it expires so a killed worker cannot hold it forever."""
        return bool(
            self.r.set(self.k("outbox", outbox_id, "lock"), "locked", nx=True, px=int(ttl * 1000))
        )

    def unlock_outbox(self, outbox_id: str) -> None:
        self.r.delete(self.k("outbox", outbox_id, "lock"))

    def finish_outbox(self, outbox_id: str, status: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k("outbox", outbox_id), mapping={"status": status, "finished": time.time()})
        pipe.zrem(self.k("outbox", "pending"), outbox_id)
        if status == "uncertain":
            pipe.hincrby(self.k("metrics"), "outbox_uncertain", 1)
        pipe.execute()

    # ------------------------------------------------------------------ targets

    def target_failed(self, kind: str, reason: str) -> None:
        name = self.k("target", kind)
        pipe = self.r.pipeline(transaction=True)
        pipe.hsetnx(name, "since", f"{time.time():.0f}")
        pipe.hset(name, mapping={"error": reason[:300], "last": f"{time.time():.0f}"})
        pipe.hincrby(self.k("metrics"), f"publish_errors_{kind}", 1)
        pipe.execute()

    def target_ok(self, kind: str) -> None:
        self.r.delete(self.k("target", kind))

    def failing_targets(self) -> dict[str, dict[str, str]]:
        """Publish targets whose last attempt failed: kind -> since, last, error."""
        pipe = self.r.pipeline(transaction=False)
        for kind in TARGETS:
            pipe.hgetall(self.k("target", kind))
        out: dict[str, dict[str, str]] = {}
        for kind, raw in zip(TARGETS, cast(list[dict[bytes, bytes]], pipe.execute()), strict=True):
            if raw:
                out[kind] = {k.decode(): v.decode() for k, v in raw.items()}
        return out

    def outbox_summary(self) -> dict[str, Any]:
        """Counts for /metrics: pending entries, and failing targets."""
        return {
            "pending": int(self.r.zcard(self.k("outbox", "pending"))),
            "failing": self.failing_targets(),
        }


__all__ = ["TARGETS", "OutboxKeys"]
