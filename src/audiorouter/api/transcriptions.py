"""POST /api/v1/audio/transcriptions (OpenRouter JSON or OpenAI multipart), /v1/audio/transcriptions and
/v1/audio/translations (OpenAI multipart or JSON)."""
from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..core.errors import InvalidRequest
from .audio_input import prepare
from .context import route_headers, services
from .errors import dialect_of
from .parsing import parse_json, read_body, transcription_from_form, transcription_from_json
from .render import render_transcript

router = APIRouter()


async def parse_transcription(request: Request, task: str):
    limit = services(request).settings.max_body_bytes
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        return await transcription_from_form(request, task, limit), "file"
    if ctype.startswith("application/json") or not ctype:
        return transcription_from_json(parse_json(await read_body(request, limit)), task), "input_audio.data"
    raise InvalidRequest(f"Content-Type: {ctype!r} is not supported; send application/json or multipart/form-data",
                         param="Content-Type", status=415)


async def handle(request: Request, task: str) -> Response:
    svc = services(request)
    req, field = await parse_transcription(request, task)
    prepared, headers = await prepare(req.audio, field)
    result = await svc.router.transcribe(req, prepared)
    headers.update(route_headers(result.route))
    headers["X-Audio-Duration"] = f"{prepared.duration:.3f}"
    request.state.usage = result.usage
    return render_transcript(result.transcript, result.usage, req.response_format, dialect_of(request.url.path),
                             req.want_words, headers)


@router.post("/api/v1/audio/transcriptions")
@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request) -> Response:
    return await handle(request, "transcribe")


@router.post("/api/v1/audio/translations")
@router.post("/v1/audio/translations")
async def translations(request: Request) -> Response:
    return await handle(request, "translate")
