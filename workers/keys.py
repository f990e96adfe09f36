"""The one thing every piece of the service's Redis state shares: a client and a prefix."""

from __future__ import annotations

import redis


class KeyedStore:
    """A Redis client and the key prefix (`bot` unless `BOT_REDIS_PREFIX` says otherwise);
    `workers.state.State` sets both and mixes in the stores built on this."""

    r: redis.Redis
    p: str

    def k(self, *parts: str) -> str:
        return ":".join((self.p, *parts))


__all__ = ["KeyedStore"]
