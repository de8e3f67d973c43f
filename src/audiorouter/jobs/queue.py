"""The job queue: huey (https://huey.readthedocs.io), one engine for both shapes of deployment.

  * embedded default: SqliteHuey, a file next to the database in AUDIOROUTER_DATA_DIR; `audiorouter serve`
    runs consumer threads in-process, and queued messages survive a restart;
  * many machines: AUDIOROUTER_JOBS_QUEUE_URL=redis://host:6379/0 (RedisHuey, blocking pops: a message reaches
    an idle worker at once), `audiorouter worker` on any number of machines.

Messages only wake workers: the job row (store/jobs.py) is the truth, so a message lost with a killed worker
or delivered twice changes nothing (the sweep re-sends what nobody claimed; a second claim fails). Two tasks:
`run_job(id)` and `deliver_webhook(id)`; webhook retries are huey's scheduled tasks (kept in the queue's storage)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huey import RedisHuey, SqliteHuey
from huey.consumer import Consumer

log = logging.getLogger("audiorouter.jobs")
QUEUE_NAME = "audiorouter-jobs"


def make_huey(settings: Any):
    url = settings.jobs_queue_url
    if not url:
        path = Path(settings.data_dir) / "jobs-queue.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, utc=True)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        # the key prefix keeps gateways that share one Redis apart (AUDIOROUTER_REDIS_PREFIX)
        return RedisHuey(f"{settings.redis_prefix}{QUEUE_NAME}", url=url, results=False, utc=True, blocking=True,
                         read_timeout=1)
    if scheme == "sqlite":
        path = Path(urlsplit(url).path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, utc=True)
    raise ValueError(f"AUDIOROUTER_JOBS_QUEUE_URL: {scheme}:// is not supported (redis://host:6379/0 or sqlite:///path)")


class JobQueue:
    """The huey instance with our two tasks. `handler(kind, job_id)` runs a task in a consumer thread (set by
    the process that consumes: a server with in-process workers, or `audiorouter worker`)."""

    def __init__(self, settings: Any):
        self.settings = settings
        self.huey = make_huey(settings)
        self.is_sqlite = isinstance(self.huey, SqliteHuey)
        self.handler: Callable[[str, str], None] | None = None
        self.consumer: Consumer | None = None

        @self.huey.task(name="run_job")
        def run_job(job_id: str) -> None:
            self._handle("run", job_id)

        @self.huey.task(name="deliver_webhook")
        def deliver_webhook(job_id: str) -> None:
            self._handle("webhook", job_id)

        self._run_job, self._deliver = run_job, deliver_webhook

    def _handle(self, kind: str, job_id: str) -> None:
        if self.handler is None:
            raise RuntimeError("no job handler in this process")
        self.handler(kind, job_id)

    # producers (blocking calls: a SQLite or Redis write each; use the async forms on an event loop)
    def enqueue(self, job_id: str) -> None:
        self._run_job(job_id)

    def schedule_webhook(self, job_id: str, delay_s: float = 0.0) -> None:
        if delay_s > 0:
            self._deliver.schedule((job_id,), delay=delay_s)
        else:
            self._deliver(job_id)

    async def apending(self) -> int:
        """Messages waiting in the queue (both tasks)."""
        return int(await asyncio.to_thread(self.huey.pending_count))

    async def aenqueue(self, job_id: str) -> None:
        await asyncio.to_thread(self.enqueue, job_id)

    async def aschedule_webhook(self, job_id: str, delay_s: float = 0.0) -> None:
        await asyncio.to_thread(self.schedule_webhook, job_id, delay_s)

    # consumers
    def make_consumer(self, workers: int, *, grace_s: float) -> Consumer:
        # SQLite is polled: every 10 ms at first, backing off to 50 ms when idle (a job waits < 100 ms for an
        # idle worker); Redis pops block, so a message is taken as soon as it arrives
        self.consumer = Consumer(self.huey, workers=max(1, workers), worker_type="thread", periodic=False,
                            initial_delay=0.01, backoff=1.2, max_delay=0.05, scheduler_interval=1,
                            check_worker_health=True, health_check_interval=5, graceful_signal="TERM",
                            shutdown_timeout=grace_s)
        return self.consumer

    def start_threads(self) -> None:
        """The consumer's scheduler and worker threads inside another program (the server), without what
        Consumer.run() adds for a process of its own (signal handlers, the main loop)."""
        assert self.consumer is not None
        self.consumer.scheduler.start()
        for _, thread in self.consumer.worker_threads:
            thread.start()

    def close(self) -> None:
        try:
            self.huey.storage.close()
        except Exception:  # closing is best effort
            pass
