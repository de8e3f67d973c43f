"""Chat with audio, as one use case: audio questions in, spoken answers out, whole or streamed, on any chat
provider or on the offline voice-chat cascade.

    job = ChatJob(router, req, settings, memory=memory, namespace=key_hash)
    await job.prepare()          # every 4xx: audio parts decoded and measured, audio ids recalled, plan made
    result = await job.run()     # ChatResult(reply, usage, route, audio_id, expires_at)
    # or, streamed: deltas = await job.open_stream(); async for d in deltas: ...  (job.result when done)

Providers answer in ChatReply / ChatDelta (core/chat.py). An upstream that speaks (OpenAI's audio models)
sends its own audio; a cascade endpoint (catalog `cascade:`, e.g. local/voice-chat) transcribes every audio part
with its transcription model, asks its chat model in text, and speaks the answer with its speech model, sentence
by sentence: when streamed, the first sentence is synthesized and sent while the LLM is still writing the rest.

Spoken answers get a gateway id (`audio_<hex>`) kept with their transcript until `expires_at` in the database
(store/chat_audio.py, per caller key, shared by every replica on it): a later turn's assistant message
{"audio": {"id"}} is replaced by that transcript, or by the upstream's own id when the same upstream serves again
and still holds it. An unknown or expired id is a 400 naming messages[i].audio.id.

A cascade transcribes each audio part through the transcription use case (jobs/transcription.py), so the
transcript cache applies with the transcription endpoint's keying rules: the same audio, step model and caller key
give the stored transcript; `Cache-Control: no-cache` / `no-store`, a body `"cache": false` and provider.zdr
act as they do there."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio.decode import decode, wav_layout
from ..audio.encode import StreamEncoder, encode_all
from ..core.chat import PCM16_RATE, ChatDelta, ChatMessage, ChatReply, ChatRequest, ChatUsage, InputAudioPart
from ..core.errors import InvalidRequest, PayloadTooLarge, UpstreamError
from ..core.types import Audio, RoutingPrefs, SpeechRequest, TranscriptionRequest
from ..providers.chat import chat_client
from ..providers.local_chat import VOICE_SYSTEM_PROMPT, LocalChat
from ..providers.local_hibari import trim_silence
from ..routing.chat import AUDIO_IN_TOKENS_PER_S, AUDIO_OUT_TOKENS_PER_S, ChatPlanner, chat_cost
from ..routing.router import Candidate, Route
from ..store.chat_audio import ChatAudioStore, new_audio_id
from .transcription import OFF, TranscriptCache, cache_policy, transcribe

__all__ = ["ChatAudioStore", "ChatJob", "ChatResult"]

MAX_AUDIO_PART_BYTES = int(os.environ.get("AUDIOROUTER_CHAT_MAX_AUDIO_BYTES", str(25 * 1024 * 1024)))
AUDIO_TTL_S = int(os.environ.get("AUDIOROUTER_CHAT_AUDIO_TTL_S", "3600"))
OUT_RATE = PCM16_RATE  # every spoken answer the gateway makes is 24 kHz mono
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_FIRST_CUT = re.compile(r"(?<=[.!?;:,—])\s+|\n+")  # the first piece may also end at a comma or a dash
MIN_FIRST_SENTENCE = 12  # characters: "Yes." alone is spoken with the next sentence
MIN_FIRST_CLAUSE = 20  # characters: a first clause this long is spoken before the rest of its sentence is written
_CLAUSE_MARKS = (",", ";", ":", "—")
# A piece of speech made on its own starts with ~0.3 s and ends with ~0.5 s of silence; where a sentence was cut
# at a clause, or at the start of the answer, that is cut to a comma's pause (or next to nothing)
CLAUSE_TRAIL_S, CLAUSE_LEAD_S, ANSWER_LEAD_S = 0.12, 0.03, 0.05


# ---- results --------------------------------------------------------------------------------------------
@dataclass
class ChatResult:
    reply: ChatReply
    usage: ChatUsage
    route: Route
    audio_id: str | None = None
    expires_at: int | None = None


class _PartAudio:
    """An audio part measured: its duration, format, and its 16 kHz mono float32 samples, decoded only when a
    step needs them (a transcoding or a cascade's transcription) where the duration came from a WAV header."""

    def __init__(self, part: InputAudioPart, duration: float, fmt: str, samples: np.ndarray | None = None,
                 load: Callable[[], np.ndarray] | None = None):
        self.part, self.duration, self.fmt = part, duration, fmt
        self._samples, self._load = samples, load

    @property
    def samples(self) -> np.ndarray:
        if self._samples is None:
            assert self._load is not None
            self._samples = self._load()
        return self._samples


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst or x.size == 0:
        return x.astype(np.float32, copy=False)
    n = max(1, round(x.size * dst / src))
    return np.interp(np.linspace(0, x.size - 1, n), np.arange(x.size), x).astype(np.float32)


def _decode_part(p: InputAudioPart) -> _PartAudio:
    field_name = p.path + ".data"
    a = p.audio
    if len(a.data) > MAX_AUDIO_PART_BYTES:
        raise PayloadTooLarge(f"{field_name}: the audio is {len(a.data)} bytes, over the limit of "
                              f"{MAX_AUDIO_PART_BYTES} bytes per input_audio part", param=field_name,
                              metadata={"limit": MAX_AUDIO_PART_BYTES}, code="audio_too_large")
    if a.declared_format == "pcm16" and a.detected_format is None:
        if len(a.data) % 2:
            raise InvalidRequest(f"{field_name}: pcm16 audio must be whole 16-bit samples (an even number of bytes)",
                                 param=field_name, code="invalid_audio")
        s = np.frombuffer(a.data, "<i2").astype(np.float32) / 32768.0
        s = _resample(s, PCM16_RATE, 16000)
        return _PartAudio(p, s.size / 16000, "pcm16", samples=s)
    if a.detected_format == "wav":
        # a frame-based WAV is measured from its header (the relay to an upstream that takes WAV decodes nothing:
        # a 2.7 s 44.1 kHz question cost 13.5 ms of decoding before)
        layout = wav_layout(a.data)
        if layout is not None and layout.frames > 0:
            return _PartAudio(p, layout.duration, "wav",
                              load=lambda: decode(a.data, a.declared_format, field=field_name).samples)
    d = decode(a.data, a.declared_format, field=field_name)
    return _PartAudio(p, d.duration, a.detected_format or d.source_format or a.declared_format or "wav",
                      samples=d.samples)


class _Sentences:
    """Cuts streamed text into sentences to speak; the first piece as soon as it is long enough, at the end of
    its first clause (comma, dash) when that is MIN_FIRST_CLAUSE characters long, so that the first audio does
    not wait for the LLM to write the whole first sentence."""

    def __init__(self) -> None:
        self.buf = ""
        self.count = 0

    def feed(self, text: str) -> list[str]:
        self.buf += text
        out = []
        pos = 0
        while (m := (_FIRST_CUT if self.count == 0 else _SENTENCE_END).search(self.buf, pos)) is not None:
            head = self.buf[:m.start()].strip()
            least = MIN_FIRST_CLAUSE if head.endswith((",", "—")) else MIN_FIRST_SENTENCE
            if self.count == 0 and len(head) < least and "\n" not in m.group():
                pos = m.end()  # "Yes." alone is not worth a synthesis of its own: wait for the next cut
                continue
            self.buf, pos = self.buf[m.end():], 0
            if head:
                self.count += 1
                out.append(head)
        return out

    def flush(self) -> list[str]:
        head, self.buf = self.buf.strip(), ""
        return [head] if head else []


async def _seamed(chunks: AsyncIterator[np.ndarray], lead: float | None,
                  trail: float | None) -> AsyncIterator[np.ndarray]:
    """One piece's audio with the silence before it cut to `lead` seconds and the silence after it to `trail`
    (None: as made); the last chunk is held back until the piece ends when its end is cut."""
    held: np.ndarray | None = None
    first = True
    async for c in chunks:
        if first and lead is not None:
            c = trim_silence(c, OUT_RATE, lead=lead)
        first = False
        if trail is None:
            yield c
            continue
        if held is not None:
            yield held
        held = c
    if held is not None:
        yield trim_silence(held, OUT_RATE, trail=trail)


def _speakable(text: str) -> str:
    """Markdown and emoji out of what is read aloud (the transcript keeps the text as written)."""
    text = re.sub(r"[*_`#>]+", "", text)
    return re.sub(r"[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]", "", text).strip()


class ChatJob:
    def __init__(self, router: Any, req: ChatRequest, settings: Any, *, memory: ChatAudioStore, namespace: str = "",
                 cache: TranscriptCache | None = None, cache_control: str | None = None):
        """`memory`: the spoken answers' store; `namespace`: the caller key's hash ("" without auth), which scopes
        audio ids and transcript cache entries; `cache` / `cache_control`: the transcript cache and the request's
        Cache-Control header (with the body's `cache` flag, req.extra["cache"], and provider.zdr they choose the
        cache policy of a cascade's transcription step, as on the transcription endpoint)."""
        self.router = router
        self.req = req
        self.settings = settings
        self.memory = memory
        self.namespace = namespace
        self.cache = cache
        self.cache_control = cache_control
        self.planner = ChatPlanner(router, chat_client)
        self.parts: dict[int, _PartAudio] = {}
        self.recalled: dict[str, dict[str, Any]] = {}
        self.cands: list[Candidate] = []
        self.route: Route | None = None
        self.audio_seconds = 0.0
        self.audio_id = new_audio_id() if req.wants_audio else None
        self.result: ChatResult | None = None

    # ---- before anything is sent ---------------------------------------------------------------------------
    async def prepare(self) -> None:
        for i, m in enumerate(self.req.messages):
            if m.audio_id is None:
                continue
            rec, expired = await self.memory.get(m.audio_id, self.namespace)
            name = f"messages[{i}].audio.id"
            if rec is None:
                raise InvalidRequest(f"{name}: {m.audio_id[:60]!r} is not a spoken answer this key received (or it "
                                     "expired long ago); send the transcript as content instead",
                                     param=name, code="audio_not_found")
            if expired:
                raise InvalidRequest(f"{name}: the spoken answer {m.audio_id[:60]!r} expired at {rec.expires_at} "
                                     f"(unix time); send its transcript as content instead", param=name,
                                     metadata={"expires_at": rec.expires_at}, code="audio_expired")
            self.recalled[m.audio_id] = {"transcript": rec.transcript, "upstream": rec.upstream}
        parts = self.req.audio_parts()
        if parts:
            for p in parts:  # size first: a 413 before any decoding
                if len(p.audio.data) > MAX_AUDIO_PART_BYTES:
                    _decode_part(p)
            decoded = await asyncio.to_thread(lambda: [_decode_part(p) for p in parts])
            for d in decoded:
                self.parts[id(d.part)] = d
            self.audio_seconds = sum(d.duration for d in decoded)
        self.cands, self.route = self.planner.plan(self.req, self.audio_seconds)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _audio_bytes(self, part: InputAudioPart, accepted: list[str] | None) -> tuple[bytes, str]:
        d = self.parts[id(part)]
        if accepted is None or d.fmt in accepted:
            return part.audio.data, d.fmt
        return encode_all(d.samples, "wav", 16000), "wav"

    def _recall(self, audio_id: str) -> dict[str, Any]:
        return self.recalled.get(audio_id, {})

    def _usage_audio(self, u: ChatUsage) -> ChatUsage:
        u.audio_seconds_in = self.audio_seconds or None
        return u

    def _text_request(self, transcripts: dict[int, str]) -> ChatRequest:
        """The conversation in text: audio parts replaced by their transcripts, earlier spoken answers by
        theirs."""
        msgs: list[ChatMessage] = []
        for m in self.req.messages:
            if m.audio_id is not None and not m.text():
                msgs.append(ChatMessage(role=m.role, content=self._recall(m.audio_id).get("transcript", "")))
                continue
            if isinstance(m.content, list):
                texts = []
                for p in m.content:
                    if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                        texts.append(p["text"])
                    elif isinstance(p, dict) and isinstance(p.get("input_audio"), InputAudioPart):
                        texts.append(transcripts.get(id(p["input_audio"]), ""))
                msgs.append(ChatMessage(role=m.role, content="\n".join(t for t in texts if t)))
            else:
                msgs.append(ChatMessage(role=m.role, content=m.text()))
        return dataclasses.replace(self.req, messages=msgs, modalities=["text"], voice=None, audio_format=None,
                                   provider=dataclasses.replace(self.req.provider, order=None, only=None, ignore=None),
                                   models=None)

    def _finish_usage(self, cand: Candidate, u: ChatUsage) -> ChatUsage:
        u = self._usage_audio(u)
        u.cost = chat_cost(cand.endpoint.pricing, u)
        return u

    async def _remember(self, transcript: str, upstream_id: str | None, upstream_expires: int | None,
                        provider: str) -> int:
        expires = int(time.time()) + AUDIO_TTL_S
        up: dict[str, Any] = {}
        if upstream_id:
            if upstream_expires:
                expires = min(expires, int(upstream_expires))
            up = {"provider": provider, "id": upstream_id, "expires_at": upstream_expires or expires}
        assert self.audio_id is not None
        if not self.req.provider.zdr:  # zero data retention: nothing of the answer is kept for a later turn
            await self.memory.put(self.audio_id, self.namespace, transcript, expires, up)
        return expires

    # ---- whole answers -------------------------------------------------------------------------------------
    async def run(self) -> ChatResult:
        assert self.route is not None, "prepare() first"

        async def start(cand: Candidate) -> tuple[ChatReply, ChatUsage]:
            if cand.endpoint.cascade is not None:
                return await self._cascade_whole(cand)
            client = chat_client(cand.adapter)
            if isinstance(client, LocalChat):
                reply = await client.complete(self._text_request({}))
            else:
                options = dict(self.req.provider.options.get(cand.endpoint.provider, {}))
                body = client.build(self.req, cand.endpoint, self._audio_bytes, self._recall, stream=False,
                                    options=options)
                reply = await client.complete(self.req, cand.endpoint, body)
            if self.req.wants_audio and reply.audio is None:
                raise UpstreamError(f"{cand.endpoint.provider}: the upstream answered without audio", retryable=True,
                                    metadata={"provider_name": cand.endpoint.provider, "reason": "malformed_reply"})
            return reply, self._finish_usage(cand, reply.usage)

        cand, (reply, usage) = await self.router.run(self.route, self.cands, start)
        reply.usage = usage
        expires = None
        if self.req.wants_audio and reply.audio is not None:
            expires = await self._remember(reply.transcript or reply.text or "", reply.upstream_audio_id,
                                           reply.upstream_expires_at, cand.endpoint.provider)
        self.result = ChatResult(reply, usage, self.route, self.audio_id, expires)
        return self.result

    # ---- the cascade ---------------------------------------------------------------------------------------
    def _step_prefs(self) -> RoutingPrefs:
        """The routing preferences a cascade's transcription and speech steps inherit: the privacy ones (a
        zero-data-retention request sends its audio and text to no step that keeps them)."""
        p = self.req.provider
        return RoutingPrefs(zdr=p.zdr, data_collection=p.data_collection)

    async def _transcribe_parts(self, model_id: str,
                                options: dict[str, dict[str, Any]] | None = None) -> tuple[dict[int, str], float]:
        """Each audio part through the transcription use case (jobs/transcription.py): its routing, and the
        transcript cache with the transcription endpoint's keys and policy. Raw pcm16 (24 kHz) goes as the 16 kHz
        s16le the transcription endpoint calls "pcm". `options`: the cascade's provider options for this step."""
        out: dict[int, str] = {}
        cost = 0.0
        prefs = self._step_prefs()
        if options:
            prefs = dataclasses.replace(prefs, options={k: dict(v) for k, v in options.items()})
        for key, d in self.parts.items():
            a = d.part.audio
            if d.fmt == "pcm16":
                pcm = (np.clip(d.samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
                audio = Audio(pcm, declared_format="pcm", detected_format="pcm")
            else:
                audio = Audio(a.data, declared_format=a.declared_format, detected_format=a.detected_format)
            treq = TranscriptionRequest(model=model_id, audio=audio, provider=prefs)
            mode = cache_policy(self.cache_control, self.req.extra.get("cache"), treq) if self.cache else OFF
            res, _ = await transcribe(self.router, treq, self.settings, field=d.part.path + ".data", cache=self.cache,
                                      cache_mode=mode, namespace=self.namespace)
            out[key] = res.transcript.text.strip()
            cost += res.usage.cost
        return out, cost

    async def _llm_stream(self, cand: Candidate,
                          treq: ChatRequest) -> tuple[Candidate, ChatDelta | None, AsyncIterator[ChatDelta]]:
        """The cascade's chat model, streamed: planned and run like any chat request (fallbacks, retries),
        committed once its first delta arrived."""
        casc = cand.endpoint.cascade
        assert casc is not None
        treq = dataclasses.replace(treq, model=casc.chat, stream=True)
        cands, route = self.planner.plan(treq, 0.0)
        system = casc.system_prompt or VOICE_SYSTEM_PROMPT

        async def start(c: Candidate):
            client = chat_client(c.adapter)
            if isinstance(client, LocalChat):
                it = await client.stream(treq, system)
            else:
                sreq = treq
                if not any(m.role in ("system", "developer") for m in treq.messages):
                    sreq = dataclasses.replace(treq, messages=[ChatMessage("system", system), *treq.messages])
                body = client.build(sreq, c.endpoint, self._audio_bytes, self._recall, stream=True, options={})
                body.pop("modalities", None)
                body.pop("audio", None)
                it = await client.stream(sreq, c.endpoint, body)
            try:
                first = await anext(it)
            except StopAsyncIteration:
                first = None
            return it, first

        c, (it, first) = await self.router.run(route, cands, start)
        return c, first, it

    async def _speak(self, model_id: str, text: str, voice: str | None) -> tuple[AsyncIterator[np.ndarray], Any]:
        """One sentence through the speech model, as 24 kHz float32 chunks."""
        sreq = SpeechRequest(model=model_id, input=text, voice=voice, response_format="pcm",
                             provider=self._step_prefs())
        res = await self.router.speak(sreq)
        stream = res.stream

        async def chunks() -> AsyncIterator[np.ndarray]:
            async for c in res.chunks():
                if c is None:
                    continue
                if stream.encoding == "f32":
                    yield _resample(np.asarray(c, np.float32), stream.rate, OUT_RATE)
                elif stream.encoding == "pcm":
                    b = bytes(c)
                    yield _resample(np.frombuffer(b[: len(b) - len(b) % 2], "<i2").astype(np.float32) / 32768.0,
                                    stream.rate or OUT_RATE, OUT_RATE)
                else:
                    raise UpstreamError(f"{model_id}: the speech step answered {stream.encoding}, not raw audio",
                                        retryable=False)
        return chunks(), res

    def _voice(self, cand: Candidate) -> str | None:
        return None if cand.endpoint.substitute else self.req.voice

    async def _cascade_whole(self, cand: Candidate) -> tuple[ChatReply, ChatUsage]:
        deltas = await self._cascade_stream(cand)
        reply = ChatReply(text="")
        texts: list[str] = []
        audio = bytearray()
        usage = ChatUsage()
        async for d in deltas:
            if d.text:
                texts.append(d.text)
            if d.transcript:
                texts.append(d.transcript)
            if d.audio:
                audio += d.audio
            if d.usage is not None:
                usage = d.usage
            if d.finish_reason:
                reply.finish_reason = d.finish_reason
        text = "".join(texts).strip()
        if self.req.wants_audio:
            reply.text = None
            reply.transcript = text
            reply.audio = self._fix_wav(bytes(audio))
        else:
            reply.text = text
        return reply, usage

    def _fix_wav(self, data: bytes) -> bytes:
        """A whole wav answer gets real sizes in its header (streamed ones say 'unknown')."""
        if self.req.audio_format == "wav" and len(data) >= 44 and data[:4] == b"RIFF":
            n = len(data) - 44
            return data[:4] + (36 + n).to_bytes(4, "little") + data[8:40] + n.to_bytes(4, "little") + data[44:]
        return data

    async def _cascade_stream(self, cand: Candidate) -> AsyncIterator[ChatDelta]:
        """STT -> LLM -> TTS. Returns once the LLM's first delta is in (the router's commit point); the deltas
        then carry text (text-only answers) or audio with its transcript, sentence by sentence, and a last
        delta with usage and finish_reason."""
        casc = cand.endpoint.cascade
        assert casc is not None
        transcripts, stt_cost = await self._transcribe_parts(casc.transcription, casc.transcription_options)
        treq = self._text_request(transcripts)
        llm_cand, first, it = await self._llm_stream(cand, treq)
        want_audio = self.req.wants_audio
        fmt = self.req.audio_format or "wav"
        voice = self._voice(cand)
        audio_in = math.ceil(self.audio_seconds * AUDIO_IN_TOKENS_PER_S)

        async def gen() -> AsyncIterator[ChatDelta]:
            llm_usage = ChatUsage()
            finish = "stop"
            out_seconds = 0.0
            tts_cost = 0.0

            async def llm_text() -> AsyncIterator[str]:
                """The LLM's text pieces (its first delta included); keeps its usage and finish reason."""
                nonlocal llm_usage, finish
                async def deltas() -> AsyncIterator[ChatDelta]:
                    if first is not None:
                        yield first
                    async for x in it:
                        yield x
                async for d in deltas():
                    if d.usage is not None:
                        llm_usage = d.usage
                    if d.finish_reason:
                        finish = d.finish_reason
                    if d.text:
                        yield d.text

            if not want_audio:
                async for text in llm_text():
                    yield ChatDelta(text=text)
            else:
                sentences: asyncio.Queue = asyncio.Queue()

                async def pump() -> None:
                    cut = _Sentences()
                    try:
                        async for text in llm_text():
                            for s in cut.feed(text):
                                sentences.put_nowait(s)
                        for s in cut.flush():
                            sentences.put_nowait(s)
                        sentences.put_nowait(None)
                    except BaseException as e:  # noqa: BLE001 - handed to the consumer
                        sentences.put_nowait(e)
                        if isinstance(e, asyncio.CancelledError):
                            raise

                task = asyncio.create_task(pump())
                enc = StreamEncoder("pcm" if fmt == "pcm16" else fmt, OUT_RATE)
                spoken_any = False
                lead: float | None = ANSWER_LEAD_S
                try:
                    while True:
                        s = await sentences.get()
                        if s is None:
                            break
                        if isinstance(s, BaseException):
                            raise s
                        words = _speakable(s)
                        transcript = (" " if spoken_any else "") + s
                        if not words:
                            yield ChatDelta(transcript=transcript)
                            spoken_any = True
                            continue
                        chunks, res = await self._speak(casc.speech, words, voice)
                        first_piece = True
                        clause = s.endswith(_CLAUSE_MARKS)
                        async for c in _seamed(chunks, lead, CLAUSE_TRAIL_S if clause else None):
                            out_seconds += c.size / OUT_RATE
                            b = enc.feed(c)
                            if b:
                                yield ChatDelta(audio=b, transcript=transcript if first_piece else None)
                                first_piece = False
                        if first_piece:
                            yield ChatDelta(transcript=transcript)
                        tts_cost += res.usage.cost
                        spoken_any = True
                        lead = CLAUSE_LEAD_S if clause else None
                    tail = enc.close()
                    if tail:
                        yield ChatDelta(audio=tail)
                finally:
                    if not task.done():
                        task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                    with contextlib.suppress(BaseException):
                        await it.aclose()  # type: ignore[attr-defined]  # the LLM stops writing (an async generator)
            audio_out = math.ceil(out_seconds * AUDIO_OUT_TOKENS_PER_S) if want_audio else 0
            u = ChatUsage(prompt_tokens=llm_usage.prompt_tokens + audio_in, prompt_audio_tokens=audio_in,
                          completion_tokens=llm_usage.completion_tokens + audio_out, completion_audio_tokens=audio_out,
                          cached_tokens=llm_usage.cached_tokens, audio_seconds_in=self.audio_seconds or None)
            llm_cost = chat_cost(llm_cand.endpoint.pricing, llm_usage)
            u.cost = stt_cost + llm_cost + tts_cost + chat_cost(cand.endpoint.pricing, ChatUsage())
            yield ChatDelta(finish_reason=finish, usage=u)

        return gen()

    # ---- streamed answers ----------------------------------------------------------------------------------
    async def open_stream(self) -> AsyncIterator[ChatDelta]:
        """Start the answer on the first candidate that produces a first delta (retries and fallbacks happen
        before that, never after), then the deltas; the last one carries the usage (cost included) and the
        finish reason. self.result is set when the stream ends."""
        assert self.route is not None, "prepare() first"

        async def start(cand: Candidate):
            if cand.endpoint.cascade is not None:
                it = await self._cascade_stream(cand)
            else:
                client = chat_client(cand.adapter)
                if isinstance(client, LocalChat):
                    it = await client.stream(self._text_request({}))
                else:
                    options = dict(self.req.provider.options.get(cand.endpoint.provider, {}))
                    body = client.build(self.req, cand.endpoint, self._audio_bytes, self._recall, stream=True,
                                        options=options)
                    it = await client.stream(self.req, cand.endpoint, body)
            try:
                first = await anext(it)
            except StopAsyncIteration:
                raise UpstreamError(f"{cand.endpoint.provider}: the upstream sent an empty stream", retryable=True,
                                    metadata={"provider_name": cand.endpoint.provider}) from None
            return it, first

        cand, (it, first) = await self.router.run(self.route, self.cands, start)
        return self._relay(cand, it, first)

    async def _relay(self, cand: Candidate, it: AsyncIterator[ChatDelta], first: ChatDelta) -> AsyncIterator[ChatDelta]:
        usage: ChatUsage | None = None
        finish = "stop"
        transcript: list[str] = []
        text: list[str] = []
        up_id: str | None = None
        up_exp: int | None = None
        cascade = cand.endpoint.cascade is not None

        async def source():
            yield first
            async for d in it:
                yield d

        async for d in source():
            if d.usage is not None:
                usage = d.usage
            if d.finish_reason:
                finish = d.finish_reason
            if d.transcript:
                transcript.append(d.transcript)
            if d.text:
                text.append(d.text)
            up_id = d.upstream_audio_id or up_id
            up_exp = d.upstream_expires_at or up_exp
            if d.text or d.audio or d.transcript or d.extra:
                yield ChatDelta(text=d.text, audio=d.audio, transcript=d.transcript, extra=d.extra)
        if usage is None:
            usage = ChatUsage()
        if not cascade:
            usage = self._finish_usage(cand, usage)
        else:
            usage.audio_seconds_in = self.audio_seconds or None
        expires = None
        if self.req.wants_audio:
            expires = await self._remember("".join(transcript).strip(), up_id, up_exp, cand.endpoint.provider)
        reply = ChatReply(text="".join(text) or None, transcript="".join(transcript) or None, finish_reason=finish,
                          usage=usage)
        self.result = ChatResult(reply, usage, self.route, self.audio_id, expires)  # type: ignore[arg-type]
        yield ChatDelta(finish_reason=finish, usage=usage, upstream_expires_at=expires)
