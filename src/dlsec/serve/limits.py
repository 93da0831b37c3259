"""Rate limits and budgets, exact under concurrency.

Each request first takes one token from its key's bucket (``count`` tokens, refilled at
``count / period`` per second) and reserves its rows from the key's budget, in one atomic step:
either both succeed or nothing changes. :class:`MemoryLimits` does it under a lock (one gateway
process); :class:`RedisLimits` does it in one Lua script on the Redis server, using the server's
clock, so several gateway workers share the same buckets and budgets.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from dlsec.errors import UsageError
from dlsec.store import Rate

__all__ = ["Decision", "LimitStore", "MemoryLimits", "RedisLimits", "open_limits"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # "rate" or "budget" when refused
    retry_after: int = 0  # seconds


class LimitStore(Protocol):
    def take(self, key_id: str, rows: int, rate: Rate | None, budget: int | None, used0: int) -> Decision: ...

    def usage(self) -> dict[str, int]: ...


BUDGET_RETRY = 3600  # a spent budget does not refill: ask again in an hour (or ask an admin)


class MemoryLimits:
    """Token buckets and budget counters in this process."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._used: dict[str, int] = {}
        self._clock = clock

    def take(self, key_id: str, rows: int, rate: Rate | None, budget: int | None, used0: int) -> Decision:
        with self._lock:
            used = self._used.get(key_id, used0)
            if budget is not None and used + rows > budget:
                return Decision(False, "budget", BUDGET_RETRY)
            if rate is not None:
                now = self._clock()
                tokens, last = self._buckets.get(key_id, (float(rate.count), now))
                tokens = min(float(rate.count), tokens + (now - last) * rate.count / rate.period)
                if tokens < 1.0:
                    wait = (1.0 - tokens) * rate.period / rate.count
                    self._buckets[key_id] = (tokens, now)
                    return Decision(False, "rate", max(1, math.ceil(wait)))
                self._buckets[key_id] = (tokens - 1.0, now)
            self._used[key_id] = used + rows
            return Decision(True)

    def usage(self) -> dict[str, int]:
        with self._lock:
            return dict(self._used)


_LUA = """
local used = redis.call('GET', KEYS[2])
if not used then
  redis.call('SET', KEYS[2], ARGV[5])
  used = ARGV[5]
end
used = tonumber(used)
local rows = tonumber(ARGV[1])
local budget = tonumber(ARGV[4])
if budget >= 0 and used + rows > budget then
  return {0, 'budget', 0}
end
local count = tonumber(ARGV[2])
if count > 0 then
  local period = tonumber(ARGV[3])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  local tokens = tonumber(state[1]) or count
  local ts = tonumber(state[2]) or now
  tokens = math.min(count, tokens + (now - ts) * count / period)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
    return {0, 'rate', tostring((1 - tokens) * period / count)}
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[1], math.ceil(period) * 2 + 60)
end
redis.call('INCRBY', KEYS[2], rows)
return {1, '', 0}
"""


class RedisLimits:
    """Token buckets and budgets in Redis, shared by every gateway worker."""

    def __init__(self, url: str, *, prefix: str = "dlsec") -> None:
        try:
            import redis
        except ImportError:
            raise UsageError("--redis-url needs the redis package: pip install 'dlsec[redis]'") from None
        self._client = redis.Redis.from_url(url)
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise UsageError(f"cannot reach Redis at {url} ({exc})") from None
        self._script = self._client.register_script(_LUA)
        self._prefix = prefix
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def take(self, key_id: str, rows: int, rate: Rate | None, budget: int | None, used0: int) -> Decision:
        keys = [f"{self._prefix}:bucket:{key_id}", f"{self._prefix}:used:{key_id}"]
        args = [
            rows,
            rate.count if rate else 0,
            rate.period if rate else 1,
            -1 if budget is None else budget,
            used0,
        ]
        allowed, reason, wait = self._script(keys=keys, args=args)
        with self._lock:
            self._seen.add(key_id)
        if int(allowed):
            return Decision(True)
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        if reason == "budget":
            return Decision(False, "budget", BUDGET_RETRY)
        return Decision(False, "rate", max(1, math.ceil(float(wait))))

    def usage(self) -> dict[str, int]:
        with self._lock:
            seen = sorted(self._seen)
        values = self._client.mget([f"{self._prefix}:used:{k}" for k in seen]) if seen else []
        return {k: int(v) for k, v in zip(seen, values, strict=True) if v is not None}


def open_limits(redis_url: str | None) -> LimitStore:
    return RedisLimits(redis_url) if redis_url else MemoryLimits()
