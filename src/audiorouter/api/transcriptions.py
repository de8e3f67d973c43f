"""POST /api/v1/audio/transcriptions (OpenRouter JSON or OpenAI multipart), /v1/audio/transcriptions and
/v1/audio/translations (OpenAI multipart or JSON)."""
from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..core.errors import InvalidRequest
from ..jobs.transcription import TranscriptionJob, cache_policy, get_cache
from .auth import principal
from .context import route_headers, services
from .errors import dialect_of
from .generations import caller_keys, track
from .parsing import parse_json, read_body, transcription_from_form, transcription_from_json
from .render import render_transcript
from .sse import tracked_events
from .streaming import StreamedResponse
from .url_input import fetch_audio

router = APIRouter()


async def parse_transcription(request: Request, task: str):
    limit = services(request).settings.max_body_bytes
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        return await transcription_from_form(request, task, limit), "file"
    # Only JSON gets here (api/guard.py answers 415 to anything else, a form or text/plain that a web page could
    # send cross-site without asking first); the check stays for callers that skip the guard.
    if ctype.startswith("application/json"):
        body = parse_json(await read_body(request, limit, audio=True))
        return transcription_from_json(body, task), "input_audio.data"
    raise InvalidRequest(f"Content-Type: {ctype!r} is not supported; send application/json or multipart/form-data",
                         param="Content-Type", status=415)


async def open_job(request: Request, req, field: str) -> TranscriptionJob:
    """URL input, cache policy, decoding and chunk planning: every 4xx happens here, before any answer."""
    svc = services(request)
    url = req.extra.pop("input_audio_url", None)
    if url is not None:
        req.audio.data, hint = await fetch_audio(url, svc.settings)
        req.audio.declared_format = req.audio.declared_format or hint
        field = "input_audio.url"
    if req.extra.get("stream") and req.response_format not in ("json", "text"):
        raise InvalidRequest(f"stream: streaming sends text events; use response_format json or text, not "
                             f"{req.response_format}", param="stream")
    cache = get_cache(request.app, svc.settings)
    p = principal(request)
    job = TranscriptionJob(svc.router, req, field, svc.settings, cache=cache,
                           cache_mode=cache_policy(request.headers.get("cache-control"), req.extra.get("cache"), req),
                           namespace=p.hash if p is not None else "")
    await job.prepare()
    return job


async def handle(request: Request, task: str) -> Response:
    req, field = await parse_transcription(request, task)
    await caller_keys(request, req)  # before the plan: a provider may be there only through the caller's key
    job = await open_job(request, req, field)
    dialect = dialect_of(request.scope["path"])
    if req.extra.get("stream"):  # SSE; the ledger row settles when the stream ends
        tracker = track(request, req, seconds=job.duration, cands=job.plan.candidates)
        try:
            gen = await tracker.__aenter__()
        except BaseException:
            job.close()
            raise
        return StreamedResponse(tracked_events(tracker, gen, job, dialect, request.state),
                                media_type="text/event-stream", headers={**job.headers, "Cache-Control": "no-cache"})
    try:
        # the ledger row and the limit reservation, estimated on the job's plan (made once, in prepare)
        async with track(request, req, seconds=job.duration, cands=job.plan.candidates) as gen:
            result = await job.run()
            gen.served(result.route, result.usage)
    finally:
        job.close()
    headers = {**job.headers, **route_headers(result.route)}
    request.state.usage = result.usage
    return render_transcript(result.transcript, result.usage, req.response_format, dialect,
                             req.want_words, headers)


@router.post("/api/v1/audio/transcriptions")
@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request) -> Response:
    return await handle(request, "transcribe")


@router.post("/api/v1/audio/translations")
@router.post("/v1/audio/translations")
async def translations(request: Request) -> Response:
    return await handle(request, "translate")
