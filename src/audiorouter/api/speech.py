"""POST /api/v1/audio/speech (default pcm) and /v1/audio/speech (default mp3): raw audio bytes, streamed as
each sentence is synthesized; or OpenAI's SSE events with stream_format "sse"."""
from __future__ import annotations

import base64
from typing import AsyncIterator

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..audio.encode import StreamEncoder, content_type
from ..audio.transcode import transcode_stream
from ..routing import longform
from ..routing.router import SpeechResult
from .context import route_headers, services
from .errors import dialect_of
from .generations import track
from .parsing import parse_json, read_body, speech_from_json
from .streaming import StreamedResponse

router = APIRouter()
ENCODE_SLICE_S = 0.25  # seconds of audio per encoder call for mp3/opus/aac/flac output
FIRST_SLICE_S = 0.1  # the first call: enough for the first mp3/aac/opus packet (~1 ms of encoding, not ~3)


def _slices(n: int, rate: int, first: bool) -> list[tuple[int, int]]:
    step = max(1, int(rate * ENCODE_SLICE_S))
    out, i = [], 0
    if first and n > step:
        i = max(1, int(rate * FIRST_SLICE_S))
        out.append((0, i))
    while i < n:
        out.append((i, min(n, i + step)))
        i += step
    return out


async def encoded(result: SpeechResult, fmt: str) -> AsyncIterator[bytes]:
    stream = result.stream
    if stream.encoding == "f32":
        enc = StreamEncoder(fmt, stream.rate)
        # Compressed formats are fed a fraction of a second at a time (the very first slice smaller still):
        # the first bytes leave after a millisecond or two of encoding instead of a whole sentence's worth,
        # and the event loop is never held for long.
        sliced = fmt not in ("pcm", "wav")
        first = True
        async for chunk in result.chunks():
            if chunk is None or not len(chunk):
                continue
            if not sliced:
                yield enc.feed(chunk)
                continue
            for a, b in _slices(len(chunk), stream.rate, first):
                out = enc.feed(chunk[a:b])
                if out:
                    yield out
            first = False
        tail = enc.close()
        if tail:
            yield tail
    elif stream.encoding == fmt:
        async for chunk in result.chunks():
            if chunk:
                yield chunk
    else:
        async for chunk in transcode_stream(result.chunks(), stream.encoding, stream.rate, fmt):
            yield chunk


def output_rate(result: SpeechResult, fmt: str) -> int:
    return result.stream.rate


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
        result = await longform.speak(svc.router, req, gen.cands)  # text over an endpoint's max_characters is split
        gen.served(result.route, result.usage, streaming=True)
    request.state.usage = result.usage
    headers = route_headers(result.route)
    headers["X-Characters"] = str(len(req.input))
    headers["X-Cost"] = f"{result.usage.cost:.10f}".rstrip("0").rstrip(".") or "0"
    if req.stream_format == "sse":
        return StreamedResponse(gen.stream(sse(result, req.response_format)), media_type="text/event-stream",
                                headers=headers)
    return StreamedResponse(gen.stream(encoded(result, req.response_format)),
                            media_type=content_type(req.response_format, output_rate(result, req.response_format)),
                            headers=headers)
