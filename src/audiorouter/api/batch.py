"""Batch transcription jobs (OpenRouter dialect and envelope):

  POST   /api/v1/audio/transcriptions/jobs          the body of a transcription (JSON with input_audio.data or
                                                    input_audio.url, or a multipart upload) plus `webhook`
                                                    ({url, secret?}) and `idempotency_key` -> 202 {id, status: queued}
  GET    /api/v1/audio/transcriptions/jobs/{id}     status, progress, usage, cost; the result when done
                                                    (?response_format=json|verbose_json|text|srt|vtt)
  GET    /api/v1/audio/transcriptions/jobs          the caller's jobs, newest first (?status=&limit=&after=)
  DELETE /api/v1/audio/transcriptions/jobs/{id}     cancel

The estimate is reserved at submit like a synchronous request's (402 when it does not fit); the worker settles
the actual cost once (jobs/batch.py)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from ..audio.chunking import decode_file_to_spool, probe_duration, probe_file_duration
from ..core.errors import GatewayError, InvalidRequest, NotFound
from ..core.types import TRANSCRIPT_FORMATS, TranscriptionRequest
from ..jobs import webhooks
from ..jobs.batch import new_job_id, public_status
from ..store.jobs import STATUSES
from ..store.ledger import NewGeneration, Settlement
from .auth import principal
from .context import services
from .generations import caller_keys, estimate_nano, plan_any_length, store_unavailable
from .json_body import SpooledBase64
from .parsing import parse_json, read_body, transcription_from_form, transcription_from_json
from .render import render_transcript, transcript_payload
from .url_input import fetch_audio

router = APIRouter()
log = logging.getLogger("audiorouter.jobs")
BASE = "/api/v1/audio/transcriptions/jobs"


def _runtime(request: Request) -> Any:
    rt = getattr(request.app.state, "jobs", None)
    if rt is None:
        raise GatewayError("batch jobs are not available on this server", status=503, code="jobs_unavailable")
    return rt


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _webhook(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # a form field may carry the object as JSON
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidRequest("webhook: expected an object {url, secret?}", param="webhook") from None
    if not isinstance(value, dict):
        raise InvalidRequest("webhook: expected an object {url, secret?}", param="webhook")
    url = value.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("webhook.url: required; the http(s) URL to POST the job's outcome to", param="webhook.url")
    secret = value.get("secret")
    if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 256):
        raise InvalidRequest("webhook.secret: expected a string of 16 to 256 characters", param="webhook.secret")
    unknown = set(value) - {"url", "secret"}
    if unknown:
        raise InvalidRequest(f"webhook: unknown field {sorted(unknown)[0]!r} (expected url, secret)", param="webhook")
    return {"url": url.strip(), **({"secret": secret} if secret else {})}


def _idempotency(value: Any, header: str | None) -> str | None:
    value = value if value is not None else header
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise InvalidRequest("idempotency_key: expected a string of 1 to 255 characters", param="idempotency_key")
    return value


async def _parse(request: Request, spool: str) -> tuple[TranscriptionRequest, dict[str, Any], str]:
    """The body, of any size up to AUDIOROUTER_JOBS_MAX_UPLOAD_BYTES, never held in memory: a multipart upload's
    file is written to the file `spool` as it is parsed; a JSON body's base64 input_audio.data is decoded piece
    by piece as it arrives straight into that file (api/json_body.py). Either way the request's audio is then
    the file (Audio.path)."""
    settings = services(request).settings
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        fields: dict[str, Any] = {}
        req = await transcription_from_form(request, "transcribe", int(settings.jobs_max_upload_bytes), fields,
                                            to_file=spool)
        return req, fields, "file"
    if ctype.startswith("application/json"):
        # (the decoded pieces, up to 3/4 of a network chunk each, are written to the page cache on the loop)
        f = await asyncio.to_thread(open, spool, "w+b")
        try:
            data = parse_json(await read_body(request, int(settings.jobs_max_upload_bytes), audio=True, spool=f))
        finally:
            f.close()
        extras: dict[str, Any] = {k: data.pop(k) for k in ("webhook", "idempotency_key") if k in data}
        ia = data.get("input_audio")
        spooled = isinstance(ia, dict) and isinstance(ia.get("data"), SpooledBase64)
        req = transcription_from_json(data, "transcribe")  # checks the fields (the audio's head for sniffing)
        if spooled:  # the decoded audio is in the spool file: the request's audio is that file
            req.audio.data = b""
            req.audio.path = spool
        return req, extras, "input_audio.data"
    raise InvalidRequest(f"Content-Type: {ctype!r} is not supported; send application/json or multipart/form-data",
                         param="Content-Type", status=415)


async def _duration(req: TranscriptionRequest, field: str, tmp: str | None) -> float:
    """The audio's length for the estimate: what the container says, else decoded (a 4xx naming `field` when
    it is not audio). An upload on disk is decoded from the file onto a spool, not read into memory."""
    a = req.audio
    if a.path and not a.data:
        seconds = await asyncio.to_thread(probe_file_duration, a.path, a.format)
        if seconds is not None and seconds > 0:
            return float(seconds)
        spool, fmt = await asyncio.to_thread(decode_file_to_spool, a.path, a.format, field=field, directory=tmp)
        spool.close()
        a.detected_format = fmt
        return float(round(spool.duration, 3))
    seconds = probe_duration(a.data, a.format)
    if seconds is not None and seconds > 0:
        return float(seconds)
    from ..audio.prepare import prepare as prepare_audio
    prepared, _ = await prepare_audio(req.audio, field)
    return float(prepared.duration)


@router.post(BASE, status_code=202)
async def submit(request: Request) -> Response:
    rt = _runtime(request)
    settings = services(request).settings
    fd, spool = tempfile.mkstemp(prefix="audiorouter-upload-", suffix=".part", dir=settings.tmp_dir)
    os.close(fd)
    try:
        return await _submit(request, rt, spool)
    finally:  # moved into the audio store when the job was stored; removed in every other case
        with contextlib.suppress(OSError):
            os.unlink(spool)


async def _submit(request: Request, rt: Any, spool: str) -> Response:
    svc = services(request)
    req, extras, field = await _parse(request, spool)
    if req.extra.get("stream"):
        raise InvalidRequest("stream: a job's outcome comes by GET or webhook; remove stream", param="stream")
    webhook = _webhook(extras.get("webhook"))
    idem = _idempotency(extras.get("idempotency_key"), request.headers.get("idempotency-key"))
    await caller_keys(request, req)  # refuses management keys; BYOK keys for the plan
    p = principal(request)
    key_hash = p.hash if p else None
    if idem is not None:
        old = await rt.jobs.by_idempotency(f"{key_hash or '-'}:{idem}")
        if old is not None:
            return _json(public_status(old), 200)
    if webhook is not None:
        try:
            await webhooks.resolve_checked(webhook["url"], svc.settings)
        except webhooks.WebhookURLError as e:
            raise InvalidRequest(f"webhook.url: {e}", param="webhook.url", status=e.status,
                                 code="url_not_allowed" if e.status == 403 else "invalid_url") from None
    url = req.extra.pop("input_audio_url", None)
    if url is not None:
        req.audio.data, hint = await fetch_audio(url, svc.settings)
        req.audio.declared_format = req.audio.declared_format or hint
        field = "input_audio.url"
    seconds = await _duration(req, field, svc.settings.tmp_dir)
    cands = plan_any_length(svc, req)  # a bad model or parameter is a 4xx now, not a failed job later
    byok = request.state.byok
    include_byok = bool(p and p.include_byok_in_limit)
    estimate = estimate_nano(svc, req, seconds, byok, include_byok, cands)
    store = request.app.state.store
    gen_id = request.state.generation_id
    new = NewGeneration(id=gen_id, api_type="stt", path=BASE, model=req.model, key_hash=key_hash,
                        session_id=req.session_id or request.headers.get("x-session-id"), user=req.user,
                        user_agent=request.headers.get("user-agent"),
                        http_referer=request.headers.get("http-referer") or request.headers.get("referer"),
                        seconds=seconds)
    try:
        reserved = await store.ledger.begin(new, estimate, limited=bool(p and p.limit_nano is not None))
        await store.ledger.flush()  # the row exists before any worker can settle it
    except (SQLAlchemyError, OSError) as e:
        log.error("ledger unavailable: %s", type(e).__name__)
        raise store_unavailable() from None
    generated_secret = None
    if webhook is not None and "secret" not in webhook:
        webhook["secret"] = generated_secret = webhooks.new_secret()
    job_id = new_job_id()
    try:
        on_disk = Path(req.audio.path) if req.audio.path and not req.audio.data else None
        job, created = await rt.submit(job_id=job_id, key_hash=key_hash, req=req, audio_path=on_disk, duration=seconds,
                                       generation_id=gen_id, reserved_nano=reserved, include_byok=include_byok,
                                       webhook=webhook, idempotency_key=idem)
    except BaseException:
        store.ledger.settle(gen_id, key_hash, reserved, Settlement(status="error", error_type="job_not_stored"))
        raise
    if not created:  # the same idempotency key won a race: release this request's reservation
        store.ledger.settle(gen_id, key_hash, reserved, Settlement(status="error", error_type="duplicate_job"))
        return _json(public_status(job), 200)
    body = {"id": job.id, "object": "transcription.job", "status": job.status,
            "created_at": int(job.created_at.timestamp()), "generation_id": gen_id,
            "estimated_cost": round(estimate / 1e9, 9)}
    if generated_secret:
        body["webhook"] = {"secret": generated_secret}  # shown once: the receiver verifies signatures with it
    return _json(body, 202)


async def _own_job(request: Request, job_id: str) -> Any:
    rt = _runtime(request)
    job = await rt.jobs.get(job_id)
    p = principal(request)
    if job is None or (p is not None and not p.is_management and job.key_hash != p.hash):
        raise NotFound(f"no job {job_id[:80]!r} for this key", param="id", code="job_not_found")
    return rt, job


@router.get(BASE + "/{job_id}")
async def get_job(request: Request, job_id: str) -> Response:
    rt, job = await _own_job(request, job_id)
    fmt = request.query_params.get("response_format")
    if fmt is not None and fmt not in TRANSCRIPT_FORMATS:
        raise InvalidRequest(f"response_format: {fmt[:40]!r} is not one of {', '.join(TRANSCRIPT_FORMATS)}",
                             param="response_format")
    body = public_status(job)
    if job.status != "succeeded":
        if fmt in ("text", "srt", "vtt"):
            raise GatewayError(f"the job is {job.status}; its result exists once it has succeeded", status=409,
                               code="job_not_succeeded", param="response_format")
        return _json(body)
    got = await rt.result(job)
    if got is None:
        if fmt in ("text", "srt", "vtt"):
            raise GatewayError("the job's result was deleted (retention period or zero data retention)", status=410,
                               code="job_result_expired", param="response_format")
        return _json(body)
    transcript, usage = got
    if fmt is None:  # the status object, with the result in the job's own format if that is JSON
        fmt = job.params.get("response_format") if job.params.get("response_format") == "verbose_json" else "json"
    if fmt in ("text", "srt", "vtt"):
        return render_transcript(transcript, usage, fmt, "openrouter", True, {"X-Job-Status": job.status})
    want_words = "word" in (job.params.get("timestamp_granularities") or []) or fmt == "verbose_json"
    body["result"] = transcript_payload(transcript, usage, fmt, "openrouter", want_words)
    if job.zdr:  # zero data retention: read once
        await rt.purge(job)
    return _json(body)


@router.get(BASE)
async def list_jobs(request: Request) -> Response:
    rt = _runtime(request)
    q = request.query_params
    status = q.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: {status[:40]!r} is not one of {', '.join(STATUSES)}", param="status")
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        raise InvalidRequest("limit: expected an integer from 1 to 100", param="limit") from None
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit: expected an integer from 1 to 100", param="limit")
    p = principal(request)
    before = None
    after = q.get("after")
    if after:
        _, cursor = await _own_job(request, after)
        before = (cursor.created_at, cursor.id)
    everyone = bool(p and p.is_management)
    jobs = await rt.jobs.page(p.hash if p else None, status=status, limit=limit + 1, before=before, all_keys=everyone)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return _json({"object": "list", "data": [public_status(j) for j in jobs], "has_more": more,
                  "next_after": jobs[-1].id if more and jobs else None})


@router.delete(BASE + "/{job_id}")
async def cancel_job(request: Request, job_id: str) -> Response:
    rt, job = await _own_job(request, job_id)
    done = await rt.cancel(job.id)
    if done is None:
        job = await rt.jobs.get(job.id)
        raise GatewayError(f"the job has already {job.status if job else 'ended'}; nothing to cancel", status=409,
                           code="job_finished", param="id")
    return _json(public_status(done))
