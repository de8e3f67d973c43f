"""POST /api/v1/audio/speech (default pcm) and /v1/audio/speech (default mp3): raw audio bytes, streamed as
each sentence is synthesized; or OpenAI's SSE events with stream_format "sse".

With `timestamps: "word"` (or OpenRouter's `timestamp_granularities: ["word"]`) the answer also times every
word of the input (jobs/speech_timings.py): a JSON envelope {audio (base64), format, media_type, duration,
words: [{word, start, end}], timestamps_source, usage} once the audio is complete, or, with SSE, a
`speech.timestamps.delta` {words} event between the last `speech.audio.delta` and `speech.audio.done`."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..core.errors import GatewayError
from ..core.types import SpeechRequest, Usage, Word
from ..jobs.speech import SpeechResult, encoded, media_type, speak
from ..jobs.speech_timings import TimedSpeech, speak_timed
from .context import route_headers, services
from .errors import dialect_of
from .generations import track
from .parsing import parse_json, read_body, speech_from_json
from .sse import error_event
from .streaming import StreamedResponse

router = APIRouter()


def _usage(u: Usage) -> dict[str, object]:
    return {"input_tokens": u.input_tokens or 0, "output_tokens": u.output_tokens or 0,
            "total_tokens": (u.input_tokens or 0) + (u.output_tokens or 0),
            "characters": u.characters, "cost": round(u.cost, 10)}


def _words(words: list[Word]) -> list[dict[str, object]]:
    return [{"word": w.word, "start": w.start, "end": w.end} for w in words]


async def sse(result: SpeechResult, fmt: str) -> AsyncIterator[bytes]:
    async for chunk in encoded(result, fmt):
        ev = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
        yield b"data: " + orjson.dumps(ev) + b"\n\n"
    done = {"type": "speech.audio.done", "usage": _usage(result.usage)}
    yield b"data: " + orjson.dumps(done) + b"\n\n"


async def sse_timed(timed: TimedSpeech, fmt: str, dialect: str) -> AsyncIterator[bytes]:
    """sse(), plus the words' timings once the audio is out (an `error` event if they cannot be made)."""
    async for chunk in timed.audio(fmt):
        ev = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
        yield b"data: " + orjson.dumps(ev) + b"\n\n"
    try:
        words = await timed.words()
    except GatewayError as e:  # the audio went out (and is charged); the words could not be timed
        yield error_event(e, dialect)
        return
    timings: dict[str, object] = {"type": "speech.timestamps.delta", "words": _words(words), "source": timed.source}
    yield b"data: " + orjson.dumps(timings) + b"\n\n"
    done = {"type": "speech.audio.done", "duration": round(timed.duration, 3), "usage": _usage(timed.usage)}
    yield b"data: " + orjson.dumps(done) + b"\n\n"


def _cost(u: Usage) -> str:
    return f"{u.cost:.10f}".rstrip("0").rstrip(".") or "0"


@router.post("/api/v1/audio/speech")
@router.post("/v1/audio/speech")
async def speech(request: Request) -> Response:
    svc = services(request)
    dialect = dialect_of(request.scope["path"])
    data = parse_json(await read_body(request, svc.settings.max_body_bytes))
    req = speech_from_json(data, default_format="mp3" if dialect == "openai" else "pcm",
                           max_chars=svc.settings.max_speech_chars)
    if req.timestamps == "word":
        return await timed_speech(request, req, dialect)
    async with track(request, req) as gen:  # ledger row, limit reservation
        result = await speak(svc.router, req, gen.cands)  # text over an endpoint's max_characters is split
        gen.served(result.route, result.usage, streaming=True)
    request.state.usage = result.usage
    headers = route_headers(result.route)
    headers["X-Characters"] = str(len(req.input))
    headers["X-Cost"] = _cost(result.usage)
    if req.stream_format == "sse":
        return StreamedResponse(gen.stream(sse(result, req.response_format)), media_type="text/event-stream",
                                headers=headers)
    return StreamedResponse(gen.stream(encoded(result, req.response_format)),
                            media_type=media_type(result, req.response_format),
                            headers=headers)


async def timed_speech(request: Request, req: SpeechRequest, dialect: str) -> Response:
    """timestamps "word": SSE events as the audio comes, then the words; else one JSON envelope, made whole
    before answering (so a failure to time the words is an error answer, not a broken body)."""
    svc = services(request)
    fmt = req.response_format
    if req.stream_format == "sse":
        async with track(request, req) as gen:
            timed = await speak_timed(svc.router, req, gen.cands)
            gen.served(timed.result.route, timed.usage, streaming=True)
        request.state.usage = timed.usage
        headers = route_headers(timed.result.route)
        headers["X-Characters"] = str(len(req.input))
        headers["X-Cost"] = _cost(timed.usage)
        return StreamedResponse(gen.stream(sse_timed(timed, fmt, dialect)), media_type="text/event-stream",
                                headers=headers)
    async with track(request, req) as gen:
        timed = await speak_timed(svc.router, req, gen.cands)
        audio = b"".join([c async for c in timed.audio(fmt)])
        words = await timed.words()
        gen.served(timed.result.route, timed.usage)
    request.state.usage = timed.usage
    headers = route_headers(timed.result.route)
    headers["X-Characters"] = str(len(req.input))
    headers["X-Cost"] = _cost(timed.usage)
    body = {"audio": base64.b64encode(audio).decode(), "format": fmt, "media_type": media_type(timed.result, fmt),
            "duration": round(timed.duration, 3), "words": _words(words), "timestamps_source": timed.source,
            "usage": _usage(timed.usage)}
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)
