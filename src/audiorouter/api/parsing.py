"""Dialect bodies -> neutral requests. JSON (OpenRouter: base64 input_audio, decoded while the body streams
in: api/json_body.py) and OpenAI multipart (small bodies split in memory, big ones spooled by Starlette's
parser: api/multipart.py). Every problem becomes a 400 naming the field (413 for a body over the limit),
never a 500."""
from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Annotated, Any, BinaryIO, Literal, get_args, overload

import orjson
from pydantic import AfterValidator, BeforeValidator
from starlette.requests import Request

from ..audio.sniff import INPUT_FORMATS, canonical, known, sniff
from ..core import languages
from ..core.errors import GatewayError, InvalidRequest, PayloadTooLarge
from ..core.types import SPEECH_FORMATS, TRANSCRIPT_FORMATS, Audio, RoutingPrefs, SpeechRequest, TranscriptionRequest
from . import json_body, openai_params
from .json_body import DATA_URI as _DATA_URI
from .json_body import BodyScanner, StreamedBase64, b64decode_strict
from .multipart import FilePart, read_form
from .validation import Body, FormBool, Strings, as_number, in_range, validate
from .validation import kind as value_kind

_WS = re.compile(rb"\s+")
_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_URLSAFE = bytes.maketrans(b"-_", b"+/")

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


async def read_body(request: Request, limit: int, *, audio: bool = False,
                    spool: BinaryIO | None = None) -> bytearray:
    """The body, refusing (413) as soon as it passes `limit`, with or without Content-Length. A JSON object's
    input_audio.data is decoded while it arrives and not kept as text (parse_json puts it back, decoded), so a
    big base64 upload costs its decoded size, not four times the text (`audio=True`: the transcription
    bodies; any other body is kept as it came, without the scanner). `spool`: an open file the decoded audio
    is written to instead of memory (the batch jobs' bodies; input_audio.data is then a SpooledBase64)."""
    _check_length(request, limit)
    if not audio:
        body, size = bytearray(), 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            body += chunk
        return body
    scan = BodyScanner(spool)
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
    # the skeleton parsed, so an error the scanner saw is inside a string
    if scan is not None and (scan.utf8_error or scan.error is not None):
        raise InvalidRequest(f"body: invalid JSON ({_json_error(None, scan)})", param="body")
    if not isinstance(data, dict):
        raise InvalidRequest(f"body: expected a JSON object, got {kind(data)}", param="body")
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


def kind(v: Any) -> str:
    """A value's kind as the messages name it: validation.kind, plus the scanner's lazily decoded base64 strings."""
    return "string" if isinstance(v, StreamedBase64) else value_kind(v)


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
@overload
def str_field(d: dict, key: str, *, required: Literal[True], prefix: str = "") -> str: ...
@overload
def str_field(d: dict, key: str, *, required: bool = False, prefix: str = "") -> str | None: ...
def str_field(d: dict, key: str, *, required: bool = False, prefix: str = "") -> str | None:
    v = d.get(key)
    name = prefix + key
    if v is None:
        if required:
            raise InvalidRequest(f"{name}: required field is missing", param=name)
        return None
    if not isinstance(v, str):
        raise InvalidRequest(f"{name}: expected a string, got {kind(v)}", param=name)
    if required and not v.strip():
        raise InvalidRequest(f"{name}: must not be empty", param=name)
    return v


def num_field(d: dict, key: str, lo: float | None = None, hi: float | None = None, *,
              prefix: str = "") -> float | None:
    v = d.get(key)
    name = prefix + key
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise InvalidRequest(f"{name}: expected a number, got {d[key][:40]!r}", param=name) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRequest(f"{name}: expected a number, got {kind(v)}", param=name)
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


def bool_field(d: dict, key: str, *, prefix: str = "") -> bool | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    got = f"{v[:40]!r}" if isinstance(v, str) else kind(v)
    raise InvalidRequest(f"{prefix}{key}: expected a boolean (true or false), got {got}", param=prefix + key)


def str_list_field(d: dict, key: str, *, prefix: str = "") -> list[str] | None:
    """A list of strings; one string is a list of one (a form field sent once)."""
    v = d.get(key)
    name = prefix + key
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise InvalidRequest(f"{name}: expected a list of strings, got {kind(v)}", param=name)
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise InvalidRequest(f"{name}[{i}]: expected a string, got {kind(x)}", param=f"{name}[{i}]")
    return v


# ---- the `provider` object and a transcription's options: pydantic models (api/validation.py) -------------
def _json_object(v: Any) -> Any:
    if isinstance(v, str):  # multipart sends it as a JSON string
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            raise ValueError("expected a JSON object") from None
    return v


def _sort_by(v: Any) -> Any:
    return v.get("by") if isinstance(v, dict) else v  # {"by": "price"} as well as "price"


Price = Annotated[float, BeforeValidator(as_number), AfterValidator(in_range(0.0, None))]
Sort = Literal["price", "latency", "throughput"]
assert get_args(Sort) == PROVIDER_SORTS


class ProviderFields(Body):
    """OpenRouter's provider preferences (the request's `provider` object)."""
    order: Strings | None = None
    only: Strings | None = None
    ignore: Strings | None = None
    allow_fallbacks: FormBool | None = None
    require_parameters: FormBool | None = None
    sort: Annotated[Sort, BeforeValidator(_sort_by)] | None = None
    max_price: dict[str, Price] | None = None
    data_collection: Literal["allow", "deny"] | None = None
    zdr: FormBool | None = None
    options: dict[str, dict[str, Any]] | None = None  # keyed by provider slug: that provider's own options


ProviderArg = Annotated[ProviderFields | None, BeforeValidator(_json_object)]


class _ProviderOnly(Body):
    provider: ProviderArg = None


def routing_prefs(f: ProviderFields | None) -> RoutingPrefs:
    if f is None:
        return RoutingPrefs()
    return RoutingPrefs(order=f.order, only=f.only, ignore=f.ignore,
                        allow_fallbacks=True if f.allow_fallbacks is None else f.allow_fallbacks,
                        require_parameters=bool(f.require_parameters), sort=f.sort, max_price=f.max_price,
                        data_collection=f.data_collection, zdr=f.zdr, options=f.options or {})


def parse_provider(v: Any) -> RoutingPrefs:
    """The `provider` object (or its JSON string, from a form) -> RoutingPrefs; a 400 naming the field."""
    if v is None:
        return RoutingPrefs()
    return routing_prefs(validate(_ProviderOnly, {"provider": v}).provider)


def _declared_format(fmt: str | None, data: bytes, field: str) -> str | None:
    """The declared format, canonical. An unknown name is only a 400 when the bytes do not tell us either."""
    declared = canonical(fmt)
    if declared is None:
        if fmt is not None:
            raise InvalidRequest(f"{field}: must not be empty; use one of {', '.join(INPUT_FORMATS)}", param=field)
        return None
    if not known(declared) and sniff(data) is None:
        raise InvalidRequest(f"{field}: {str(fmt)[:40]!r} is not a supported audio format; use one of "
                             f"{', '.join(INPUT_FORMATS)}", param=field, metadata={"formats": list(INPUT_FORMATS)})
    return declared


# ---- transcription ------------------------------------------------------------------------------------
def transcription_from_json(data: dict[str, Any], task: str) -> TranscriptionRequest:
    model = str_field(data, "model", required=True)
    ia = data.get("input_audio")
    if ia is None:
        raise InvalidRequest("input_audio: required field is missing (send {data, format})", param="input_audio")
    if not isinstance(ia, dict):
        raise InvalidRequest(f"input_audio: expected an object with data and format, got {kind(ia)}",
                             param="input_audio")
    if ia.get("url") is not None:  # fetched later by api/url_input.py
        if ia.get("data") is not None:
            raise InvalidRequest("input_audio: send either data or url, not both", param="input_audio.url")
        url = str_field(ia, "url", required=True, prefix="input_audio.")
        fmt = str_field(ia, "format", prefix="input_audio.")
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
        b64 = str_field(ia, "data", required=True, prefix="input_audio.")
    fmt = str_field(ia, "format", required=True, prefix="input_audio.")
    raw = streamed_b64(b64, "input_audio.data") if isinstance(b64, StreamedBase64) \
        else decode_b64(b64, "input_audio.data")
    audio = Audio(raw, declared_format=_declared_format(fmt, raw, "input_audio.format"))
    return _common(data, model, audio, task)


def _language(v: str) -> str | None:
    c = languages.code(v)
    if c is not None and not languages.is_known(c):
        raise ValueError(f"{v[:40]!r} is not an ISO-639-1 language code (e.g. en, de, ja)")
    return c


def _transcript_format(v: str) -> str:
    fmt = v.strip().lower() or "json"
    if fmt not in TRANSCRIPT_FORMATS:
        raise ValueError(f"{v[:40]!r} is not one of {', '.join(TRANSCRIPT_FORMATS)}")
    return fmt


def _granularity_list(v: list[str]) -> list[str]:
    bad = [g for g in v if g not in ("word", "segment")]
    if bad:
        raise ValueError(f"{bad[0][:40]!r} is not 'word' or 'segment'")
    return v or ["segment"]


class TranscriptionFields(Body):
    """A transcription's options, in the order they are checked (the first bad one is the 400)."""
    language: Annotated[str, AfterValidator(_language)] | None = None
    prompt: str | None = None
    temperature: Annotated[float, BeforeValidator(as_number), AfterValidator(in_range(0.0, 1.0))] | None = None
    response_format: Annotated[str, AfterValidator(_transcript_format)] | None = None
    timestamp_granularities: Annotated[Strings, AfterValidator(_granularity_list)] | None = None
    provider: ProviderArg = None
    models: Strings | None = None
    session_id: str | None = None
    user: str | None = None
    diarize: FormBool | None = None
    stream: FormBool | None = None
    cache: FormBool | None = None
    keyterms: Strings | None = None


def _common(data: dict[str, Any], model: str, audio: Audio, task: str) -> TranscriptionRequest:
    f = validate(TranscriptionFields, data)
    req = TranscriptionRequest(model=model, audio=audio, task=task)  # type: ignore[arg-type]
    req.language = f.language
    req.prompt = f.prompt or None
    req.temperature = f.temperature
    req.response_format = f.response_format or "json"
    req.timestamp_granularities = f.timestamp_granularities or ["segment"]
    req.provider = routing_prefs(f.provider)
    req.models = f.models
    req.session_id = f.session_id
    req.user = f.user
    for flag in ("diarize", "stream", "cache"):
        b = getattr(f, flag)
        if b is not None:
            req.extra[flag] = b
    if f.keyterms:
        req.extra["keyterms"] = f.keyterms
    openai_params.transcription_extras(data, req)  # include, chunking_strategy, known speakers (H3)
    return req


# ---- form fields -----------------------------------------------------------------------------------------
_NESTED = re.compile(r"([^\[\]]+)(?:\[[^\[\]]*\])+")
_SEGMENTS = re.compile(r"\[([^\[\]]*)\]")
MAX_FIELD_DEPTH = 6            # provider[options][slug][name][] is 4
JSON_LIST_FIELDS = ("models", "timestamp_granularities", "keyterms", "include", "known_speaker_names",
                    "known_speaker_references")
_MISSING = object()


def form_fields(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """A form's fields (all but `file`) as the JSON object they stand for. Nested values come in the bracket
    notation the openai SDKs send for `extra_body` (Python and npm alike): `provider[order][]=B`,
    `provider[allow_fallbacks]=false`, `provider[max_price][audio]=0.5`, `models[]=m1`; `name[0]` indices are
    read too. A name sent more than once is a list of its values. The leaves stay strings: the models
    (TranscriptionFields: FormBool, Strings, as_number) convert them. A list field may also come as one JSON
    array string (`models=["a","b"]`), as `provider` may come as one JSON object string (ProviderArg)."""
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


async def transcription_from_form(request: Request, task: str, limit: int,
                                  fields: dict[str, Any] | None = None,
                                  to_file: str | None = None) -> TranscriptionRequest:
    """`fields`, when given, receives the form's other fields (the batch jobs' webhook, idempotency_key).
    `to_file`: a path the uploaded file is written to instead of being read into memory (the batch jobs' upload
    of any size): the request's audio is then that file (Audio.path, no bytes), which the caller removes."""
    try:
        form = await read_form(request, limit, _too_large, max_files=4, max_fields=64,
                               max_part_size=4 * 1024 * 1024)
    except GatewayError:
        raise
    except Exception as e:  # multipart parser errors
        raise InvalidRequest(f"body: malformed multipart form ({str(e)[:200]})", param="body") from None
    try:
        data = form_fields(form.multi_items())
        if fields is not None:
            fields.update(data)
        model = str_field(data, "model", required=True)
        up = form.get("file")
        if up is None:
            raise InvalidRequest("file: required field is missing (upload the audio as 'file')", param="file")
        if not isinstance(up, FilePart):
            raise InvalidRequest("file: expected a file upload, got a text field", param="file")
        if to_file is not None:
            size, content = await up.save(to_file, limit)  # content: the file's head, what sniffing needs
        else:
            content = await up.read()
            size = len(content)
        if size > limit:
            raise _too_large(limit, size)
        if not size:
            raise InvalidRequest("file: the uploaded file is empty (0 bytes)", param="file", code="invalid_audio")
        name = up.filename or ""
        ext = canonical(name.rsplit(".", 1)[-1]) if "." in name else None
        fmt_field = data.get("format")
        if fmt_field is not None:
            if not isinstance(fmt_field, str):
                raise InvalidRequest(f"format: expected a string, got {kind(fmt_field)}", param="format")
            declared = _declared_format(fmt_field, content, "format")
        else:  # the file name's extension, else the part's Content-Type; unknown ones ("blob") mean "detect"
            if known(ext):
                declared = ext
            else:
                ctype = canonical(up.content_type) if up.content_type else None
                declared = ctype if known(ctype) else None
        audio = Audio(b"", declared_format=declared, filename=name, path=to_file) if to_file is not None \
            else Audio(content, declared_format=declared, filename=name)
        return _common(data, model, audio, task)
    finally:
        await form.close()


# ---- speech -------------------------------------------------------------------------------------------
def _stream_format(v: str) -> str:
    sf = v.strip().lower() or "audio"
    if sf not in ("audio", "sse"):
        raise ValueError(f"{sf[:40]!r} is not 'audio' or 'sse'")
    return sf


def _timestamps(v: str) -> str:
    ts = v.strip().lower() or "none"
    if ts not in ("word", "none"):
        raise ValueError(f"{ts[:40]!r} is not 'word' or 'none' (word timings are per word)")
    return ts


def speech_timestamps(f: SpeechFields) -> str | None:
    """`timestamps` ("word" | "none") or OpenRouter's `timestamp_granularities` (["word"]; [] for none) as
    "word" or None; a granularity speech does not time, or the two fields disagreeing, is a 400."""
    ts = "word" if f.timestamps == "word" else None
    grans = f.timestamp_granularities
    if grans is None:
        return ts
    bad = [g for g in grans if g.strip().lower() != "word"]
    if bad:
        raise InvalidRequest(f"timestamp_granularities: {bad[0][:40]!r} is not timed for speech; only \"word\"",
                             param="timestamp_granularities")
    g = "word" if grans else None
    if f.timestamps is not None and g != ts:
        raise InvalidRequest("timestamp_granularities: disagrees with timestamps; send one of the two",
                             param="timestamp_granularities")
    return g


class SpeechFields(Body):
    """A speech request's options besides model, input and voice, in the order they are checked."""
    response_format: str | None = None  # its default depends on the dialect: checked by speech_from_json
    speed: Annotated[float, BeforeValidator(as_number), AfterValidator(in_range(0.25, 4.0))] | None = None
    stream_format: Annotated[str, AfterValidator(_stream_format)] | None = None
    instructions: str | None = None
    provider: ProviderArg = None
    models: Strings | None = None
    session_id: str | None = None
    user: str | None = None
    timestamps: Annotated[str, AfterValidator(_timestamps)] | None = None  # "word": jobs/speech_timings.py
    timestamp_granularities: Strings | None = None  # OpenRouter's name for the same: ["word"]


def speech_from_json(data: dict[str, Any], *, default_format: str, max_chars: int) -> SpeechRequest:
    model = str_field(data, "model", required=True)
    text = data.get("input")
    if text is None:
        raise InvalidRequest("input: required field is missing", param="input")
    turns, turn_voice = None, None
    if isinstance(text, list):  # multi-speaker turns (OpenRouter's SpeechTurn list): openai_params.speech_turns
        plain = data.get("voice") if isinstance(data.get("voice"), str) else None
        text, turns, turn_voice = openai_params.speech_turns(text, plain.strip() or None if plain else None)
    if not isinstance(text, str):
        raise InvalidRequest(f"input: expected a string, got {kind(text)}", param="input")
    if not text.strip():
        raise InvalidRequest("input: must not be empty", param="input")
    if len(text) > max_chars:
        raise InvalidRequest(f"input: {len(text)} characters is over the limit of {max_chars} "
                             "(AUDIOROUTER_MAX_SPEECH_CHARS)", param="input", metadata={"limit": max_chars},
                             code="input_too_long")
    if not any(ch.isalnum() for ch in text):
        raise InvalidRequest("input: has nothing to speak (no letters or digits)", param="input")
    f = validate(SpeechFields, data)
    fmt = (f.response_format or default_format).strip().lower()
    if fmt == "pcm16":
        fmt = "pcm"
    if fmt not in SPEECH_FORMATS:
        raise InvalidRequest(f"response_format: {fmt[:40]!r} is not one of {', '.join(SPEECH_FORMATS)}",
                             param="response_format")
    voice, voice_object = openai_params.voice(data.get("voice"))  # a name or {"id": ...} (H3)
    if turns is not None and voice_object:
        raise InvalidRequest("voice: a voice object cannot be combined with turns in several voices", param="voice")
    if turn_voice is not None and not voice_object:
        voice = turn_voice  # turns all in one voice: that voice
    return SpeechRequest(model=model, input=text, voice=voice, voice_object=voice_object, response_format=fmt,
                         speed=1.0 if f.speed is None else f.speed, instructions=f.instructions or None,
                         stream_format=f.stream_format or "audio", provider=routing_prefs(f.provider),
                         models=f.models, session_id=f.session_id, user=f.user, timestamps=speech_timestamps(f),
                         turns=turns)
