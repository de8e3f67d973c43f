"""Batch transcription jobs: submit, run on a worker, progress, cancel, webhooks, retention.

  submit()   the API has parsed the body, fetched any input_audio.url and reserved the estimate (402 if it
             does not fit); the audio goes to the audio store (store/blobs.py), the row to ar_jobs
             (store/jobs.py), a message to the queue (jobs/queue.py). An idempotency key already used by the
             same caller returns the first job.
  run()      in a worker (an `audiorouter worker` process, or threads inside `serve`): claim the row (lease +
             fence), fetch the audio to a temporary file, transcribe it through the same use case as a
             synchronous request (jobs/transcription.py: same routing, chunking, local engines), renewing the
             lease and recording progress; then store the result and settle the charge in ONE transaction
             guarded by the fence. A worker killed mid-job: its lease expires, a sweep re-queues the job, another
             worker runs it from the start; only one of them can finish it, so it is charged once and its
             webhook carries one result. SIGTERM: running jobs get AUDIOROUTER_JOBS_SHUTDOWN_GRACE_S to finish,
             then are handed back to the queue at once.
  deliver()  the webhook, signed (jobs/webhooks.py), retried with backoff for AUDIOROUTER_WEBHOOK_RETRY_WINDOW_S.
  sweep()    every few seconds in every consuming process: re-queue jobs whose lease expired or whose message
             got lost, send due webhooks, delete audio and results past retention."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import GatewayError
from ..core.types import Audio, RoutingPrefs, Segment, Transcript, TranscriptionRequest, Usage, Word
from ..providers.base import BYOK_KEYS
from ..store.jobs import JobStore
from ..store.ledger import Settlement
from ..store.models import Job, to_nano, to_usd, utcnow
from . import webhooks
from .queue import JobQueue

log = logging.getLogger("audiorouter.jobs")
PLAIN_PREFIX = "plain:"  # a webhook secret stored in clear by an older version (prepare() encrypts them)
PARAM_FIELDS = ("model", "task", "language", "prompt", "temperature", "response_format", "models", "session_id", "user")


def new_job_id() -> str:
    return f"job-{int(time.time())}-{secrets.token_hex(9)}"


# ---- (de)serialization ---------------------------------------------------------------------------------
def params_of(req: TranscriptionRequest) -> dict[str, Any]:
    """What a worker needs to rebuild the request, without the audio."""
    p = {f: getattr(req, f) for f in PARAM_FIELDS}
    p["timestamp_granularities"] = list(req.timestamp_granularities)
    p["provider"] = dataclasses.asdict(req.provider)
    p["extra"] = {k: v for k, v in req.extra.items() if k in ("diarize", "keyterms")}
    p["declared_format"] = req.audio.format
    p["filename"] = req.audio.filename
    return p


def request_from(params: dict[str, Any], data: bytes = b"", path: Path | None = None) -> TranscriptionRequest:
    """The request again, its audio the bytes or (`path`) the file on disk, read only as the use case needs."""
    audio = Audio(data, declared_format=params.get("declared_format"), filename=params.get("filename"),
                  path=str(path) if path is not None else None)
    req = TranscriptionRequest(model=params["model"], audio=audio)
    for f in PARAM_FIELDS:
        if f in params:
            setattr(req, f, params[f])
    # every job keeps word and segment timings, so its result can be read in any response_format later
    req.timestamp_granularities = sorted(set(params.get("timestamp_granularities") or []) | {"word", "segment"})
    req.provider = RoutingPrefs(**(params.get("provider") or {}))
    req.extra.update(params.get("extra") or {})
    return req


def transcript_to_dict(t: Transcript) -> dict[str, Any]:
    return dataclasses.asdict(t)


def transcript_from_dict(d: dict[str, Any]) -> Transcript:
    segs = []
    for s in d.get("segments") or []:
        s = dict(s)
        s["words"] = [Word(**w) for w in s.get("words") or []]
        segs.append(Segment(**s))
    return Transcript(**{**d, "segments": segs})


def usage_from_dict(d: dict[str, Any] | None) -> Usage:
    d = d or {}
    return Usage(seconds=d.get("seconds"), input_tokens=d.get("input_tokens"), output_tokens=d.get("output_tokens"),
                 cost=float(d.get("cost") or 0.0))


def public_status(job: Job) -> dict[str, Any]:
    """The job as GET shows it (without the result)."""
    total = job.duration_s
    out: dict[str, Any] = {
        "id": job.id, "object": "transcription.job", "status": job.status,
        "created_at": int(job.created_at.timestamp()),
        "started_at": int(job.started_at.timestamp()) if job.started_at else None,
        "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None,
        "model": job.params.get("model"),
        "progress": {"seconds_done": round(min(job.done_s or 0.0, total or job.done_s or 0.0), 3),
                     "seconds_total": round(total, 3) if total is not None else None,
                     "fraction": (round(min(1.0, (job.done_s or 0.0) / total), 4) if total else None)},
        "attempts": job.attempts,
        "generation_id": job.generation_id,
    }
    if job.status == "succeeded":
        out["usage"] = job.usage
        out["cost"] = to_usd(job.cost_nano)
        out["provider"] = job.provider
        out["result_available"] = not job.purged and job.result_key is not None
    if job.error:
        out["error"] = job.error
    if job.webhook_url:
        out["webhook"] = {"state": job.webhook_state, "attempts": job.webhook_attempts,
                          "last_error": job.webhook_error}
    return out


# ---- the runtime ---------------------------------------------------------------------------------------
class JobRuntime:
    """Everything jobs need in one process: the router, the store, the queue, the audio store. `consume(n)`
    makes the process a worker too (n consumer threads that run jobs on this event loop)."""

    def __init__(self, settings: Any, router: Any, store: Any, queue: JobQueue, blobs: Any):
        self.settings = settings
        self.router = router
        self.store = store
        self.jobs = JobStore(store.db)
        self.queue = queue
        self.blobs = blobs
        self.owner = f"{os.uname().nodename[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.active: dict[str, tuple[asyncio.Task, int]] = {}
        self.progress: dict[str, float] = {}
        self._handing_back: set[str] = set()
        self._sweeper: asyncio.Task | None = None
        self._stopping = threading.Event()

    @property
    def lease_s(self) -> float:
        return float(self.settings.jobs_lease_s)

    # ---- consumer side ----------------------------------------------------------------------------------
    def start_sweeper(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue.handler = self._handle
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_loop())

    def _handle(self, kind: str, job_id: str) -> None:
        """A consumer thread's task: run the coroutine on our loop and wait for it."""
        if self.loop is None or self._stopping.is_set():
            return  # stopping: the sweep of a live worker re-sends it
        coro = self.run(job_id) if kind == "run" else self.deliver(job_id)
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            fut.result()
        except (asyncio.CancelledError, Exception):  # logged where it happened
            pass

    async def stop(self, *, hand_back: bool = True) -> None:
        """Hand back what is still running (claimable at once by any worker), stop the sweep."""
        self._stopping.set()
        if hand_back:
            for job_id, (task, _fence) in list(self.active.items()):
                self._handing_back.add(job_id)
                task.cancel()
            for task, _fence in list(self.active.values()):
                with contextlib.suppress(BaseException):
                    await task
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(BaseException):
                await self._sweeper
            self._sweeper = None

    async def _sweep_loop(self) -> None:
        period = max(0.5, min(5.0, self.lease_s / 4))
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a database or queue hiccup must not end the loop
                log.warning("job sweep failed: %s", type(e).__name__)
            await asyncio.sleep(period)

    async def sweep(self) -> dict[str, int]:
        # a queued job's message may be lost (the queue's storage was flushed, a server died between storing the
        # job and sending it): when fewer messages wait than jobs do, re-send the oldest jobs' (a duplicate
        # message is harmless: its claim fails). Running jobs under an expired lease are always re-sent.
        waiting = await self.jobs.waiting_count(self.lease_s)
        missing = waiting - await self.queue.apending() if waiting else 0
        requeued: list[str] = []
        if missing > 0 or await self.jobs.any_expired():
            requeued = await self.jobs.requeue(queued_older_than_s=self.lease_s, queued_limit=max(0, missing))
        for jid in requeued:
            await self.queue.aenqueue(jid)
        if requeued:
            log.warning("re-queued %d job(s) whose worker stopped renewing its lease or whose message was lost",
                        len(requeued))
        due = await self.jobs.overdue_webhooks(self.lease_s)
        for jid in due:
            await self.queue.aschedule_webhook(jid)
        purged = 0
        for job in await self.jobs.to_purge():
            await self.purge(job)
            purged += 1
        return {"requeued": len(requeued), "webhooks": len(due), "purged": purged}

    async def purge(self, job: Job) -> None:
        for key in (job.audio_key, job.result_key):
            if key:
                with contextlib.suppress(Exception):
                    await self.blobs.delete(key)
        await self.jobs.update(job.id, purged=True)

    # ---- submit --------------------------------------------------------------------------------------------
    async def submit(self, *, job_id: str, key_hash: str | None, req: TranscriptionRequest, audio_path: Path | None,
                     duration: float | None, generation_id: str, reserved_nano: int, include_byok: bool,
                     webhook: dict[str, str] | None, idempotency_key: str | None) -> tuple[Job, bool]:
        """Store the audio and the row, then wake a worker. (job, False) when the idempotency key was used
        before by this caller: the first job, nothing new stored."""
        scoped = f"{key_hash or '-'}:{idempotency_key}" if idempotency_key else None
        if scoped and (old := await self.jobs.by_idempotency(scoped)) is not None:
            return old, False
        audio_key = f"audio/{job_id}"
        size = (await asyncio.to_thread(os.path.getsize, audio_path)) if audio_path else len(req.audio.data)
        if audio_path is not None:  # an upload spooled to disk (api/batch.py): moved, never read into memory
            await self.blobs.move_file(audio_key, audio_path)
        else:
            await self.blobs.put_bytes(audio_key, bytes(req.audio.data))
        # the webhook secret is always encrypted at rest (store/crypto.py: when no key is configured, one is made
        # once in the data dir; store/keycheck.py keeps every process sharing the database on the same key)
        secret = self.store.vault.encrypt(webhook["secret"]) if webhook and webhook.get("secret") else None
        values = {"id": job_id, "key_hash": key_hash, "idempotency_key": scoped, "params": params_of(req),
                  "audio_key": audio_key, "audio_bytes": size, "duration_s": duration, "generation_id": generation_id,
                  "reserved_nano": reserved_nano, "include_byok": include_byok, "zdr": bool(req.provider.zdr),
                  "webhook_url": webhook["url"] if webhook else None, "webhook_secret": secret}
        job, created = await self.jobs.create(values)
        if not created:
            with contextlib.suppress(Exception):
                await self.blobs.delete(audio_key)
            return job, False
        try:
            await self.queue.aenqueue(job_id)
        except Exception as e:  # the row is safe; the sweep sends the message later
            log.warning("could not queue job %s now (%s); the sweep will", job_id, type(e).__name__)
        return job, True

    def _secret(self, job: Job) -> str | None:
        s = job.webhook_secret
        if not s:
            return None
        if s.startswith(PLAIN_PREFIX):  # stored by a version that kept it in clear; encrypted by prepare()
            return s[len(PLAIN_PREFIX):]
        return self.store.vault.decrypt(s)

    async def prepare(self) -> None:
        """At start-up (server and worker): encrypt the webhook secrets that older versions stored in clear
        (`plain:<secret>`, written when no AUDIOROUTER_SECRET_KEY was set). The store has checked its key already."""
        n = await self.jobs.encrypt_plain_secrets(PLAIN_PREFIX, self.store.vault.encrypt)
        if n:
            log.warning("encrypted %d webhook secret(s) that were stored in clear", n)

    # ---- cancel --------------------------------------------------------------------------------------------
    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (a running one stops at its worker's next lease renewal); the
        reservation is released, nothing is charged, its audio is deleted. None: it had already ended."""
        now = utcnow()
        ledger = self.store.ledger

        def release(conn: Any, row: Any) -> None:
            ledger.settle_in(conn, row.generation_id, row.key_hash, row.reserved_nano,
                             Settlement(status="cancelled", error_type="cancelled",
                                        error_message="the job was cancelled"))
        prev = await self.jobs.cancel(job_id, {"finished_at": now, "purge_at": now, "webhook_state": None}, release)
        if prev is None:
            return None
        job = await self.jobs.get(job_id)
        if job is not None:
            await self.purge(job)
        if job_id in self.active:  # running here: stop now instead of at the next renewal
            self.active[job_id][0].cancel()
        return job

    # ---- run -----------------------------------------------------------------------------------------------
    async def run(self, job_id: str) -> str | None:
        """Run one job if it can be claimed; returns its final status, or None (not ours / handed back)."""
        job = await self.jobs.claim(job_id, self.owner, self.lease_s)
        if job is None:
            return None
        if job.attempts > int(self.settings.jobs_max_attempts):
            err = GatewayError(f"the job's worker stopped {job.attempts - 1} times while running it; giving up",
                               status=500, code="worker_lost")
            await self._fail(job, err)
            return "failed"
        task = asyncio.current_task()
        assert task is not None
        self.active[job_id] = (task, job.fence)
        beat = asyncio.create_task(self._renew_loop(job, task))
        t0 = time.perf_counter()
        try:
            result, byok = await self._transcribe(job)
        except asyncio.CancelledError:
            if job_id in self._handing_back:
                self._handing_back.discard(job_id)
                if await self.jobs.hand_back(job_id, job.fence):
                    with contextlib.suppress(Exception):
                        await self.queue.aenqueue(job_id)
                    log.info("handed job %s back to the queue", job_id)
            return None
        except GatewayError as e:
            return await self._fail(job, e)
        except Exception as e:
            log.exception("job %s failed", job_id)
            return await self._fail(job, GatewayError(f"internal error ({type(e).__name__})", status=500,
                                                       code="internal_error"))
        finally:
            beat.cancel()
            self.active.pop(job_id, None)
            self.progress.pop(job_id, None)
        return await self._succeed(job, result, byok, (time.perf_counter() - t0) * 1000)

    async def _renew_loop(self, job: Job, task: asyncio.Task) -> None:
        period = max(0.2, min(2.0, self.lease_s / 3))
        while True:
            await asyncio.sleep(period)
            try:
                ours = await self.jobs.renew(job.id, job.fence, self.lease_s, self.progress.get(job.id))
            except Exception as e:  # the database hiccups: keep working, the lease has slack
                log.warning("could not renew the lease of job %s (%s)", job.id, type(e).__name__)
                continue
            if not ours:  # cancelled, or our lease ran out and another worker has it
                log.info("job %s is no longer this worker's; stopping it", job.id)
                task.cancel()
                return

    async def _transcribe(self, job: Job) -> tuple[Any, dict[str, str]]:
        from .transcription import transcribe  # the one transcription use case
        # the client's declared format names the file only when it is a plain format name (never a path piece)
        declared = str(job.params.get("declared_format") or "")
        suffix = "." + (declared if declared.isalnum() and len(declared) <= 16 else "bin")
        # the audio is fetched to a file (S3: download_file, in parts) and transcribed from it: long audio is
        # decoded from the file, never read whole into memory (jobs/transcription.py); the file goes afterwards
        d = await asyncio.to_thread(tempfile.mkdtemp, prefix="audiorouter-job-", dir=self.settings.tmp_dir)
        try:
            path = Path(d) / f"audio{suffix}"
            await self.blobs.get_file(job.audio_key, path)
            req = request_from(job.params, path=path)
            models = [req.model] + [m for m in req.models or [] if m != req.model]
            byok = await self.store.byok.keys_for(job.key_hash, models)
            BYOK_KEYS.set(byok)  # this task's provider calls use the caller's own keys (providers/base.py)
            req.extra["byok"] = byok

            def progress(t: float) -> None:
                self.progress[job.id] = float(t)
            result, _headers = await transcribe(self.router, req, self.settings, field="file", progress=progress)
        finally:
            await asyncio.to_thread(shutil.rmtree, d, True)
        return result, byok

    def _settlement(self, job: Job, result: Any, byok: dict[str, str], ms: float) -> tuple[Settlement, float]:
        route, usage = result.route, result.usage
        is_byok = bool(route.provider and route.provider in byok)
        upstream = usage.cost
        cost = upstream * float(self.settings.byok_fee) if is_byok else upstream
        attempts = [{"provider": a.provider, "endpoint": a.endpoint, "status": a.status,
                     "latency_ms": round(a.latency_ms, 1), "error": a.error, "is_byok": a.provider in byok}
                    for a in route.attempts or []]
        st = Settlement(status="success", cost_nano=to_nano(cost),
                        counted_nano=to_nano(cost) if (not is_byok or job.include_byok) else 0,
                        upstream_cost_nano=to_nano(upstream), is_byok=is_byok, model=route.model,
                        provider=route.provider, endpoint=route.endpoint, substitute=route.substitute,
                        attempts=attempts, seconds=usage.seconds, input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens, latency_ms=ms, generation_time_ms=ms)
        return st, cost

    async def _succeed(self, job: Job, result: Any, byok: dict[str, str], ms: float) -> str | None:
        st, cost = self._settlement(job, result, byok, ms)
        usage = dataclasses.replace(result.usage, cost=cost)
        # one object per claim: written before the row points at it, so a worker that loses the race below (its
        # lease ran out while it worked) can never replace the winner's result; it deletes its own instead
        result_key = f"results/{job.id}.{job.fence}.json"
        await self.blobs.put_bytes(result_key, orjson.dumps({"transcript": transcript_to_dict(result.transcript),
                                                              "usage": usage.as_stt_dict()}))
        now = utcnow()
        ledger = self.store.ledger
        values = {"status": "succeeded", "finished_at": now, "result_key": result_key, "usage": usage.as_stt_dict(),
                      "cost_nano": st.cost_nano, "provider": result.route.provider, "model": result.route.model,
                      "done_s": job.duration_s or usage.seconds or 0.0,
                      "purge_at": now + timedelta(seconds=float(self.settings.jobs_retention_s)),
                      "webhook_next_at": None}
        ok = await self.jobs.finish(job.id, job.fence, values,
                                    lambda conn: ledger.settle_in(conn, job.generation_id, job.key_hash,
                                                                  job.reserved_nano, st))
        if not ok:
            with contextlib.suppress(Exception):
                await self.blobs.delete(result_key)
            return None
        await self._after(job)
        return "succeeded"

    async def _fail(self, job: Job, e: GatewayError) -> str | None:
        now = utcnow()
        ledger = self.store.ledger
        st = Settlement(status="error", error_type=e.code, error_status=e.status, error_message=e.message)
        values = {"status": "failed", "finished_at": now,
                  "error": {"code": e.status, "type": e.code, "message": e.message},
                  "purge_at": now + timedelta(seconds=float(self.settings.jobs_retention_s)), "webhook_next_at": None}
        ok = await self.jobs.finish(job.id, job.fence, values,
                                    lambda conn: ledger.settle_in(conn, job.generation_id, job.key_hash,
                                                                  job.reserved_nano, st))
        if not ok:
            return None
        await self._after(job)
        return "failed"

    async def _after(self, job: Job) -> None:
        if job.zdr and job.audio_key:  # zero data retention: the audio goes as soon as the job ends
            with contextlib.suppress(Exception):
                await self.blobs.delete(job.audio_key)
        if job.webhook_url:
            try:
                await self.queue.aschedule_webhook(job.id)
            except Exception as e:  # the sweep sends due webhooks anyway
                log.warning("could not queue the webhook of job %s (%s)", job.id, type(e).__name__)

    # ---- results and webhooks --------------------------------------------------------------------------------
    async def result(self, job: Job) -> tuple[Transcript, Usage] | None:
        if job.status != "succeeded" or job.purged or not job.result_key:
            return None
        raw = await self.blobs.get_bytes(job.result_key)
        if raw is None:
            return None
        d = orjson.loads(raw)
        return transcript_from_dict(d["transcript"]), usage_from_dict(d["usage"])

    async def webhook_body(self, job: Job) -> bytes:
        """The same bytes on every delivery of the job's event (built from the final row and result)."""
        body = public_status(job)
        body.pop("webhook", None)
        body.pop("attempts", None)
        body["type"] = f"transcription.job.{job.status}"
        got = await self.result(job)
        if got is not None:
            t, usage = got
            body["result"] = {"text": t.text, "language": t.language, "duration": t.duration,
                              "segments": [{"id": s.id, "start": s.start, "end": s.end, "text": s.text}
                                           for s in t.segments], "usage": usage.as_stt_dict()}
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    async def deliver(self, job_id: str) -> str | None:
        """One delivery attempt of a due webhook; returns 'delivered', 'retry', 'failed' or None (not due)."""
        hold = max(30.0, 3 * float(self.settings.webhook_timeout_s))
        job = await self.jobs.claim_webhook(job_id, hold)
        if job is None:
            return None
        secret = self._secret(job)
        if secret is None:
            await self.jobs.update(job_id, webhook_state="failed", webhook_error="the webhook secret cannot be "
                                   "decrypted (AUDIOROUTER_SECRET_KEY changed?)")
            return "failed"
        body = await self.webhook_body(job)
        err = await webhooks.post(job.webhook_url or "", body, secret, f"{job.id}.{job.status}", self.settings)
        if err is None:
            await self.jobs.update(job_id, webhook_state="delivered", webhook_error=None, webhook_next_at=None)
            return "delivered"
        window = float(self.settings.webhook_retry_window_s)
        finished = job.finished_at or utcnow()
        if utcnow() >= finished + timedelta(seconds=window):
            await self.jobs.update(job_id, webhook_state="failed", webhook_error=err[:500])
            log.warning("gave up on the webhook of job %s after %d attempts (%s)", job_id, job.webhook_attempts, err)
            return "failed"
        delay = webhooks.next_delay(job.webhook_attempts)
        await self.jobs.update(job_id, webhook_error=err[:500], webhook_next_at=utcnow() + timedelta(seconds=delay))
        with contextlib.suppress(Exception):
            await self.queue.aschedule_webhook(job_id, delay)
        return "retry"
