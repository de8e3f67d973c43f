"""Per-key request rate (sliding 60 s window) and concurrency (leases), shared by every replica through
Redis (one Lua script per decision, Redis' own clock) or, without Redis, kept in this process."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

WINDOW_MS = 60_000

# KEYS[1]: sorted set of request ids scored by arrival (ms). ARGV: limit, window_ms, member.
_RATE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)
local n = redis.call('ZCARD', KEYS[1])
local allowed = 0
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  n = n + 1
  allowed = 1
end
redis.call('PEXPIRE', KEYS[1], win)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = win
if oldest[2] then reset = tonumber(oldest[2]) + win - now end
return {allowed, limit - n, reset, now}
"""

# KEYS[1]: sorted set of lease ids scored by expiry (ms). ARGV: max, ttl_ms, member.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n < max then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {1, max - n - 1}
end
return {0, 0}
"""

_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
return 0
"""


@dataclass
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_ms: int  # until the oldest request in the window leaves it
    now_ms: int

    def headers(self) -> dict[str, str]:
        reset_s = max(1, -(-self.reset_ms // 1000))
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(max(0, self.remaining)),
                "X-RateLimit-Reset": str(-(-(self.now_ms + self.reset_ms) // 1000)),  # epoch seconds
                "X-RateLimit-Interval": "60s",
                **({} if self.allowed else {"Retry-After": str(reset_s)})}


class Limits:
    """Interface; see MemoryLimits and RedisLimits."""
    shared = False

    async def hit(self, key: str, limit: int, member: str) -> RateDecision:
        raise NotImplementedError

    async def acquire(self, key: str, max_concurrent: int, member: str) -> bool:
        raise NotImplementedError

    async def release(self, key: str, member: str) -> None:
        raise NotImplementedError

    async def renew(self, key: str, member: str) -> None:
        return None

    lease_ttl_ms = 300_000

    @contextlib.asynccontextmanager
    async def slot(self, key: str, member: str) -> AsyncIterator[None]:
        """Hold an acquired lease until the block ends; shared leases expire, so they are renewed meanwhile."""
        renewer = asyncio.create_task(self._renew_loop(key, member)) if self.shared else None
        try:
            yield
        finally:
            if renewer is not None:
                renewer.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.shield(self.release(key, member))

    async def _renew_loop(self, key: str, member: str) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.lease_ttl_ms / 3000)
                with contextlib.suppress(Exception):
                    await self.renew(key, member)

    async def close(self) -> None:
        return None


class MemoryLimits(Limits):
    """This process only, no I/O. A lease lasts until released (slot() always releases it)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._leases: dict[str, set[str]] = {}

    async def hit(self, key: str, limit: int, member: str) -> RateDecision:
        now = time.time() * 1000
        q = self._hits.setdefault(key, deque())
        while q and q[0] <= now - WINDOW_MS:
            q.popleft()
        allowed = len(q) < limit
        if allowed:
            q.append(now)
        reset = int(q[0] + WINDOW_MS - now) if q else WINDOW_MS
        return RateDecision(allowed, limit, limit - len(q), reset, int(now))

    async def acquire(self, key: str, max_concurrent: int, member: str) -> bool:
        leases = self._leases.setdefault(key, set())
        if len(leases) >= max_concurrent:
            return False
        leases.add(member)
        return True

    async def release(self, key: str, member: str) -> None:
        self._leases.get(key, set()).discard(member)


class RedisLimits(Limits):
    shared = True

    def __init__(self, url: str, prefix: str):
        import redis.asyncio as aioredis
        self.client = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=5, health_check_interval=30)
        self.prefix = prefix
        self._rate = self.client.register_script(_RATE_LUA)
        self._acquire = self.client.register_script(_ACQUIRE_LUA)
        self._renew = self.client.register_script(_RENEW_LUA)

    async def ping(self) -> None:
        await self.client.ping()

    def _k(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    async def hit(self, key: str, limit: int, member: str) -> RateDecision:
        allowed, remaining, reset, now = await self._rate(keys=[self._k("rate", key)], args=[limit, WINDOW_MS, member])
        return RateDecision(bool(int(allowed)), limit, int(remaining), int(reset), int(now))

    async def acquire(self, key: str, max_concurrent: int, member: str) -> bool:
        ok, _ = await self._acquire(keys=[self._k("conc", key)], args=[max_concurrent, self.lease_ttl_ms, member])
        return bool(int(ok))

    async def renew(self, key: str, member: str) -> None:
        await self._renew(keys=[self._k("conc", key)], args=[self.lease_ttl_ms, member])

    async def release(self, key: str, member: str) -> None:
        await self.client.zrem(self._k("conc", key), member)

    async def close(self) -> None:
        await self.client.aclose()
