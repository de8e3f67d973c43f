"""Dialect bodies -> neutral requests. JSON (OpenRouter: base64 input_audio, decoded while the body streams
in: api/json_body.py) and OpenAI multipart (small bodies split in memory, big ones spooled by Starlette's
parser: api/multipart.py). Every problem becomes a 400 naming the field (413 for a body over the limit),
never a 500."""
from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..audio.sniff import INPUT_FORMATS, canonical, known, sniff
from ..core.errors import GatewayError, InvalidRequest, PayloadTooLarge
from ..core.types import (SPEECH_FORMATS, TRANSCRIPT_FORMATS, Audio, RoutingPrefs, SpeechRequest,
                          TranscriptionRequest)
from . import json_body
from .json_body import DATA_URI as _DATA_URI
from .json_body import BodyScanner, StreamedBase64, b64decode_strict
from .multipart import FilePart, read_form

_WS = re.compile(rb"\s+")
_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_URLSAFE = bytes.maketrans(b"-_", b"+/")

# ISO 639-1 codes, plus the three-letter codes Whisper uses (haw, yue). A code outside this list is a 400
# at parse time; whether the serving engine knows the language is the provider's business.
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee
el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is
it iu ja jv jw ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr
ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si
sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh
yi yo za zh zu haw yue
""".split())
LANGUAGE_CODES = {  # English names clients send instead of codes (OpenAI's verbose_json reports names)
    "english": "en", "german": "de", "spanish": "es", "french": "fr", "italian": "it", "russian": "ru",
    "japanese": "ja", "chinese": "zh", "mandarin": "zh", "cantonese": "yue", "portuguese": "pt",
    "dutch": "nl", "korean": "ko", "arabic": "ar", "hindi": "hi", "polish": "pl", "turkish": "tr",
    "swedish": "sv", "ukrainian": "uk", "czech": "cs", "greek": "el", "finnish": "fi", "danish": "da",
    "norwegian": "no", "hebrew": "he", "indonesian": "id", "vietnamese": "vi", "thai": "th",
    "romanian": "ro", "hungarian": "hu", "catalan": "ca", "persian": "fa",
}
PROVIDER_SORTS = ("price", "latency", "throughput")


# ---- body -----------------------------------------------------------------------------------------------
def _too_large(limit: int, size: int | None = None) -> PayloadTooLarge:
    what = f"request body is {size} bytes, over" if size is not None else "request body is over"
    return PayloadTooLarge(f"{what} the limit of {limit} bytes (AUDIOROUTER_MAX_BODY_BYTES)",
                           metadata={"limit": limit}, code="request_too_large")


def _check_length(request: Request, limit: int) -> None:
    cl = request.headers.get("content-length")
    if cl and cl.strip().isdigit() and int(cl) > limit:
        raise _too_large(limit, int(cl))


class ScannedBody(bytearray):
    """A JSON body as `read_body` keeps it: the text with input_audio.data's string taken out (decoded as it
    arrived; see api/json_body.py). Only `parse_json` reads it."""

    scan: BodyScanner


async def read_body(request: Request, limit: int, *, audio: bool = False) -> bytearray:
    """The body, refusing (413) as soon as it passes `limit`, with or without Content-Length. A JSON object's
    input_audio.data is decoded while it arrives and not kept as text (parse_json puts it back, decoded), so a
    big base64 upload costs its decoded size, not four times the text (`audio=True`: the transcription
    bodies; any other body is kept as it came, without the scanner)."""
    _check_length(request, limit)
    if not audio:
        body, size = bytearray(), 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            body += chunk
        return body
    scan = BodyScanner()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if chunk:
            scan.feed(chunk)
    scan.finish()
    if not scan.extracted:
        return scan.skel  # the body as it came (a bytearray: orjson reads it as is)
    body = ScannedBody()
    body += scan.skel
    body.scan = scan
    return body


def parse_json(body: bytes | bytearray) -> dict[str, Any]:
    if not body or body.isspace():  # (strip() would copy the whole body)
        raise InvalidRequest("body: the request body is empty; send a JSON object", param="body")
    scan = body.scan if isinstance(body, ScannedBody) else None
    try:
        data = orjson.loads(memoryview(body) if scan is not None else body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"body: invalid JSON ({_json_error(e, scan)})", param="body") from None
    if scan is not None:
        if scan.utf8_error or scan.error is not None:  # the skeleton parsed: the error is in the string
            raise InvalidRequest(f"body: invalid JSON ({_json_error(None, scan)})", param="body")
    if not isinstance(data, dict):
        raise InvalidRequest(f"body: expected a JSON object, got {_kind(data)}", param="body")
    if scan is not None:
        ia = data.get("input_audio")
        if isinstance(ia, dict) and ia.get("data") == scan.placeholder[1:-1].decode():
            ia["data"] = scan.result
    return data


def _json_error(e: orjson.JSONDecodeError | None, scan: BodyScanner | None) -> str:
    """orjson's message for the whole body, from the skeleton's error and the string's own."""
    if scan is None:
        return str(e)
    utf8 = f"{json_body.UTF8_MESSAGE}: line 1 column 1 (char 0)"
    if scan.utf8_error or (e is not None and str(e).startswith(json_body.UTF8_MESSAGE)):
        return utf8
    mapped = None
    if e is not None:
        pos, line, col = scan.map_position(e.pos, e.lineno, e.colno)
        mapped = (pos, f"{e.msg}: line {line} column {col} (char {pos})")
    if scan.error is not None and (mapped is None or scan.error.pos <= mapped[0]):
        return str(scan.error)
    return mapped[1] if mapped is not None else str(e)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, (UploadFile, FilePart)):
        return "a file upload"
    if isinstance(v, StreamedBase64):
        return "string"
    return type(v).__name__


def decode_b64(s: str | bytes, field: str) -> bytes:
    """Standard or URL-safe base64, with or without padding, line breaks or a data: URI prefix."""
    if isinstance(s, str) and s[:5].lower() != "data:":
        try:  # the usual case, decoded straight from the str: no ASCII copy of a large body first
            out = b64decode_strict(s)
            if out:
                return out
        except (binascii.Error, ValueError):
            pass
    if isinstance(s, str):
        try:
            raw = s.encode("ascii")
        except UnicodeEncodeError:
            raise _invalid_b64(field, "it contains non-ASCII characters") from None
    else:
        raw = s
    m = _DATA_URI.match(raw[:256])
    if m:
        raw = raw[m.end():]
    try:
        out = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        cleaned = _WS.sub(b"", raw).translate(_URLSAFE).rstrip(b"=")
        if not _B64.fullmatch(cleaned) or len(cleaned) % 4 == 1:
            raise _invalid_b64(field, "it has characters outside the base64 alphabet or a bad length") from None
        try:
            out = base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid_b64(field, "it could not be decoded") from None
    if not out:
        raise _empty_audio(field)
    return out


def streamed_b64(v: StreamedBase64, field: str) -> bytes:
    """decode_b64's answer for a string read_body already decoded."""
    if v.error == json_body.NON_ASCII:
        raise _invalid_b64(field, "it contains non-ASCII characters")
    if v.error == json_body.ALPHABET:
        raise _invalid_b64(field, "it has characters outside the base64 alphabet or a bad length")
    if v.error == json_body.EMPTY:
        raise _empty_audio(field)
    return v.data


def _empty_audio(field: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: the audio is empty (0 bytes)", param=field, code="invalid_audio")


def _invalid_b64(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: invalid base64 ({why}); send the base64 of the audio file's bytes",
                          param=field, code="invalid_base64")


# ---- typed field helpers ------------------------------------------------------------------------------
def _str(d: dict, key: str, *, required: bool = False, prefix: str = "") -> str | None:
    v = d.get(key)
    name = prefix + key
    if v is None:
        if required:
            raise InvalidRequest(f"{name}: required field is missing", param=name)
        return None
    if not isinstance(v, str):
        raise InvalidRequest(f"{name}: expected a string, got {_kind(v)}", param=name)
    if required and not v.strip():
        raise InvalidRequest(f"{name}: must not be empty", param=name)
    return v


def _num(d: dict, key: str, lo: float | None = None, hi: float | None = None, *, prefix: str = "") -> float | None:
    v = d.get(key)
    name = prefix + key
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise InvalidRequest(f"{name}: expected a number, got {v[:40]!r}", param=name) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRequest(f"{name}: expected a number, got {_kind(v)}", param=name)
    try:
        v = float(v)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise InvalidRequest(f"{name}: expected a finite number", param=name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        bound = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None
                 else f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
        raise InvalidRequest(f"{name}: {v:g} is out of range; it must be {bound}", param=name,
                             metadata={"min": lo, "max": hi})
    return v


def _bool(d: dict, key: str, *, prefix: str = "") -> bool | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    got = f"{v[:40]!r}" if isinstance(v, str) else _kind(v)
    raise InvalidRequest(f"{prefix}{key}: expected a boolean (true or false), got {got}", param=prefix + key)


def _str_list(d: dict, key: str, *, prefix: str = "") -> list[str] | None:
    """A list of strings; one string is a list of one (a form field sent once)."""
    v = d.get(key)
    name = prefix + key
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise InvalidRequest(f"{name}: expected a list of strings, got {_kind(v)}", param=name)
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise InvalidRequest(f"{name}[{i}]: expected a string, got {_kind(x)}", param=f"{name}[{i}]")
    return v


def parse_provider(v: Any) -> RoutingPrefs:
    if v is None:
        return RoutingPrefs()
    if isinstance(v, str):  # multipart sends it as a JSON string
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            raise InvalidRequest("provider: expected a JSON object", param="provider") from None
    if not isinstance(v, dict):
        raise InvalidRequest(f"provider: expected an object, got {_kind(v)}", param="provider")
    pre = "provider."
    p = RoutingPrefs()
    for key in ("order", "only", "ignore"):
        setattr(p, key, _str_list(v, key, prefix=pre))
    fb = _bool(v, "allow_fallbacks", prefix=pre)
    p.allow_fallbacks = True if fb is None else fb
    p.require_parameters = bool(_bool(v, "require_parameters", prefix=pre))
    sort = v.get("sort")
    if isinstance(sort, dict):
        sort = sort.get("by")
    if sort is not None and (not isinstance(sort, str) or sort not in PROVIDER_SORTS):
        raise InvalidRequest(f"provider.sort: {str(sort)[:40]!r} is not one of {', '.join(PROVIDER_SORTS)}",
                             param="provider.sort")
    p.sort = sort
    mp = v.get("max_price")
    if mp is not None:
        if not isinstance(mp, dict):
            raise InvalidRequest(f"provider.max_price: expected an object of non-negative numbers, got {_kind(mp)}",
                                 param="provider.max_price")
        p.max_price = {}
        for k in mp:
            if mp[k] is None:
                raise InvalidRequest(f"provider.max_price.{k}: expected a number, got null",
                                     param=f"provider.max_price.{k}")
            p.max_price[k] = _num(mp, k, 0.0, prefix="provider.max_price.")
    dc = v.get("data_collection")
    if dc is not None and (not isinstance(dc, str) or dc not in ("allow", "deny")):
        raise InvalidRequest("provider.data_collection: must be 'allow' or 'deny'", param="provider.data_collection")
    p.data_collection = dc
    p.zdr = _bool(v, "zdr", prefix=pre)
    opts = v.get("options")
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        raise InvalidRequest(f"provider.options: expected an object keyed by provider slug, got {_kind(opts)}",
                             param="provider.options")
    for slug, o in opts.items():
        if not isinstance(o, dict):
            raise InvalidRequest(f"provider.options.{slug}: expected an object of that provider's options, got "
                                 f"{_kind(o)}", param=f"provider.options.{slug}")
    p.options = opts
    return p


def _response_format(v: str | None, default: str) -> str:
    fmt = (v or default).strip().lower()
    if fmt not in TRANSCRIPT_FORMATS:
        raise InvalidRequest(f"response_format: {v[:40]!r} is not one of {', '.join(TRANSCRIPT_FORMATS)}",
                             param="response_format")
    return fmt


def _granularities(v: list[str] | None) -> list[str]:
    if v is None:
        return ["segment"]
    bad = [g for g in v if g not in ("word", "segment")]
    if bad:
        raise InvalidRequest(f"timestamp_granularities: {bad[0][:40]!r} is not 'word' or 'segment'",
                             param="timestamp_granularities")
    return v or ["segment"]


def parse_language(v: str | None) -> str | None:
    """'en', 'EN-us', 'en_GB', 'English' -> 'en'; '' -> None (detect); anything else is a 400."""
    if v is None or not v.strip():
        return None
    s = v.strip().lower()
    if s in LANGUAGE_CODES:
        return LANGUAGE_CODES[s]
    code = s.replace("_", "-").split("-")[0]
    if code not in ISO_639_1:
        raise InvalidRequest(f"language: {v[:40]!r} is not an ISO-639-1 language code (e.g. en, de, ja)",
                             param="language")
    return code


def _declared_format(fmt: str | None, data: bytes, field: str) -> str | None:
    """The declared format, canonical. An unknown name is only a 400 when the bytes do not tell us either."""
    declared = canonical(fmt)
    if declared is None:
        if fmt is not None:
            raise InvalidRequest(f"{field}: must not be empty; use one of {', '.join(INPUT_FORMATS)}", param=field)
        return None
    if not known(declared) and sniff(data) is None:
        raise InvalidRequest(f"{field}: {fmt[:40]!r} is not a supported audio format; use one of "
                             f"{', '.join(INPUT_FORMATS)}", param=field, metadata={"formats": list(INPUT_FORMATS)})
    return declared


# ---- transcription ------------------------------------------------------------------------------------
def transcription_from_json(data: dict[str, Any], task: str) -> TranscriptionRequest:
    model = _str(data, "model", required=True)
    ia = data.get("input_audio")
    if ia is None:
        raise InvalidRequest("input_audio: required field is missing (send {data, format})", param="input_audio")
    if not isinstance(ia, dict):
        raise InvalidRequest(f"input_audio: expected an object with data and format, got {_kind(ia)}",
                             param="input_audio")
    if ia.get("url") is not None:  # fetched later by api/url_input.py
        if ia.get("data") is not None:
            raise InvalidRequest("input_audio: send either data or url, not both", param="input_audio.url")
        url = _str(ia, "url", required=True, prefix="input_audio.")
        fmt = _str(ia, "format", prefix="input_audio.")
        if fmt is not None and not known(canonical(fmt)):
            raise InvalidRequest(f"input_audio.format: {fmt[:40]!r} is not a supported audio format; use one of "
                                 f"{', '.join(INPUT_FORMATS)}", param="input_audio.format")
        req = _common(data, model, Audio(b"", declared_format=canonical(fmt)), task)
        req.extra["input_audio_url"] = url
        return req
    b64 = ia.get("data")
    if isinstance(b64, StreamedBase64):  # decoded by read_body as it arrived
        if b64.blank:
            raise InvalidRequest("input_audio.data: must not be empty", param="input_audio.data")
    else:
        b64 = _str(ia, "data", required=True, prefix="input_audio.")
    fmt = _str(ia, "format", required=True, prefix="input_audio.")
    raw = streamed_b64(b64, "input_audio.data") if isinstance(b64, StreamedBase64) \
        else decode_b64(b64, "input_audio.data")
    audio = Audio(raw, declared_format=_declared_format(fmt, raw, "input_audio.format"))
    return _common(data, model, audio, task)


def _common(data: dict[str, Any], model: str, audio: Audio, task: str) -> TranscriptionRequest:
    req = TranscriptionRequest(model=model, audio=audio, task=task)  # type: ignore[arg-type]
    req.language = parse_language(_str(data, "language"))
    req.prompt = _str(data, "prompt") or None
    req.temperature = _num(data, "temperature", 0.0, 1.0)
    req.response_format = _response_format(_str(data, "response_format"), "json")
    req.timestamp_granularities = _granularities(_str_list(data, "timestamp_granularities"))
    req.provider = parse_provider(data.get("provider"))
    req.models = _str_list(data, "models")
    req.session_id = _str(data, "session_id")
    req.user = _str(data, "user")
    for flag in ("diarize", "stream", "cache"):
        b = _bool(data, flag)
        if b is not None:
            req.extra[flag] = b
    kt = _str_list(data, "keyterms")
    if kt:
        req.extra["keyterms"] = kt
    return req


# ---- form fields -----------------------------------------------------------------------------------------
_NESTED = re.compile(r"([^\[\]]+)(?:\[[^\[\]]*\])+")
_SEGMENTS = re.compile(r"\[([^\[\]]*)\]")
MAX_FIELD_DEPTH = 6            # provider[options][slug][name][] is 4
JSON_LIST_FIELDS = ("models", "timestamp_granularities", "keyterms")
_MISSING = object()


def form_fields(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """A form's fields (all but `file`) as the JSON object they stand for. Nested values come in the bracket
    notation the openai SDKs send for `extra_body` (Python and npm alike): `provider[order][]=B`,
    `provider[allow_fallbacks]=false`, `provider[max_price][audio]=0.5`, `models[]=m1`; `name[0]` indices are
    read too. A name sent more than once is a list of its values. The leaves stay strings: the typed readers
    (_num, _bool, _str_list) convert them. A list field may also come as one JSON array string
    (`models=["a","b"]`), as `provider` may come as one JSON object string (parse_provider)."""
    data: dict[str, Any] = {}
    for key, value in items:
        if "[" not in key and "]" not in key:  # the usual case: a plain name
            if key not in data:
                data[key] = value
            elif key != "file":
                _put(data, key, value, key)
            continue
        m = _NESTED.fullmatch(key)
        if m is None:
            raise InvalidRequest(f"{key[:60]!r}: malformed field name; nested fields are sent as name[key] or "
                                 "name[]", param=key[:60])
        name = m[1]
        segs = _SEGMENTS.findall(key, len(name))
        if len(segs) > MAX_FIELD_DEPTH:
            raise InvalidRequest(f"{name[:60]}: nested more than {MAX_FIELD_DEPTH} levels deep", param=name[:60])
        node: Any = data
        k: Any = name
        path = name
        for seg in segs:
            node, k, path = _step(node, k, seg, path)
        _put(node, k, value, path)
    data.pop("file", None)
    for name in JSON_LIST_FIELDS:
        v = data.get(name)
        if v.__class__ is str and v[:1] == "[":
            try:
                decoded = orjson.loads(v)
            except orjson.JSONDecodeError:
                continue  # not JSON: the string itself
            if isinstance(decoded, list):
                data[name] = decoded
    return data


def _step(node: Any, k: Any, seg: str, path: str) -> tuple[Any, Any, str]:
    """One bracket down from node[k]: the container the next segment indexes, its key, and the field's name."""
    child = node[k] if isinstance(node, list) else node.get(k, _MISSING)
    if seg == "" or (seg.isascii() and seg.isdigit()):  # a list: name[] appends, name[i] is the i-th element
        if child is _MISSING:
            child = _set(node, k, [])
        elif not isinstance(child, list):
            raise _both(path)
        i = len(child) if seg == "" else int(seg) if len(seg) <= 6 else len(child) + 1  # (6 digits: past any form)
        if i > len(child):
            name = f"{path}[{seg[:12]}]"
            raise InvalidRequest(f"{name}: list indices must come in order from 0", param=name)
        if i == len(child):
            child.append(_MISSING)
        return child, i, f"{path}[{i}]"
    if child is _MISSING:
        child = _set(node, k, {})
    elif not isinstance(child, dict):
        raise _both(path)
    return child, seg, f"{path}.{seg}"


def _set(node: Any, k: Any, v: Any) -> Any:
    node[k] = v
    return v


def _put(node: Any, k: Any, value: Any, path: str) -> None:
    """Sets a leaf; a second value for the same name makes it a list."""
    old = node[k] if isinstance(node, list) else node.get(k, _MISSING)
    if old is _MISSING:
        node[k] = value
    elif isinstance(old, list):
        old.append(value)
    elif isinstance(old, dict):
        raise _both(path)
    else:
        node[k] = [old, value]


def _both(path: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: sent both as one value and as nested fields ({path}[...]); send one of them",
                          param=path)


async def transcription_from_form(request: Request, task: str, limit: int) -> TranscriptionRequest:
    try:
        form = await read_form(request, limit, _too_large, max_files=4, max_fields=64,
                               max_part_size=4 * 1024 * 1024)
    except GatewayError:
        raise
    except Exception as e:  # multipart parser errors
        raise InvalidRequest(f"body: malformed multipart form ({str(e)[:200]})", param="body") from None
    try:
        data = form_fields(form.multi_items())
        model = _str(data, "model", required=True)
        up = form.get("file")
        if up is None:
            raise InvalidRequest("file: required field is missing (upload the audio as 'file')", param="file")
        if not isinstance(up, FilePart):
            raise InvalidRequest("file: expected a file upload, got a text field", param="file")
        content = await up.read()
        if len(content) > limit:
            raise _too_large(limit, len(content))
        if not content:
            raise InvalidRequest("file: the uploaded file is empty (0 bytes)", param="file", code="invalid_audio")
        name = up.filename or ""
        ext = canonical(name.rsplit(".", 1)[-1]) if "." in name else None
        fmt_field = data.get("format")
        if fmt_field is not None:
            if not isinstance(fmt_field, str):
                raise InvalidRequest(f"format: expected a string, got {_kind(fmt_field)}", param="format")
            declared = _declared_format(fmt_field, content, "format")
        else:  # the file name's extension, else the part's Content-Type; unknown ones ("blob") mean "detect"
            if known(ext):
                declared = ext
            else:
                ctype = canonical(up.content_type) if up.content_type else None
                declared = ctype if known(ctype) else None
        return _common(data, model, Audio(content, declared_format=declared, filename=name), task)
    finally:
        await form.close()


# ---- speech -------------------------------------------------------------------------------------------
def speech_from_json(data: dict[str, Any], *, default_format: str, max_chars: int) -> SpeechRequest:
    model = _str(data, "model", required=True)
    text = data.get("input")
    if text is None:
        raise InvalidRequest("input: required field is missing", param="input")
    if isinstance(text, list):  # multi-speaker turns: join their text for single-voice engines
        if not all(isinstance(t, dict) and isinstance(t.get("text"), str) for t in text):
            raise InvalidRequest("input: expected a string or a list of {text} turns", param="input")
        text = "\n".join(t["text"] for t in text)
    if not isinstance(text, str):
        raise InvalidRequest(f"input: expected a string, got {_kind(text)}", param="input")
    if not text.strip():
        raise InvalidRequest("input: must not be empty", param="input")
    if len(text) > max_chars:
        raise InvalidRequest(f"input: {len(text)} characters is over the limit of {max_chars} "
                             "(AUDIOROUTER_MAX_SPEECH_CHARS)", param="input", metadata={"limit": max_chars},
                             code="input_too_long")
    if not any(ch.isalnum() for ch in text):
        raise InvalidRequest("input: has nothing to speak (no letters or digits)", param="input")
    raw_fmt = _str(data, "response_format")
    fmt = (raw_fmt or default_format).strip().lower()
    if fmt == "pcm16":
        fmt = "pcm"
    if fmt not in SPEECH_FORMATS:
        raise InvalidRequest(f"response_format: {fmt[:40]!r} is not one of {', '.join(SPEECH_FORMATS)}",
                             param="response_format")
    speed = _num(data, "speed", 0.25, 4.0)
    sf = (_str(data, "stream_format") or "audio").strip().lower()
    if sf not in ("audio", "sse"):
        raise InvalidRequest(f"stream_format: {sf[:40]!r} is not 'audio' or 'sse'", param="stream_format")
    voice = _str(data, "voice")
    if voice is not None:
        voice = voice.strip() or None
    return SpeechRequest(model=model, input=text, voice=voice, response_format=fmt,
                         speed=1.0 if speed is None else speed, instructions=_str(data, "instructions") or None,
                         stream_format=sf, provider=parse_provider(data.get("provider")),
                         models=_str_list(data, "models"), session_id=_str(data, "session_id"), user=_str(data, "user"))
