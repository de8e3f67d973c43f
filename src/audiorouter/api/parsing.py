"""Dialect bodies -> neutral requests. JSON (OpenRouter: base64 input_audio) and OpenAI multipart. Every
problem becomes a 400 naming the field."""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..core.errors import InvalidRequest, PayloadTooLarge
from ..core.types import (SPEECH_FORMATS, TRANSCRIPT_FORMATS, Audio, RoutingPrefs, SpeechRequest,
                          TranscriptionRequest)
from ..audio.sniff import canonical

_DATA_URI = re.compile(rb"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.I)
_WS = re.compile(rb"\s+")


async def read_body(request: Request, limit: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > limit:
        raise PayloadTooLarge(f"request body is {int(cl)} bytes; the limit is {limit} bytes", metadata={"limit": limit})
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", metadata={"limit": limit})
    return bytes(buf)


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest("body: the request body is empty; send a JSON object", param="body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"body: invalid JSON ({e})", param="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: expected a JSON object", param="body")
    return data


def decode_b64(s: str | bytes, field: str) -> bytes:
    raw = s.encode("ascii", "ignore") if isinstance(s, str) else s
    m = _DATA_URI.match(raw[:200])
    if m:
        raw = raw[m.end():]
    try:
        out = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        cleaned = _WS.sub(b"", raw)
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            out = base64.b64decode(cleaned, validate=True)
        except (binascii.Error, ValueError):
            try:
                out = base64.urlsafe_b64decode(cleaned)
                if not out:
                    raise ValueError
            except (binascii.Error, ValueError):
                raise InvalidRequest(f"{field}: invalid base64 (send the raw base64 of the file, without a data: URI)",
                                     param=field, code="invalid_base64") from None
    if not out:
        raise InvalidRequest(f"{field}: the audio is empty", param=field)
    return out


# ---- typed field helpers ------------------------------------------------------------------------------
def _str(d: dict, key: str, *, required: bool = False, prefix: str = "") -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise InvalidRequest(f"{prefix}{key}: required field is missing", param=prefix + key)
        return None
    if not isinstance(v, str):
        raise InvalidRequest(f"{prefix}{key}: expected a string, got {type(v).__name__}", param=prefix + key)
    if required and not v.strip():
        raise InvalidRequest(f"{prefix}{key}: must not be empty", param=prefix + key)
    return v


def _num(d: dict, key: str, lo: float | None = None, hi: float | None = None) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise InvalidRequest(f"{key}: expected a number, got {v!r}", param=key) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRequest(f"{key}: expected a number, got {type(v).__name__}", param=key)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InvalidRequest(f"{key}: {v} is out of range; it must be between {lo} and {hi}", param=key)
    return float(v)


def _bool(d: dict, key: str) -> bool | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
        return v.lower() in ("true", "1")
    raise InvalidRequest(f"{key}: expected a boolean, got {v!r}", param=key)


def _str_list(d: dict, key: str) -> list[str] | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise InvalidRequest(f"{key}: expected a list of strings", param=key)
    return v


def parse_provider(v: Any) -> RoutingPrefs:
    if v is None:
        return RoutingPrefs()
    if isinstance(v, str):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            raise InvalidRequest("provider: expected a JSON object", param="provider") from None
    if not isinstance(v, dict):
        raise InvalidRequest("provider: expected an object", param="provider")
    p = RoutingPrefs()
    for key in ("order", "only", "ignore"):
        lst = _str_list(v, key) if key in v else None
        setattr(p, key, lst)
    fb = _bool(v, "allow_fallbacks")
    p.allow_fallbacks = True if fb is None else fb
    p.require_parameters = bool(_bool(v, "require_parameters"))
    sort = v.get("sort")
    if isinstance(sort, dict):
        sort = sort.get("by")
    if sort is not None and sort not in ("price", "latency", "throughput"):
        raise InvalidRequest(f"provider.sort: {sort!r} is not one of price, latency, throughput", param="provider.sort")
    p.sort = sort
    mp = v.get("max_price")
    if mp is not None:
        if not isinstance(mp, dict) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in mp.values()):
            raise InvalidRequest("provider.max_price: expected an object of numbers", param="provider.max_price")
        p.max_price = {k: float(x) for k, x in mp.items()}
    dc = v.get("data_collection")
    if dc is not None and dc not in ("allow", "deny"):
        raise InvalidRequest("provider.data_collection: must be 'allow' or 'deny'", param="provider.data_collection")
    p.data_collection = dc
    zdr = _bool(v, "zdr")
    p.zdr = zdr
    opts = v.get("options") or {}
    if not isinstance(opts, dict) or not all(isinstance(x, dict) for x in opts.values()):
        raise InvalidRequest("provider.options: expected an object of objects keyed by provider slug",
                             param="provider.options")
    p.options = opts
    return p


def _response_format(v: str | None, default: str) -> str:
    fmt = (v or default).lower()
    if fmt not in TRANSCRIPT_FORMATS:
        raise InvalidRequest(f"response_format: {v!r} is not one of {', '.join(TRANSCRIPT_FORMATS)}",
                             param="response_format")
    return fmt


def _granularities(v: list[str] | None) -> list[str]:
    if v is None:
        return ["segment"]
    bad = [g for g in v if g not in ("word", "segment")]
    if bad:
        raise InvalidRequest(f"timestamp_granularities: {bad[0]!r} is not 'word' or 'segment'",
                             param="timestamp_granularities")
    return v or ["segment"]


def transcription_from_json(data: dict[str, Any], task: str) -> TranscriptionRequest:
    model = _str(data, "model", required=True)
    ia = data.get("input_audio")
    if ia is None:
        raise InvalidRequest("input_audio: required field is missing (send {data, format})", param="input_audio")
    if not isinstance(ia, dict):
        raise InvalidRequest("input_audio: expected an object with data and format", param="input_audio")
    fmt = _str(ia, "format", prefix="input_audio.")
    if ia.get("url") is not None and ia.get("data") is None:
        raise InvalidRequest("input_audio.url: URL input is not enabled on this server; send input_audio.data",
                             param="input_audio.url")
    b64 = _str(ia, "data", required=True, prefix="input_audio.")
    audio = Audio(decode_b64(b64, "input_audio.data"), declared_format=canonical(fmt))
    return _common(data, model, audio, task)


def _common(data: dict[str, Any], model: str, audio: Audio, task: str) -> TranscriptionRequest:
    req = TranscriptionRequest(model=model, audio=audio, task=task)  # type: ignore[arg-type]
    req.language = _str(data, "language")
    if req.language:
        req.language = req.language.strip().lower().split("-")[0] or None
    req.prompt = _str(data, "prompt")
    req.temperature = _num(data, "temperature", 0.0, 1.0)
    req.response_format = _response_format(_str(data, "response_format"), "json")
    req.timestamp_granularities = _granularities(_str_list(data, "timestamp_granularities"))
    req.provider = parse_provider(data.get("provider"))
    req.models = _str_list(data, "models")
    req.session_id = _str(data, "session_id")
    req.user = _str(data, "user")
    for flag in ("diarize", "stream"):
        b = _bool(data, flag)
        if b is not None:
            req.extra[flag] = b
    kt = _str_list(data, "keyterms")
    if kt:
        req.extra["keyterms"] = kt
    return req


async def transcription_from_form(request: Request, task: str, limit: int) -> TranscriptionRequest:
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > limit:
        raise PayloadTooLarge(f"request body is {int(cl)} bytes; the limit is {limit} bytes", metadata={"limit": limit})
    try:
        form = await request.form(max_files=4, max_fields=64, max_part_size=4 * 1024 * 1024)
    except Exception as e:  # multipart parser errors
        raise InvalidRequest(f"body: malformed multipart form ({e})", param="body") from None
    try:
        data: dict[str, Any] = {}
        for key, value in form.multi_items():
            if key == "file":
                continue
            k = key[:-2] if key.endswith("[]") else key
            if k == "timestamp_granularities":
                data.setdefault(k, []).append(value)
            else:
                data[k] = value
        up = form.get("file")
        if up is None:
            raise InvalidRequest("file: required field is missing (upload the audio as 'file')", param="file")
        if not isinstance(up, UploadFile):
            raise InvalidRequest("file: expected a file upload, got a text field", param="file")
        content = await up.read()
        if len(content) > limit:
            raise PayloadTooLarge(f"file exceeds the limit of {limit} bytes", metadata={"limit": limit})
        if not content:
            raise InvalidRequest("file: the uploaded file is empty", param="file")
        name = up.filename or ""
        ext = canonical(name.rsplit(".", 1)[-1]) if "." in name else None
        declared = canonical(data.get("format")) if isinstance(data.get("format"), str) else ext
        model = _str(data, "model", required=True)
        return _common(data, model, Audio(content, declared_format=declared, filename=name), task)
    finally:
        await form.close()


def speech_from_json(data: dict[str, Any], *, default_format: str, max_chars: int) -> SpeechRequest:
    model = _str(data, "model", required=True)
    text = data.get("input")
    if text is None:
        raise InvalidRequest("input: required field is missing", param="input")
    if isinstance(text, list):  # multi-speaker turns: join their text for single-voice engines
        try:
            text = "\n".join(t["text"] for t in text)
        except (TypeError, KeyError):
            raise InvalidRequest("input: expected a string or a list of {text} turns", param="input") from None
    if not isinstance(text, str):
        raise InvalidRequest(f"input: expected a string, got {type(text).__name__}", param="input")
    if not text.strip():
        raise InvalidRequest("input: must not be empty", param="input")
    if len(text) > max_chars:
        raise InvalidRequest(f"input: {len(text)} characters is over the limit of {max_chars}", param="input",
                             metadata={"limit": max_chars})
    fmt = (_str(data, "response_format") or default_format).lower()
    if fmt == "pcm16":
        fmt = "pcm"
    if fmt not in SPEECH_FORMATS:
        raise InvalidRequest(f"response_format: {fmt!r} is not one of {', '.join(SPEECH_FORMATS)}",
                             param="response_format")
    speed = _num(data, "speed", 0.25, 4.0)
    sf = (_str(data, "stream_format") or "audio").lower()
    if sf not in ("audio", "sse"):
        raise InvalidRequest(f"stream_format: {sf!r} is not 'audio' or 'sse'", param="stream_format")
    return SpeechRequest(model=model, input=text, voice=_str(data, "voice"), response_format=fmt,
                         speed=1.0 if speed is None else speed, instructions=_str(data, "instructions"),
                         stream_format=sf, provider=parse_provider(data.get("provider")),
                         models=_str_list(data, "models"), session_id=_str(data, "session_id"), user=_str(data, "user"))
