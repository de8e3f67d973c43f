"""A bounded pool for blocking local inference. Jobs run in threads (CTranslate2 and onnxruntime release
the GIL); at most `workers` run at once and at most `queue_size` wait. Past that the job is refused with
503 + Retry-After at once, so the event loop and /health never wait on a model.

A slot is held until the job's thread is really done, not until its caller stops waiting: a request that
is cancelled (client gone) while its job runs keeps that job counted, so the bound is never exceeded."""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from ..core.errors import Overloaded

T = TypeVar("T")


class WorkerPool:
    def __init__(self, workers: int, queue_size: int, name: str = "local"):
        self.workers = max(1, int(workers))
        self.queue_size = max(0, int(queue_size))
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"ar-{name}")
        self._lock = threading.Lock()
        self.pending = 0  # running + waiting
        self.running = 0
        self.rejected = 0  # jobs refused with 503 since start
        self._avg_job_s = 2.0  # moving average of job durations, for Retry-After

    @property
    def capacity(self) -> int:
        return self.workers + self.queue_size

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead drained at the average job time."""
        with self._lock:
            waves = max(1, math.ceil((self.pending - self.workers + 1) / self.workers))
            return max(1, min(60, math.ceil(self._avg_job_s * waves)))

    def _admit(self) -> None:
        with self._lock:
            if self.pending >= self.capacity:
                self.rejected += 1
                busy = self.pending
            else:
                self.pending += 1
                return
        raise Overloaded(
            f"the local engine is busy ({busy} jobs running or queued, capacity {self.capacity}); retry shortly",
            headers={"Retry-After": str(self.retry_after())}, metadata={"pending": busy, "capacity": self.capacity},
            code="overloaded")

    def _release(self, started: float | None) -> None:
        with self._lock:
            self.pending -= 1
            if started is not None:
                self.running -= 1
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * (time.monotonic() - started)

    def _submit(self, fn: Callable[..., T], *args) -> Future:
        """Admit (or raise Overloaded), then run fn in a worker thread; the slot is released when the job
        finishes, or when it is cancelled before it starts."""
        self._admit()
        state: dict[str, float | None] = {"started": None}

        def job():
            with self._lock:
                self.running += 1
            state["started"] = time.monotonic()
            return fn(*args)

        try:
            fut = self._executor.submit(job)
        except BaseException:
            self._release(None)
            raise
        fut.add_done_callback(lambda f: self._release(state["started"]))
        return fut

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def submit_stream(self, fn: Callable[[Callable[[object], None]], None]) -> asyncio.Queue:
        """Run a producer in the pool that emits items via the callback; returns a queue the caller drains.
        The queue ends with a sentinel (None) or an exception instance."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def emit(item: object) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the loop is gone (shutdown): nobody is listening
                pass

        def producer() -> None:
            try:
                fn(emit)
                emit(None)
            except BaseException as e:
                emit(e)

        self._submit(producer)
        return q

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
