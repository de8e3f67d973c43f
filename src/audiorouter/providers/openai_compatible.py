"""A shared base for upstreams that speak OpenAI's audio API, and the generic `openai_compatible` adapter
(vLLM, Speaches, LocalAI, another audiorouter node...).

Wire protocol (https://platform.openai.com/docs/api-reference/audio):
- POST {base}/audio/transcriptions and {base}/audio/translations: multipart/form-data with `file` (the
  filename's extension names the container), `model`, `language` (transcriptions only), `prompt`,
  `temperature`, `response_format` and repeated `timestamp_granularities[]`. We always ask for JSON
  (`verbose_json` where the endpoint supports it, to get language, duration, segments and words) and render
  text/srt/vtt ourselves from the neutral transcript.
- POST {base}/audio/speech: JSON {model, input, voice, response_format, speed, instructions}; the answer is
  the audio bytes, streamed. Raw `pcm` is 16-bit little-endian mono at 24 kHz.
- Streaming transcription (gpt-4o-transcribe and others with `stream=true`): the same POST with
  `stream=true` answers text/event-stream events `transcript.text.delta` {delta} ... `transcript.text.done`
  {text, usage}; `transcribe_stream` passes the deltas on as they arrive.
- Auth: `Authorization: Bearer <key>`. Errors: {"error": {"message", "type", "param", "code"}}.

Subclasses are short declarations: paths, which response formats the upstream takes, whether a key is
required, and overrides of the few methods whose wire shape differs."""
from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import orjson

from ..audio import convert
from ..core import languages
from ..core.audio import PreparedAudio, SpeechStream
from ..core.errors import GatewayError, InvalidRequest, UpstreamError
from ..core.types import Segment, SpeechRequest, Transcript, TranscriptionRequest, Word
from .http import HTTPProvider, Response
from .upstream_client import MAX_LINE, LineTooLong

_RATE_PARAM = re.compile(r"rate=(\d+)")


def malformed(provider: str, what: str) -> UpstreamError:
    """An upstream answered 2xx with something we cannot use: retryable, another attempt may be fine."""
    return UpstreamError(f"{provider}: malformed upstream reply ({what})", retryable=True,
                         metadata={"provider_name": provider, "reason": "malformed_reply"})


def _num(d: dict, key: str, provider: str, *, required: bool = False, default: float = 0.0) -> float:
    v = d.get(key)
    if v is None:
        if required:
            raise malformed(provider, f"missing {key}")
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise malformed(provider, f"{key} is not a number")
    return float(v)


def parse_words(items: Any, provider: str) -> list[Word]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise malformed(provider, "words is not a list")
    out = []
    for w in items:
        if not isinstance(w, dict):
            raise malformed(provider, "a word is not an object")
        text = w.get("word", w.get("text"))
        if not isinstance(text, str):
            raise malformed(provider, "a word has no text")
        prob = w.get("probability", w.get("confidence"))
        speaker = w.get("speaker", w.get("speaker_id", w.get("speaker_label")))
        out.append(Word(text.strip(), round(_num(w, "start", provider, required=True), 3),
                        round(_num(w, "end", provider, required=True), 3),
                        float(prob) if isinstance(prob, (int, float)) and not isinstance(prob, bool) else None,
                        str(speaker) if speaker is not None else None))
    return out


def parse_segments(items: Any, provider: str) -> list[Segment]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise malformed(provider, "segments is not a list")
    out = []
    for i, s in enumerate(items):
        if not isinstance(s, dict) or not isinstance(s.get("text"), str):
            raise malformed(provider, "a segment has no text")
        tokens = s.get("tokens") or []
        speaker = s.get("speaker", s.get("speaker_id", s.get("speaker_label")))
        out.append(Segment(
            id=int(s["id"]) if isinstance(s.get("id"), int) else i,
            start=round(_num(s, "start", provider, required=True), 3),
            end=round(_num(s, "end", provider, required=True), 3),
            text=s["text"], seek=int(_num(s, "seek", provider)),
            tokens=[int(t) for t in tokens if isinstance(t, int)] if isinstance(tokens, list) else [],
            temperature=_num(s, "temperature", provider), avg_logprob=_num(s, "avg_logprob", provider),
            compression_ratio=_num(s, "compression_ratio", provider),
            no_speech_prob=_num(s, "no_speech_prob", provider),
            speaker=str(speaker) if speaker is not None else None))
    return out


def attach_words(segments: list[Segment], words: list[Word], text: str) -> list[Segment]:
    """Top-level words (OpenAI's shape) into the segments they fall in; one segment when there are none."""
    if not words:
        return segments
    if not segments:
        return [Segment(id=0, start=words[0].start, end=words[-1].end, text=text, words=list(words))]
    j = 0
    for w in words:
        mid = (w.start + w.end) / 2
        while j + 1 < len(segments) and mid >= segments[j + 1].start:
            j += 1
        segments[j].words.append(w)
    return segments


def parse_openai_transcript(body: Any, task: str, provider: str) -> Transcript:
    if not isinstance(body, dict):
        raise malformed(provider, "the body is not a JSON object")
    text = body.get("text")
    if not isinstance(text, str):
        raise malformed(provider, "no text field")
    segments = attach_words(parse_segments(body.get("segments"), provider),
                            parse_words(body.get("words"), provider), text.strip())
    usage = u if isinstance(u := body.get("usage"), dict) else {}
    tin = usage.get("input_tokens")
    tout = usage.get("output_tokens")
    duration = body.get("duration")
    if duration is None and isinstance(usage.get("seconds"), (int, float)) and usage.get("type") == "duration":
        duration = usage["seconds"]
    return Transcript(
        text=text.strip(), language=languages.code(body.get("language")),
        duration=float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None,
        segments=segments, task=body["task"] if body.get("task") in ("transcribe", "translate") else task,  # type: ignore[arg-type]
        input_tokens=tin if isinstance(tin, int) else None, output_tokens=tout if isinstance(tout, int) else None,
        logprobs=parse_logprobs(body.get("logprobs"), provider))


async def iter_sse_events(lines: AsyncIterator[str], max_event: int = MAX_LINE, *,
                          unended_last: bool = True) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) of each event in a text/event-stream, multi-line data joined with newlines;
    LineTooLong once one event's data passes `max_event` characters. `unended_last`: an event the stream ends
    in without its blank line is given too (False: dropped, as the SSE specification says)."""
    event: str | None = None
    data: list[str] = []
    size = 0
    async for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data, size = None, [], 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
            size += len(value) + 1
            if size > max_event:
                raise LineTooLong(f"an event of the answer passed {max_event} characters")
    if data and unended_last:
        yield event, "\n".join(data)


async def iter_sse_data(lines: AsyncIterator[str], max_event: int = MAX_LINE) -> AsyncIterator[str]:
    """The data of each event in a text/event-stream (iter_sse_events without the names)."""
    async for _, data in iter_sse_events(lines, max_event):
        yield data


def form_value(v: Any) -> Any:
    """A JSON option value as multipart form value(s)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    if isinstance(v, list):
        return [form_value(x) for x in v]
    return json.dumps(v)


def bracket_fields(name: str, v: Any) -> list[tuple[str, str]]:
    """A JSON value as the multipart fields the openai SDKs send for it (qs "brackets" format): a list as
    repeated `name[]`, an object as `name[key]`, nested the same way; scalars as strings, booleans as
    true/false. (OpenAI reads `include[]=logprobs`; a bare `include=["logprobs"]` string is not a list.)"""
    if isinstance(v, dict):
        return [item for k, x in v.items() for item in bracket_fields(f"{name}[{k}]", x)]
    if isinstance(v, list):
        return [item for x in v for item in bracket_fields(f"{name}[]", x)]
    if v is None:
        return []
    return [(name, form_value(v))]


def put_fields(fields: dict[str, Any], items: list[tuple[str, str]]) -> None:
    """Adds (name, value) pairs to an httpx `data` dict, a name given more than once becoming a list."""
    for k, v in items:
        old = fields.get(k)
        if old is None:
            fields[k] = v
        elif isinstance(old, list):
            old.append(v)
        else:
            fields[k] = [old, v]


def parse_logprobs(v: Any, provider: str) -> list[dict[str, Any]] | None:
    """OpenAI's `logprobs`: [{token, logprob, bytes}] (each field optional)."""
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise malformed(provider, "logprobs is not a list of objects")
    out = []
    for x in v:
        item: dict[str, Any] = {}
        if isinstance(x.get("token"), str):
            item["token"] = x["token"]
        lp = x.get("logprob")
        if isinstance(lp, (int, float)) and not isinstance(lp, bool):
            item["logprob"] = float(lp)
        if isinstance(x.get("bytes"), list):
            item["bytes"] = [b for b in x["bytes"] if isinstance(b, (int, float)) and not isinstance(b, bool)]
        out.append(item)
    return out


def pcm_rate(content_type: str, default: int) -> int:
    m = _RATE_PARAM.search(content_type or "")
    return int(m.group(1)) if m else default


class OpenAICompatibleProvider(HTTPProvider):
    """The generic adapter: any server with OpenAI's audio routes at `base_url` (e.g. http://host:8000/v1).
    A key is optional (`api_key` / `api_key_env` in the catalog); naming an env var that is unset makes the
    provider unavailable, since that is a key the operator meant to give."""

    key_required = False
    transcription_path = "/audio/transcriptions"
    translation_path = "/audio/translations"
    speech_path = "/audio/speech"
    # response_format values the upstream accepts (we only ever request json or verbose_json)
    upstream_formats: tuple[str, ...] = ("json", "verbose_json", "text", "srt", "vtt")
    granularity_field = "timestamp_granularities[]"
    speech_pcm_rate = 24000
    default_input_formats: tuple[str, ...] | None = None  # used when the catalog endpoint lists none
    reserved_options = frozenset({"file", "model", "response_format", "stream", "stream_format"})

    # ---- availability, auth, errors ---------------------------------------------------------------
    def available(self) -> bool:
        if not self.base_url:
            return False
        if self.api_key:
            return True
        return not self.key_required and not self.spec.api_key_env

    def headers(self) -> dict[str, str]:
        h = {str(k): str(v) for k, v in (self.spec.options.get("headers") or {}).items()}
        key = self.api_key
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def refine_upstream_error(self, e: GatewayError, resp: Response) -> GatewayError:
        """The upstream's Retry-After travels on to the client."""
        if isinstance(e, UpstreamError) and e.retry_after is not None:
            e.headers.setdefault("Retry-After", str(round(e.retry_after)))
        return e

    def url(self, path: str) -> str:
        return self.base_url + path

    async def post(self, path: str, **kw: Any) -> Response:
        return await self.post_checked(self.url(path), headers=self.headers(), **kw)

    async def open_stream(self, path: str, *, headers: dict[str, str] | None = None, **kw: Any) -> Response:
        """POST and return the response with its body unread (streaming); non-2xx raise here."""
        return await self.open_checked(self.url(path), headers={**self.headers(), **(headers or {})}, **kw)

    def json_body(self, resp: Response) -> Any:
        try:
            return resp.json()
        except (ValueError, UnicodeDecodeError):
            raise malformed(self.slug, f"not JSON: {self.scrub(resp.text, 80)!r}") from None

    def options_for(self, options: dict[str, Any]) -> dict[str, Any]:
        for k in options:
            if k in self.reserved_options:
                raise InvalidRequest(f"provider.options.{self.slug}.{k}: this field is set by the gateway and "
                                     "cannot be passed through", param=f"provider.options.{self.slug}.{k}")
        return options

    # ---- transcription ----------------------------------------------------------------------------
    async def upload(self, audio: PreparedAudio, endpoint) -> convert.Upload:
        formats = endpoint.input_formats if endpoint.input_formats is not None else self.default_input_formats
        return await convert.for_endpoint(audio, formats, endpoint.limits.max_bytes, field="audio",
                                          provider=self.slug)

    def response_format_for(self, endpoint) -> str:
        if endpoint.capabilities.verbose_json and "verbose_json" in self.upstream_formats:
            return "verbose_json"
        return "json"

    def transcription_fields(self, req: TranscriptionRequest, endpoint, options: dict[str, Any]) -> dict[str, Any]:
        caps = endpoint.capabilities
        fmt = self.response_format_for(endpoint)
        diarize = (bool(req.extra.get("diarize")) and caps.diarization and req.task == "transcribe"
                   and "diarized_json" in self.upstream_formats)
        if diarize:
            fmt = "diarized_json"
        fields: dict[str, Any] = {"model": endpoint.upstream_model, "response_format": fmt}
        if req.language and req.task == "transcribe" and caps.language:
            fields["language"] = req.language
        if req.prompt and caps.prompt:
            fields["prompt"] = req.prompt
        if req.temperature is not None and caps.temperature:
            fields["temperature"] = form_value(req.temperature)
        if fmt == "verbose_json" and req.want_words and caps.word_timestamps and req.task == "transcribe":
            fields[self.granularity_field] = ["word", "segment"]  # (/audio/translations refuses the field)
        if req.task == "transcribe":  # /audio/translations defines none of these
            if "logprobs" in (req.extra.get("include") or ()) and caps.logprobs and fmt == "json":
                fields["include[]"] = ["logprobs"]  # OpenAI: logprobs only with response_format json
            cs = req.extra.get("chunking_strategy")
            if cs is None and diarize and caps.chunking_strategy:
                cs = "auto"  # OpenAI's diarize model requires one over 30 s; auto is its server-side VAD
            if cs is not None and caps.chunking_strategy:
                put_fields(fields, bracket_fields("chunking_strategy", cs))
            if req.extra.get("known_speaker_names") and caps.known_speakers:
                fields["known_speaker_names[]"] = list(req.extra["known_speaker_names"])
                fields["known_speaker_references[]"] = list(req.extra["known_speaker_references"])
        for k, v in self.options_for(options).items():
            put_fields(fields, bracket_fields(k, v))
        return fields

    def parse_transcription(self, resp: Response, req: TranscriptionRequest, endpoint) -> Transcript:
        return parse_openai_transcript(self.json_body(resp), req.task, self.slug)

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                         options: dict[str, Any]) -> Transcript:
        up = await self.upload(audio, endpoint)
        fields = self.transcription_fields(req, endpoint, options)
        path = self.translation_path if req.task == "translate" else self.transcription_path
        resp = await self.post(path, data=fields, files={"file": (up.filename, up.data, up.mime)})
        return self.parse_transcription(resp, req, endpoint)

    async def transcribe_stream(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint,
                                options: dict[str, Any], on_delta: Callable[[str], None]) -> Transcript:
        """POST the audio with stream=true and pass the upstream's text deltas to `on_delta` as they arrive.
        An upstream that answers with plain JSON instead is parsed as a normal transcript."""
        up = await self.upload(audio, endpoint)
        fields = self.transcription_fields(req, endpoint, options)
        fields["response_format"] = "json"
        fields.pop(self.granularity_field, None)
        fields["stream"] = "true"
        resp = await self.open_stream(self.transcription_path, data=fields,
                                      files={"file": (up.filename, up.data, up.mime)},
                                      headers={"Accept": "text/event-stream"})
        ctype = resp.headers.get("content-type", "").lower()
        try:
            if "text/event-stream" not in ctype:
                body = await resp.aread()
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise malformed(self.slug, "neither an event stream nor JSON") from None
                return parse_openai_transcript(parsed, req.task, self.slug)
            parts: list[str] = []
            delta_logprobs: list[dict[str, Any]] = []
            done: dict[str, Any] | None = None
            async for data in iter_sse_data(resp.aiter_lines()):
                if data.strip() == "[DONE]":
                    break
                try:
                    ev = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise malformed(self.slug, "an event is not JSON") from None
                if not isinstance(ev, dict):
                    continue
                kind = ev.get("type")
                if kind == "transcript.text.delta" and isinstance(ev.get("delta"), str):
                    parts.append(ev["delta"])
                    delta_logprobs += parse_logprobs(ev.get("logprobs"), self.slug) or []
                    on_delta(ev["delta"])
                elif kind == "transcript.text.done":
                    done = ev
                    break
                elif kind == "error" or isinstance(ev.get("error"), dict):
                    err = ev.get("error")
                    msg = err.get("message") if isinstance(err, dict) else None
                    msg = msg if isinstance(msg, str) else "stream error"
                    raise UpstreamError(f"{self.slug}: upstream stream failed: {self.scrub(msg, 300)}",
                                        retryable=not parts, metadata={"provider_name": self.slug})
        except httpx.HTTPError as e:
            raise self.transport_error(e) from None
        finally:
            await resp.aclose()
        if done is None:
            raise malformed(self.slug, "the event stream ended without transcript.text.done")
        text = done.get("text")
        text = text if isinstance(text, str) else "".join(parts)
        usage = done.get("usage")
        tin, tout = (usage.get("input_tokens"), usage.get("output_tokens")) if isinstance(usage, dict) else (None, None)
        # include[]=logprobs: the done event's, else the deltas' (OpenAI sends them on both)
        logprobs = parse_logprobs(done.get("logprobs"), self.slug)
        if logprobs is None and delta_logprobs:
            logprobs = delta_logprobs
        return Transcript(text=text.strip(), language=req.language, task=req.task,
                          input_tokens=tin if isinstance(tin, int) else None,
                          output_tokens=tout if isinstance(tout, int) else None, logprobs=logprobs)

    # ---- speech -----------------------------------------------------------------------------------
    @staticmethod
    def native_format(requested: str, output_formats: Iterable[str] | None) -> str:
        """What to ask the upstream for: the requested format when it makes it, else raw PCM (which we
        re-encode as it streams), else whatever it makes (decoded and re-encoded once complete)."""
        outs = list(output_formats or [])
        if not outs or requested in outs:
            return requested
        if "pcm" in outs:
            return "pcm"
        return outs[0]

    def speech_body(self, req: SpeechRequest, endpoint, voice: str, fmt: str,
                    options: dict[str, Any]) -> dict[str, Any]:
        # a custom voice goes on as OpenAI's voice object {"id": ...} (the router admits it only where the
        # endpoint has custom_voices)
        body: dict[str, Any] = {"model": endpoint.upstream_model, "input": req.input,
                                "voice": {"id": voice} if req.voice_object else voice, "response_format": fmt}
        if req.speed != 1.0:
            body["speed"] = req.speed
        if req.instructions and endpoint.capabilities.instructions:
            body["instructions"] = req.instructions
        body.update(self.options_for(options))
        return body

    async def synthesize(self, req: SpeechRequest, endpoint, voice: str, options: dict[str, Any]) -> SpeechStream:
        fmt = self.native_format(req.response_format, endpoint.output_formats)
        resp = await self.open_stream(self.speech_path, json=self.speech_body(req, endpoint, voice, fmt, options))
        ctype = resp.headers.get("content-type", "").lower()
        if ctype.startswith(("application/json", "text/")):
            try:
                text = (await resp.aread()).decode("utf-8", "replace")
            except httpx.HTTPError as e:
                raise self.transport_error(e) from None
            finally:
                await resp.aclose()
            raise malformed(self.slug, f"expected audio, got {ctype or 'no content type'}: {self.scrub(text, 120)!r}")
        chunks = self.drain(resp, empty_error=malformed(self.slug, "empty audio body"))
        return SpeechStream(chunks, fmt, pcm_rate(ctype, self.speech_pcm_rate))
