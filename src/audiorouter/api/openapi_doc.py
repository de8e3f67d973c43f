"""What /openapi.json says beyond FastAPI's route table. The handlers read their bodies and query strings
themselves (so FastAPI sees no parameters): this adds the request bodies, the query parameters and each
dialect's error envelope, so that clients, generators and the API fuzzer (tests/test_fuzz_api.py) see the
contract the handlers enforce."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ..core.chat import CHAT_INPUT_FORMATS, CHAT_OUTPUT_FORMATS
from ..core.types import SPEECH_FORMATS, TRANSCRIPT_FORMATS
from .chat import ROLES

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_STR_LIST = {"type": "array", "items": _STR}
_NULLABLE_STR_LIST = {"anyOf": [_STR_LIST, {"type": "null"}]}

# the routing preferences both dialects take (`provider` in the JSON body; bracketed fields on multipart)
_ROUTING = {"provider": {"type": "object"}, "models": _STR_LIST, "session_id": _STR, "user": _STR}

_TRANSCRIBE_FIELDS: dict[str, Any] = {
    "model": _STR, "language": _STR, "prompt": _STR, "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "response_format": {"type": "string", "enum": sorted(TRANSCRIPT_FORMATS)},
    "timestamp_granularities": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
    "stream": _BOOL, "cache": _BOOL, "diarize": _BOOL, "keyterms": _STR_LIST, **_ROUTING,
    "include": {"type": "array", "items": {"type": "string", "enum": ["logprobs"]}},
    "chunking_strategy": {"anyOf": [{"type": "string", "enum": ["auto"]}, {
        "type": "object", "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["server_vad"]}, "threshold": {"type": "number"},
                       "prefix_padding_ms": {"type": "integer"}, "silence_duration_ms": {"type": "integer"}}}]},
    "known_speaker_names": _STR_LIST, "known_speaker_references": _STR_LIST,
}
TRANSCRIPTION_JSON = {
    "type": "object", "required": ["model", "input_audio"],
    "properties": {**_TRANSCRIBE_FIELDS, "input_audio": {
        "type": "object", "required": ["format"],
        "properties": {"data": {"type": "string", "description": "base64 of the audio file"},
                       "url": {"type": "string", "format": "uri"}, "format": _STR}}},
}
TRANSCRIPTION_FORM = {
    "type": "object", "required": ["file", "model"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   **{k: v for k, v in _TRANSCRIBE_FIELDS.items() if k not in ("provider",)},
                   "provider": {"type": "string", "description": "a JSON object, or provider[...] fields"}},
}
SPEECH_JSON = {
    "type": "object", "required": ["model", "input"],
    "properties": {"model": _STR, "instructions": _STR,
                   # text, or OpenRouter's turns for multi-speaker speech (Gemini TTS: docs/routing.md)
                   "input": {"anyOf": [_STR, {"type": "array", "minItems": 1, "items": {
                       "type": "object", "required": ["text"], "additionalProperties": False,
                       "properties": {"text": _STR, "voice": _STR, "instructions": _STR}}}]},
                   "voice": {"anyOf": [_STR, {"type": "object", "required": ["id"], "properties": {"id": _STR}}]},
                   "response_format": {"type": "string", "enum": sorted(SPEECH_FORMATS)},
                   "speed": {"type": "number", "minimum": 0.25, "maximum": 4},
                   "stream_format": {"type": "string", "enum": ["audio", "sse"]},
                   # each word's start and end with the audio (a JSON envelope, or speech.timestamps.delta events)
                   "timestamps": {"type": "string", "enum": ["word", "none"]},
                   "timestamp_granularities": {"type": "array", "items": {"type": "string", "enum": ["word"]}},
                   **_ROUTING},
}
# POST /chat/completions (api/chat.py): OpenAI's chat request with audio parts, plus OpenRouter's routing fields
_CHAT_PART = {"anyOf": [
    {"type": "object", "required": ["type", "text"],
     "properties": {"type": {"type": "string", "enum": ["text"]}, "text": _STR}},
    {"type": "object", "required": ["type", "input_audio"],
     "properties": {"type": {"type": "string", "enum": ["input_audio"]}, "input_audio": {
         "type": "object", "required": ["data", "format"],
         "properties": {"data": {"type": "string", "description": "base64 of the audio (a data: URI prefix is "
                                                                   "stripped; the bytes are sniffed)"},
                        "format": {"type": "string", "enum": list(CHAT_INPUT_FORMATS)}}}}},
    {"type": "object", "required": ["type"], "properties": {"type": _STR},
     "description": "other part types (image_url, file, ...) are relayed to upstreams that take them"},
]}
_CHAT_MESSAGE = {
    "type": "object", "required": ["role"],
    "properties": {"role": {"type": "string", "enum": list(ROLES)},
                   "content": {"anyOf": [_STR, {"type": "array", "items": _CHAT_PART}, {"type": "null"}]},
                   "name": _STR,
                   "audio": {"type": "object", "required": ["id"], "properties": {"id": _STR},
                             "description": "an assistant turn: an earlier spoken answer, by its audio id"},
                   "tool_calls": {"type": "array", "items": {"type": "object"}}, "tool_call_id": _STR},
}
_PENALTY = {"type": "number", "minimum": -2, "maximum": 2}
CHAT_JSON = {
    "type": "object", "required": ["model", "messages"],
    "properties": {
        "model": _STR, "messages": {"type": "array", "minItems": 1, "items": _CHAT_MESSAGE},
        "modalities": {"type": "array", "items": {"type": "string", "enum": ["text", "audio"]}},
        "audio": {"type": "object", "required": ["voice", "format"],
                  "properties": {"voice": _STR, "format": {"type": "string", "enum": list(CHAT_OUTPUT_FORMATS)}},
                  "description": 'the spoken answer, with modalities ["text", "audio"]'},
        "stream": _BOOL, "stream_options": {"type": "object", "properties": {"include_usage": _BOOL}},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_tokens": {"type": "integer", "minimum": 1}, "max_completion_tokens": {"type": "integer", "minimum": 1},
        "stop": {"anyOf": [_STR, {"type": "array", "items": _STR, "maxItems": 4}]}, "seed": {"type": "integer"},
        "frequency_penalty": _PENALTY, "presence_penalty": _PENALTY, "n": {"type": "integer", "enum": [1]},
        "metadata": {"type": "object"}, "cache": _BOOL, **_ROUTING,
    },
}
_KEY_FIELDS = {
    "name": {"type": "string", "maxLength": 200}, "limit": {"type": ["number", "null"], "minimum": 0},
    "limit_reset": {"type": ["string", "null"], "enum": ["daily", "weekly", "monthly", None]},
    "expires_at": {"type": ["string", "null"], "format": "date-time"}, "include_byok_in_limit": _BOOL,
    "rate_limit_rpm": {"type": ["integer", "null"], "minimum": 1},
    "max_concurrency": {"type": ["integer", "null"], "minimum": 1},
}
KEY_CREATE = {"type": "object", "required": ["name"], "properties": {**_KEY_FIELDS, "is_management_key": _BOOL}}
KEY_UPDATE = {"type": "object", "properties": {**_KEY_FIELDS, "disabled": _BOOL}}
_BYOK_FIELDS = {"key": {"type": "string", "maxLength": 8192}, "name": _STR, "disabled": _BOOL, "is_fallback": _BOOL,
                "allowed_api_key_hashes": _NULLABLE_STR_LIST, "allowed_models": _NULLABLE_STR_LIST}
BYOK_CREATE = {"type": "object", "required": ["provider", "key"], "properties": {"provider": _STR, **_BYOK_FIELDS}}
BYOK_UPDATE = {"type": "object", "properties": _BYOK_FIELDS}

OPENROUTER_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "integer"}, "message": _STR,
                                            "metadata": {"type": ["object", "null"]}}}},
}
OPENAI_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"],
                             "additionalProperties": False,
                             "properties": {"message": _STR, "type": _STR, "param": {"type": ["string", "null"]},
                                            "code": {"type": ["string", "integer", "null"]}}}},
}

_QUERY: dict[str, list[tuple[str, dict[str, Any], bool]]] = {  # path -> (name, schema, required)
    "/api/v1/generation": [("id", {"type": "string", "maxLength": 64}, True)],
    "/api/v1/generations": [("limit", {"type": "integer", "minimum": 1, "maximum": 100}, False)],
    "/api/v1/activity": [("date", {"type": "string", "format": "date"}, False), ("api_key_hash", _STR, False)],
    "/api/v1/keys": [("include_disabled", _BOOL, False), ("include_expired", _BOOL, False),
                     ("offset", {"type": "integer", "minimum": 0}, False)],
    "/api/v1/byok": [("provider", _STR, False), ("offset", {"type": "integer", "minimum": 0}, False),
                     ("limit", {"type": "integer", "minimum": 1, "maximum": 100}, False)],
    "/api/v1/models": [("output_modalities", _STR, False), ("input_modalities", _STR, False)],
    "/v1/models": [("output_modalities", _STR, False), ("input_modalities", _STR, False)],
}


def _bodies(path: str, method: str) -> dict[str, Any] | None:
    if path.endswith(("/audio/transcriptions", "/audio/translations")) and method == "post":
        return {"application/json": {"schema": TRANSCRIPTION_JSON},
                "multipart/form-data": {"schema": TRANSCRIPTION_FORM}}
    if path.endswith("/audio/speech") and method == "post":
        return {"application/json": {"schema": SPEECH_JSON}}
    if path.endswith("/chat/completions") and method == "post":
        return {"application/json": {"schema": CHAT_JSON}}
    if path == "/api/v1/keys" and method == "post":
        return {"application/json": {"schema": KEY_CREATE}}
    if path == "/api/v1/keys/{key_hash}" and method == "patch":
        return {"application/json": {"schema": KEY_UPDATE}}
    if path == "/api/v1/byok" and method == "post":
        return {"application/json": {"schema": BYOK_CREATE}}
    if path == "/api/v1/byok/{byok_id}" and method == "patch":
        return {"application/json": {"schema": BYOK_UPDATE}}
    return None


def describe(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the bodies, query parameters and error envelopes to FastAPI's schema (in place)."""
    for path, ops in schema.get("paths", {}).items():
        envelope = OPENAI_ERROR if path.startswith("/v1/") else OPENROUTER_ERROR
        for method, op in ops.items():
            content = _bodies(path, method)
            if content is not None:
                op["requestBody"] = {"required": True, "content": content}
            params = op.setdefault("parameters", [])
            for name, s, required in _QUERY.get(path, []) if method == "get" else []:
                params.append({"name": name, "in": "query", "required": required, "schema": s})
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's validation error: the handlers answer 400 in the envelope
            if method == "post" and path.endswith(("/keys", "/byok")):
                responses["201"] = responses.pop("200", {"description": "created"})
            if path.startswith(("/api/", "/v1/")):
                responses["default"] = {"description": "an error, in this dialect's envelope",
                                        "content": {"application/json": {"schema": envelope}}}
    return schema


def install(app: FastAPI) -> None:
    """Serve the completed schema at app.openapi_url (built once, on first use)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
