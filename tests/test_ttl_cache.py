"""store/cache.py: the in-process copy of keys, auth mode and BYOK rows."""
from __future__ import annotations

import asyncio

import pytest

from audiorouter.store.cache import TTLCache


async def test_concurrent_misses_share_one_load():
    calls = 0

    async def load():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"v": calls}

    c = TTLCache(ttl_s=10)
    got = await asyncio.gather(*[c.get("k", load) for _ in range(32)])
    assert calls == 1 and all(g == {"v": 1} for g in got)
    assert await c.get("k", load) == {"v": 1} and calls == 1  # cached


async def test_a_caller_giving_up_does_not_cancel_the_shared_load():
    async def load():
        await asyncio.sleep(0.05)
        return "row"

    c = TTLCache(ttl_s=10)
    first = asyncio.ensure_future(c.get("k", load))
    second = asyncio.ensure_future(c.get("k", load))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "row"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached():
    calls = 0

    async def load():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise OSError("database down")
        return "row"

    c = TTLCache(ttl_s=10)
    got = await asyncio.gather(c.get("k", load), c.get("k", load), return_exceptions=True)
    assert all(isinstance(g, OSError) for g in got) and calls == 1
    assert await c.get("k", load) == "row" and calls == 2


async def test_drop_during_a_load_keeps_the_stale_answer_out_of_the_cache():
    gate = asyncio.Event()
    answers = iter(["old", "new"])

    async def load():
        await gate.wait()
        return next(answers)

    c = TTLCache(ttl_s=10)
    pending = asyncio.ensure_future(c.get("k", load))
    await asyncio.sleep(0)
    c.drop("k")  # a write committed while the read was under way
    gate.set()
    assert await pending == "old"
    assert await c.get("k", load) == "new"  # not the copy read before the change
