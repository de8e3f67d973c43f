"""Processes that run batch jobs: consumer threads inside `serve` (the embedded default), and `audiorouter
worker` (any number of them, on any machines that share the database, the queue and the audio store)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from typing import Any

from ..store.blobs import open_blobs
from ..store.db import StoreConfigError
from .batch import JobRuntime
from .queue import JobQueue

log = logging.getLogger("audiorouter.jobs")


def in_process_threads(settings: Any, queue: JobQueue) -> int:
    n = settings.jobs_in_process
    if n is None:
        return 1 if queue.is_sqlite else 0
    return max(0, int(n))


async def open_runtime(settings: Any, router: Any, store: Any, *, threads: int | None = None) -> JobRuntime:
    """The jobs runtime of a server: submit always; with consumer threads (default: 1 on the SQLite queue) it
    runs jobs too, on this event loop."""
    queue = JobQueue(settings)
    rt = JobRuntime(settings, router, store, queue, open_blobs(settings))
    await rt.prepare()
    n = in_process_threads(settings, queue) if threads is None else threads
    if n > 0:
        rt.start_sweeper()
        queue.make_consumer(n, grace_s=float(settings.jobs_shutdown_grace_s))
        queue.start_threads()
    return rt


async def close_runtime(rt: JobRuntime) -> None:
    """Stop consuming: running jobs get the grace period, then are handed back (claimable at once)."""
    consumer = rt.queue.consumer
    if consumer is not None:
        consumer.stop_flag.set()  # no new tasks; the threads finish what they run
        deadline = time.monotonic() + float(rt.settings.jobs_shutdown_grace_s)
        while rt.active and time.monotonic() < deadline:  # noqa: ASYNC110 - jobs end in other tasks; poll briefly
            await asyncio.sleep(0.05)
    await rt.stop(hand_back=True)
    if consumer is not None:
        threads = [t for _, t in consumer.worker_threads] + [consumer.scheduler]
        await asyncio.to_thread(lambda: [t.join(2.0) for t in threads])
    rt.queue.close()


def run_worker(settings: Any, concurrency: int) -> int:
    """`audiorouter worker`: huey's consumer in the main thread (SIGTERM: graceful, then hand back; SIGINT
    likewise), our event loop in another thread with the router, the store and the local engines."""
    from ..providers.registry import build_adapters
    from ..routing.catalog import Catalog
    from ..routing.router import Router
    from ..store import Store

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="audiorouter-jobs-loop", daemon=True).start()
    catalog = Catalog.load(settings.catalog)
    adapters = build_adapters(catalog, settings)
    router = Router(catalog, adapters, settings)
    store = Store(settings)

    async def setup() -> JobRuntime:
        await store.start(check_bind=False)
        for a in adapters.values():
            await a.start()
        rt = JobRuntime(settings, router, store, JobQueue(settings), open_blobs(settings))
        await rt.prepare()
        rt.start_sweeper()
        return rt

    try:
        rt = asyncio.run_coroutine_threadsafe(setup(), loop).result()
    except StoreConfigError as e:  # one clear line and exit status 1, as `serve` does (api/auth.py start_store)
        log.error("%s", e)
        print(f"audiorouter worker: {e}", file=sys.stderr)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(store.close(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        return 1
    consumer = rt.queue.make_consumer(concurrency, grace_s=float(settings.jobs_shutdown_grace_s))
    log.warning("worker %s: %d job(s) at a time, queue %s, audio store %s, lease %.0f s", rt.owner, concurrency,
                "SQLite" if rt.queue.is_sqlite else "Redis", rt.blobs.describe(), rt.lease_s)
    try:
        consumer.run()  # returns after SIGTERM / SIGINT, once the jobs finished or the grace period passed
    finally:
        async def teardown() -> None:
            await rt.stop(hand_back=True)
            for a in adapters.values():
                with contextlib.suppress(Exception):
                    await a.aclose()
            await store.close()
        asyncio.run_coroutine_threadsafe(teardown(), loop).result(timeout=60)
        rt.queue.close()
        loop.call_soon_threadsafe(loop.stop)
    return 0
