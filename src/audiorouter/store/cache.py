"""In-process copies of rarely changing rows (auth mode, keys by token hash, BYOK keys), so that a request
reads no database. A write through this process drops the copy at once; writes by other processes arrive
through Database.on_change (PostgreSQL NOTIFY, or a stamp file next to a SQLite database), and every copy
expires after AUDIOROUTER_KEY_CACHE_TTL_S whatever happens."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class TTLCache:
    """Values by key for ttl_s seconds, at most max_size of them (the oldest goes first). A None value (an
    unknown token) is kept apart, at most max_none of them, so a flood of bad tokens cannot push out keys."""

    def __init__(self, ttl_s: float, max_size: int = 100_000, max_none: int = 10_000):
        self.ttl_s = ttl_s
        self._found: dict[Hashable, tuple[float, Any]] = {}
        self._none: dict[Hashable, tuple[float, Any]] = {}
        self.max_size, self.max_none = max_size, max_none
        self._epoch = 0  # bumped by drop(): a load that was under way is then not kept
        self._loading: dict[Hashable, asyncio.Future] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        hit = self._found.get(key) or self._none.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        task = self._loading.get(key)
        if task is None:  # one load per key at a time, in its own task: every caller shares it (no stampede
            # of reads when a popular key expires), and a caller that gives up does not cancel it for the others
            task = asyncio.get_running_loop().create_task(self._load(key, load, self._epoch))
            self._loading[key] = task
            def forget(t: asyncio.Task, k: Any = key) -> None:
                if self._loading.get(k) is t:
                    self._loading.pop(k, None)
            task.add_done_callback(forget)
        return await asyncio.shield(task)

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[Any]], epoch: int) -> Any:
        value = await load()
        if epoch == self._epoch and self.ttl_s > 0:
            self._found.pop(key, None)
            self._none.pop(key, None)
            shelf, cap = (self._found, self.max_size) if value is not None else (self._none, self.max_none)
            if len(shelf) >= cap:
                del shelf[next(iter(shelf))]
            shelf[key] = (time.monotonic() + self.ttl_s, value)
        return value

    def drop(self, key: Hashable | None = None) -> None:
        """Forget one key, or everything."""
        self._epoch += 1
        if key is None:
            self._loading.clear()
            self._found.clear()
            self._none.clear()
        else:
            self._loading.pop(key, None)
            self._found.pop(key, None)
            self._none.pop(key, None)
