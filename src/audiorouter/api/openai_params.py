"""OpenAI audio parameters beyond the basics, read from a dialect body (JSON, or a form already turned into
the object it stands for by parsing.form_fields): `include`, `chunking_strategy`, `known_speaker_names` /
`known_speaker_references` (transcription), voice objects and OpenRouter's multi-speaker `input` turns
(speech; openrouter SDK 1.3.84 components.SpeechTurn {text, voice?, instructions?}). Shapes as the openai
Python SDK 3.52 types them (audio.transcription_create_params, audio.speech_create_params). Every problem is a
400 naming the field."""
from __future__ import annotations

from typing import Any

from ..core.errors import InvalidRequest
from ..core.types import SpeechTurn, TranscriptionRequest

INCLUDE = ("logprobs",)
VAD_FIELDS = {"type", "prefix_padding_ms", "silence_duration_ms", "threshold"}
MAX_KNOWN_SPEAKERS = 4  # OpenAI: "Up to 4 speakers are supported"


def _strings(v: Any, name: str) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise InvalidRequest(f"{name}: expected a list of strings", param=name)
    for i, x in enumerate(v):
        if not isinstance(x, str) or not x.strip():
            raise InvalidRequest(f"{name}[{i}]: expected a non-empty string", param=f"{name}[{i}]")
    return v


def _number(v: Any, name: str, lo: float, hi: float, integer: bool = False) -> float | int:
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise InvalidRequest(f"{name}: expected a number", param=name) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi \
            or (integer and not float(v).is_integer()):
        kind = "an integer" if integer else "a number"
        raise InvalidRequest(f"{name}: expected {kind} from {lo:g} to {hi:g}", param=name)
    return int(v) if integer else float(v)


def chunking_strategy(v: Any) -> str | dict[str, Any] | None:
    """"auto", or {"type": "server_vad", prefix_padding_ms?, silence_duration_ms?, threshold?} (numbers may
    come as form strings); None when absent."""
    name = "chunking_strategy"
    if v is None:
        return None
    if isinstance(v, str):
        if v.strip() == "auto":
            return "auto"
        if v.strip().startswith("{"):
            import orjson
            try:
                v = orjson.loads(v)
            except orjson.JSONDecodeError:
                raise InvalidRequest(f"{name}: not valid JSON", param=name) from None
        else:
            raise InvalidRequest(f"{name}: expected \"auto\" or an object with type \"server_vad\"", param=name)
    if not isinstance(v, dict):
        raise InvalidRequest(f"{name}: expected \"auto\" or an object with type \"server_vad\"", param=name)
    for k in v:
        if k not in VAD_FIELDS:
            raise InvalidRequest(f"{name}.{k}: not a field of chunking_strategy (use {', '.join(sorted(VAD_FIELDS))})",
                                 param=f"{name}.{k}")
    if v.get("type") != "server_vad":
        raise InvalidRequest(f"{name}.type: must be \"server_vad\"", param=f"{name}.type")
    out: dict[str, Any] = {"type": "server_vad"}
    if v.get("prefix_padding_ms") is not None:
        out["prefix_padding_ms"] = _number(v["prefix_padding_ms"], f"{name}.prefix_padding_ms", 0, 10000, True)
    if v.get("silence_duration_ms") is not None:
        out["silence_duration_ms"] = _number(v["silence_duration_ms"], f"{name}.silence_duration_ms", 0, 10000, True)
    if v.get("threshold") is not None:
        out["threshold"] = _number(v["threshold"], f"{name}.threshold", 0.0, 1.0)
    return out


def transcription_extras(data: dict[str, Any], req: TranscriptionRequest) -> None:
    """include / chunking_strategy / known speakers from the body into req.extra (absent ones are left out).
    response_format diarized_json asks for diarization (req.extra["diarize"]). Logprobs travel only in the
    json answer and in the streamed events (OpenAI: "only works with response_format set to json"): asked
    with another format they are dropped and named in req.extra["ignored_params"] (X-Ignored-Parameters),
    or a 400 under provider.require_parameters."""
    if req.response_format == "diarized_json":
        req.extra["diarize"] = True
    inc = _strings(data.get("include"), "include")
    if inc:
        for i, x in enumerate(inc):
            if x not in INCLUDE:
                raise InvalidRequest(f"include[{i}]: {x[:40]!r} is not one of {', '.join(INCLUDE)}",
                                     param=f"include[{i}]")
        if "logprobs" in inc and req.response_format != "json" and not req.extra.get("stream"):
            if req.provider.require_parameters:
                raise InvalidRequest(f"include: logprobs come back only with response_format json (or stream=true); "
                                     f"{req.response_format} cannot carry them", param="include",
                                     code="unsupported_parameter",
                                     metadata={"parameter": "include", "response_format": req.response_format})
            req.extra.setdefault("ignored_params", []).append("include")
        else:
            req.extra["include"] = sorted(set(inc))
    cs = chunking_strategy(data.get("chunking_strategy"))
    if cs is not None:
        req.extra["chunking_strategy"] = cs
    names = _strings(data.get("known_speaker_names"), "known_speaker_names")
    refs = _strings(data.get("known_speaker_references"), "known_speaker_references")
    if names or refs:
        names, refs = names or [], refs or []
        if len(names) != len(refs):
            raise InvalidRequest("known_speaker_references: give one reference per name in known_speaker_names "
                                 f"({len(names)} names, {len(refs)} references)", param="known_speaker_references")
        if len(names) > MAX_KNOWN_SPEAKERS:
            raise InvalidRequest(f"known_speaker_names: at most {MAX_KNOWN_SPEAKERS} speakers",
                                 param="known_speaker_names")
        for i, r in enumerate(refs):
            if not r.startswith("data:"):
                raise InvalidRequest(f"known_speaker_references[{i}]: expected a data: URL of 2 to 10 s of audio",
                                     param=f"known_speaker_references[{i}]")
        req.extra["known_speaker_names"] = names
        req.extra["known_speaker_references"] = refs


def voice(v: Any) -> tuple[str | None, bool]:
    """(voice, is_object): a voice name, or OpenAI's custom-voice object {"id": "voice_..."} (the provider's own
    voice id, passed on as it is)."""
    if v is None:
        return None, False
    if isinstance(v, dict):
        extra = [k for k in v if k != "id"]
        if extra:
            raise InvalidRequest(f"voice.{extra[0]}: a voice object has only an id", param=f"voice.{extra[0]}")
        vid = v.get("id")
        if not isinstance(vid, str) or not vid.strip():
            raise InvalidRequest("voice.id: expected a non-empty string", param="voice.id")
        return vid.strip(), True
    if not isinstance(v, str):
        raise InvalidRequest("voice: expected a voice name or an object {\"id\": ...}", param="voice")
    return v.strip() or None, False


TURN_FIELDS = ("text", "voice", "instructions")


def speech_turns(v: list[Any], voice: str | None) -> tuple[str, list[SpeechTurn] | None, str | None]:
    """`input` given as turns [{text, voice?, instructions?}]: (the text to speak, the turns, the voice).
    Turns all in one voice and without their own instructions are plain input in that voice (turns None), so
    any engine can speak them; otherwise the turns stay, for the engines that speak dialogue (Gemini TTS)."""
    if not v:
        raise InvalidRequest("input: a list of turns must not be empty", param="input")
    turns: list[SpeechTurn] = []
    for i, t in enumerate(v):
        if not isinstance(t, dict):
            raise InvalidRequest(f"input[{i}]: expected a turn {{text, voice?, instructions?}}", param=f"input[{i}]")
        for k in t:
            if k not in TURN_FIELDS:
                raise InvalidRequest(f"input[{i}].{k}: not a field of a turn (use {', '.join(TURN_FIELDS)})",
                                     param=f"input[{i}].{k}")
        fields: dict[str, str | None] = {}
        for k in TURN_FIELDS:
            x = t.get(k)
            if x is not None and (not isinstance(x, str) or not x.strip()):
                raise InvalidRequest(f"input[{i}].{k}: expected a non-empty string", param=f"input[{i}].{k}")
            fields[k] = x.strip() if isinstance(x, str) and k != "text" else x
        if fields["text"] is None:
            raise InvalidRequest(f"input[{i}].text: required field is missing", param=f"input[{i}].text")
        turns.append(SpeechTurn(str(fields["text"]), fields["voice"], fields["instructions"]))
    text = "\n".join(t.text for t in turns)
    voices = list(dict.fromkeys(t.voice or voice for t in turns))
    if len(voices) == 1 and not any(t.instructions for t in turns):
        return text, None, voices[0]
    return text, turns, voice
