"""POST /api/v1/chat/completions (OpenRouter dialect) and /v1/chat/completions (OpenAI dialect): OpenAI's chat
request with input_audio parts and spoken answers (modalities + audio), whole or streamed as SSE
`chat.completion.chunk`s with delta.audio pieces, a usage chunk and `data: [DONE]`. The use case is
jobs/chat.py; this module parses the body (400s naming the exact path), keeps the ledger and renders."""
from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..audio.sniff import canonical, sniff
from ..core.chat import CHAT_INPUT_FORMATS, CHAT_OUTPUT_FORMATS, ChatDelta, ChatMessage, ChatRequest, InputAudioPart
from ..core.errors import GatewayError, InvalidRequest
from ..core.types import Audio
from ..jobs.chat import ChatAudioStore, ChatJob, ChatResult
from ..jobs.transcription import get_cache
from .auth import principal
from .context import route_headers, services
from .errors import dialect_of, error_body
from .generations import caller_keys, track
from .parsing import bool_field as _bool
from .parsing import decode_b64, parse_json, parse_provider, read_body
from .parsing import kind as _kind
from .parsing import num_field as _num
from .parsing import str_field as _str
from .parsing import str_list_field as _str_list
from .streaming import StreamedResponse

router = APIRouter()
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MESSAGE_FIELDS = ("role", "content", "name", "audio", "tool_calls", "tool_call_id", "refusal", "function_call")


# ---- parsing --------------------------------------------------------------------------------------------
def _input_audio(v: Any, path: str) -> InputAudioPart:
    if not isinstance(v, dict):
        raise InvalidRequest(f"{path}: expected an object with data and format, got {_kind(v)}", param=path)
    b64 = _str(v, "data", required=True, prefix=path + ".")
    raw = decode_b64(b64, path + ".data")  # a data: URI prefix is stripped; 400 naming the path when invalid
    fmt = _str(v, "format", required=True, prefix=path + ".")
    f = fmt.strip().lower()
    detected = sniff(raw, signatures_only=f in ("pcm16", "pcm"))
    if f not in CHAT_INPUT_FORMATS and detected is None:
        raise InvalidRequest(f"{path}.format: {fmt[:40]!r} is not a supported audio format; use one of "
                             f"{', '.join(CHAT_INPUT_FORMATS)}", param=path + ".format",
                             metadata={"formats": list(CHAT_INPUT_FORMATS)})
    declared = "pcm16" if f in ("pcm16", "pcm") else canonical(f)
    return InputAudioPart(Audio(raw, declared_format=declared, detected_format=detected), path)


def _content(v: Any, path: str) -> Any:
    if v is None or isinstance(v, str):
        return v
    if not isinstance(v, list):
        raise InvalidRequest(f"{path}: expected a string or a list of content parts, got {_kind(v)}", param=path)
    parts = []
    for j, p in enumerate(v):
        pp = f"{path}[{j}]"
        if not isinstance(p, dict):
            raise InvalidRequest(f"{pp}: expected a content part object, got {_kind(p)}", param=pp)
        t = p.get("type")
        if not isinstance(t, str):
            raise InvalidRequest(f"{pp}.type: required (text, input_audio, ...)", param=pp + ".type")
        if t == "text":
            _str(p, "text", required=False, prefix=pp + ".")
            if not isinstance(p.get("text"), str):
                raise InvalidRequest(f"{pp}.text: required string", param=pp + ".text")
            parts.append(p)
        elif t == "input_audio":
            if "input_audio" not in p:
                raise InvalidRequest(f"{pp}.input_audio: required field is missing (send {{data, format}})",
                                     param=pp + ".input_audio")
            parts.append({"type": "input_audio", "input_audio": _input_audio(p["input_audio"], pp + ".input_audio")})
        else:
            parts.append(p)  # image_url, file, ...: relayed to upstreams that take them
    return parts


def _messages(v: Any) -> list[ChatMessage]:
    if v is None:
        raise InvalidRequest("messages: required field is missing", param="messages")
    if not isinstance(v, list) or not v:
        got = _kind(v) if v != [] else "an empty list"
        raise InvalidRequest(f"messages: expected a non-empty list of messages, got {got}", param="messages")
    out = []
    for i, m in enumerate(v):
        path = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest(f"{path}: expected a message object, got {_kind(m)}", param=path)
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"{path}.role: {str(role)[:40]!r} is not one of {', '.join(ROLES)}",
                                 param=path + ".role")
        msg = ChatMessage(role=role, content=_content(m.get("content"), path + ".content"),
                          name=_str(m, "name", prefix=path + "."))
        audio = m.get("audio")
        if audio is not None:
            if role != "assistant":
                raise InvalidRequest(f"{path}.audio: only an assistant message refers to an earlier spoken answer",
                                     param=path + ".audio")
            if not isinstance(audio, dict):
                raise InvalidRequest(f"{path}.audio: expected an object {{id}}, got {_kind(audio)}",
                                     param=path + ".audio")
            msg.audio_id = _str(audio, "id", required=True, prefix=path + ".audio.")
        if msg.content is None and msg.audio_id is None and role in ("user", "system", "developer"):
            raise InvalidRequest(f"{path}.content: required for a {role} message", param=path + ".content")
        if role != "user" and isinstance(msg.content, list) and any(
                isinstance(p, dict) and p.get("type") == "input_audio" for p in msg.content):
            raise InvalidRequest(f"{path}.content: input_audio parts belong in user messages", param=path + ".content")
        msg.extra = {k: m[k] for k in ("tool_calls", "tool_call_id", "refusal", "function_call")
                     if m.get(k) is not None}
        out.append(msg)
    return out


def chat_from_json(data: dict[str, Any]) -> ChatRequest:
    model = _str(data, "model", required=True)
    req = ChatRequest(model=model, messages=_messages(data.get("messages")))
    mods = _str_list(data, "modalities")
    if mods is not None:
        bad = [m for m in mods if m not in ("text", "audio")]
        if bad:
            raise InvalidRequest(f"modalities: {bad[0][:40]!r} is not 'text' or 'audio'", param="modalities")
        req.modalities = mods or ["text"]
    audio = data.get("audio")
    if req.wants_audio:
        if not isinstance(audio, dict):
            raise InvalidRequest('audio: required with modalities ["text", "audio"]: {voice, format}', param="audio")
        req.voice = _str(audio, "voice", required=True, prefix="audio.")
        fmt = _str(audio, "format", required=True, prefix="audio.").strip().lower()
        if fmt not in CHAT_OUTPUT_FORMATS:
            raise InvalidRequest(f"audio.format: {fmt[:40]!r} is not one of {', '.join(CHAT_OUTPUT_FORMATS)}",
                                 param="audio.format", metadata={"formats": list(CHAT_OUTPUT_FORMATS)})
        req.audio_format = fmt
    elif audio is not None:
        raise InvalidRequest("audio: asks for spoken output, which needs modalities [\"text\", \"audio\"]",
                             param="modalities")
    req.stream = bool(_bool(data, "stream"))
    so = data.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise InvalidRequest(f"stream_options: expected an object, got {_kind(so)}", param="stream_options")
    _num(data, "temperature", 0.0, 2.0)
    _num(data, "top_p", 0.0, 1.0)
    _num(data, "frequency_penalty", -2.0, 2.0)
    _num(data, "presence_penalty", -2.0, 2.0)
    for k in ("max_tokens", "max_completion_tokens"):
        v = data.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InvalidRequest(f"{k}: expected a positive integer", param=k)
    req.max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    n = data.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("n: only one choice (n=1) is supported", param="n")
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest(f"seed: expected an integer, got {_kind(seed)}", param="seed")
    stop = data.get("stop")
    if stop is not None and not isinstance(stop, str):
        stop = _str_list(data, "stop") or []
        if len(stop) > 4:
            raise InvalidRequest("stop: at most 4 sequences", param="stop")
    md = data.get("metadata")
    if md is not None and not isinstance(md, dict):
        raise InvalidRequest(f"metadata: expected an object, got {_kind(md)}", param="metadata")
    cache = _bool(data, "cache")
    if cache is not None:
        req.extra["cache"] = cache
    req.user = _str(data, "user")
    req.session_id = _str(data, "session_id")
    req.provider = parse_provider(data.get("provider"))
    models = _str_list(data, "models")
    req.models = models or None
    req.params = {k: data[k] for k in ("temperature", "top_p", "stop", "seed") if data.get(k) is not None}
    req.raw = {k: v for k, v in data.items() if k != "messages"}
    return req


# ---- rendering ------------------------------------------------------------------------------------------
def _provider_name(request: Request, slug: str | None) -> str | None:
    spec = services(request).router.catalog.providers.get(slug or "")
    return spec.name if spec is not None else slug


def completion_body(request: Request, req: ChatRequest, result: ChatResult) -> dict[str, Any]:
    r = result.reply
    msg: dict[str, Any] = {"role": "assistant", "content": r.text, "refusal": None, **r.extra}
    if req.wants_audio and r.audio is not None:
        msg["audio"] = {"id": result.audio_id, "data": base64.b64encode(r.audio).decode("ascii"),
                        "expires_at": result.expires_at, "transcript": r.transcript or ""}
    body: dict[str, Any] = {
        "id": request.state.generation_id, "object": "chat.completion", "created": int(time.time()),
        "model": result.route.model,
        "choices": [{"index": 0, "message": msg, "finish_reason": r.finish_reason, "logprobs": None}],
        "usage": result.usage.as_dict(), "system_fingerprint": None,
    }
    if dialect_of(request.scope["path"]) == "openrouter":
        body["provider"] = _provider_name(request, result.route.provider)
    return body


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                           "logprobs": None}]}) + b"\n\n"


async def _events(request: Request, req: ChatRequest, job: ChatJob, deltas: AsyncIterator[ChatDelta],
                  tracker: Any, gen: Any) -> AsyncIterator[bytes]:
    """The SSE body: role chunk, content / audio deltas (audio id on the first audio piece, expires_at on
    its own last one), the finish chunk, the usage chunk, [DONE]. The ledger row settles at the end."""
    dialect = dialect_of(request.scope["path"])
    route = job.route
    base = {"id": request.state.generation_id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": route.model if route else req.model, "system_fingerprint": None}
    if dialect == "openrouter":
        base["provider"] = _provider_name(request, route.provider if route else None)
    exc: BaseException | None = None
    audio_started = False
    try:
        yield _chunk(base, {"role": "assistant", "content": None if req.wants_audio else ""})
        async for d in deltas:
            if d.usage is not None:  # the last one
                lu = d.usage.ledger()
                gen.served(route, lu)
                d.usage.cost = lu.cost  # BYOK: what this key is charged
                request.state.usage = lu
                if req.wants_audio:
                    piece: dict[str, Any] = {"expires_at": d.upstream_expires_at}
                    if not audio_started:
                        piece["id"] = job.audio_id
                    yield _chunk(base, {"audio": piece})
                yield _chunk(base, {}, d.finish_reason or "stop")
                yield b"data: " + orjson.dumps({**base, "choices": [], "usage": d.usage.as_dict()}) + b"\n\n"
                continue
            delta: dict[str, Any] = dict(d.extra)
            if d.text:
                delta["content"] = d.text
            if d.audio is not None or d.transcript:
                piece = {}
                if not audio_started:
                    piece["id"] = job.audio_id
                    audio_started = True
                if d.audio:
                    piece["data"] = base64.b64encode(d.audio).decode("ascii")
                if d.transcript:
                    piece["transcript"] = d.transcript
                delta["audio"] = piece
            if delta:
                yield _chunk(base, delta)
        yield b"data: [DONE]\n\n"
    except GatewayError as e:
        exc = e
        yield b"data: " + orjson.dumps({**base, "error": error_body(e, dialect)["error"],
                                        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except BaseException as e:  # noqa: BLE001 - cancelled / disconnected: settled below, then re-raised
        exc = e
        raise
    finally:
        await asyncio.shield(tracker.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None))


def _memory(request: Request) -> ChatAudioStore:
    """The spoken answers' store on the app's database (shared by every replica on it)."""
    mem = getattr(request.app.state, "chat_audio_memory", None)
    if mem is None:
        mem = request.app.state.chat_audio_memory = ChatAudioStore(request.app.state.store.db)
    return mem


@router.post("/api/v1/chat/completions")
@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    svc = services(request)
    ctype = request.headers.get("content-type", "").lower()
    if not ctype.startswith("application/json"):
        raise InvalidRequest(f"Content-Type: {ctype[:60]!r} is not supported; send application/json",
                             param="Content-Type", status=415)
    req = chat_from_json(parse_json(await read_body(request, svc.settings.max_body_bytes)))
    await caller_keys(request, req)
    p = principal(request)
    job = ChatJob(svc.router, req, svc.settings, memory=_memory(request), namespace=p.hash if p is not None else "",
                  cache=get_cache(request.app, svc.settings), cache_control=request.headers.get("cache-control"))
    await job.prepare()
    if req.stream:
        tracker = track(request, req, seconds=job.audio_seconds or None, cands=job.cands)
        gen = await tracker.__aenter__()
        try:
            deltas = await job.open_stream()
        except BaseException as e:
            await tracker.__aexit__(type(e), e, e.__traceback__)
            raise
        assert job.route is not None
        headers = {**route_headers(job.route), "Cache-Control": "no-cache"}
        return StreamedResponse(_events(request, req, job, deltas, tracker, gen), media_type="text/event-stream",
                                headers=headers)
    async with track(request, req, seconds=job.audio_seconds or None, cands=job.cands) as gen:
        result = await job.run()
        lu = result.usage.ledger()
        gen.served(result.route, lu)
        result.usage.cost = lu.cost
        request.state.usage = lu
    return Response(orjson.dumps(completion_body(request, req, result)), media_type="application/json",
                    headers=route_headers(result.route))
