"""A bounded pool for blocking local inference. Jobs run in threads (CTranslate2 and onnxruntime release
the GIL); at most `workers` run at once and at most `queue_size` wait. Past that the job is refused with
503 + Retry-After at once, so the event loop and /health never wait on a model."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from ..core.errors import Overloaded

T = TypeVar("T")


class WorkerPool:
    def __init__(self, workers: int, queue_size: int, name: str = "local"):
        self.workers = workers
        self.queue_size = queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ar-{name}")
        self._lock = threading.Lock()
        self.pending = 0  # running + waiting

    def _admit(self) -> None:
        with self._lock:
            if self.pending >= self.workers + self.queue_size:
                raise Overloaded(
                    f"local engine is busy ({self.pending} jobs running or queued); retry shortly",
                    headers={"Retry-After": "2"})
            self.pending += 1

    def _release(self) -> None:
        with self._lock:
            self.pending -= 1

    async def run(self, fn: Callable[..., T], *args) -> T:
        self._admit()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        finally:
            self._release()

    def submit_stream(self, fn: Callable[[Callable[[object], None]], None]) -> "asyncio.Queue":
        """Run a producer in the pool that emits items via the callback; returns a queue the caller drains.
        The queue ends with a sentinel (None) or an exception instance."""
        self._admit()
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(q.put_nowait, item)

        def job() -> None:
            try:
                fn(emit)
                emit(None)
            except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
                emit(e)
            finally:
                self._release()

        self._executor.submit(job)
        return q

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
