"""POST /api/v1/audio/speech (default pcm) and /v1/audio/speech (default mp3): raw audio bytes, streamed as
each sentence is synthesized; or OpenAI's SSE events with stream_format "sse"."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..jobs.speech import SpeechResult, encoded, media_type, speak
from .context import route_headers, services
from .errors import dialect_of
from .generations import track
from .parsing import parse_json, read_body, speech_from_json
from .streaming import StreamedResponse

router = APIRouter()


async def sse(result: SpeechResult, fmt: str) -> AsyncIterator[bytes]:
    async for chunk in encoded(result, fmt):
        ev = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
        yield b"data: " + orjson.dumps(ev) + b"\n\n"
    u = result.usage
    done = {"type": "speech.audio.done",
            "usage": {"input_tokens": u.input_tokens or 0, "output_tokens": u.output_tokens or 0,
                      "total_tokens": (u.input_tokens or 0) + (u.output_tokens or 0),
                      "characters": u.characters, "cost": round(u.cost, 10)}}
    yield b"data: " + orjson.dumps(done) + b"\n\n"


@router.post("/api/v1/audio/speech")
@router.post("/v1/audio/speech")
async def speech(request: Request) -> Response:
    svc = services(request)
    dialect = dialect_of(request.scope["path"])
    data = parse_json(await read_body(request, svc.settings.max_body_bytes))
    req = speech_from_json(data, default_format="mp3" if dialect == "openai" else "pcm",
                           max_chars=svc.settings.max_speech_chars)
    async with track(request, req) as gen:  # ledger row, limit reservation
        result = await speak(svc.router, req, gen.cands)  # text over an endpoint's max_characters is split
        gen.served(result.route, result.usage, streaming=True)
    request.state.usage = result.usage
    headers = route_headers(result.route)
    headers["X-Characters"] = str(len(req.input))
    headers["X-Cost"] = f"{result.usage.cost:.10f}".rstrip("0").rstrip(".") or "0"
    if req.stream_format == "sse":
        return StreamedResponse(gen.stream(sse(result, req.response_format)), media_type="text/event-stream",
                                headers=headers)
    return StreamedResponse(gen.stream(encoded(result, req.response_format)),
                            media_type=media_type(result, req.response_format),
                            headers=headers)
