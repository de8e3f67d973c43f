"""Long-form work on top of the Router: transcription of audio of any length (chunked at silences, chunks
transcribed with bounded concurrency, results stitched), progressive text for streaming responses, the
transcript cache, and speech for text longer than an endpoint accepts (split at sentences, audio joined
into one stream).

Transcription, step by step (TranscriptionJob):
1. prepare(): plan the candidates (bad model or parameters fail here, before any work), look the request
   up in the cache, then decode. Audio that fits the chunk limit takes the ordinary path (whole-file float32,
   one router call). Longer audio is decoded frame by frame to int16 PCM spilled to a temporary file (never
   float32 for the whole file) and cut at silences into chunks that every candidate accepts: at most
   AUDIOROUTER_CHUNK_SECONDS, and within each endpoint's limits.max_seconds / max_bytes.
2. run(): chunks go to Router.transcribe (so fallbacks and attempts work per chunk) `concurrency` at a time.
   Where the endpoint takes prompts (not the local engine: it applies a prompt to every window it decodes),
   chunks run as contiguous stripes: inside a stripe in order, each with the previous chunk's text as its
   prompt; stripes in parallel. Otherwise from one queue in file order. The first chunk runs first when no
   language was given, and its detected language is pinned for the rest, as Whisper does for one file.
   Segment and word timestamps are shifted by the chunk's offset, clamped to it and kept monotonic; usage
   and cost are the sums over chunks.
3. With a text sink (stream=true), text is emitted in order as it is final: per segment from the local
   engine, per upstream SSE delta from providers that stream, per chunk otherwise."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import threading
from typing import Any, AsyncIterator, Callable

import numpy as np

from ..audio.chunking import (WAV_BYTES_PER_SECOND, Chunk, PcmSpool, decode_to_spool, plan_chunks,
                              probe_duration, s16_to_float)
from ..audio.decode import MAX_SECONDS, AudioTooLong, wav_layout
from ..audio.sniff import agrees
from ..cache import OFF, REFRESH, USE, TranscriptCache, audio_digest, cache_key
from ..core.errors import GatewayError, Overloaded, UpstreamError
from ..core.text import pack
from ..core.types import Audio, Segment, SpeechRequest, Transcript, TranscriptionRequest, Usage, Word
from ..providers.base import PreparedAudio, SpeechStream
from .pricing import estimate_text_tokens, speech_cost, transcription_cost
from .router import Candidate, Route, Router, SpeechResult, TranscriptionResult

log = logging.getLogger("audiorouter.longform")

NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "km", "my", "yue", "bo"}
PROMPT_CONTEXT_CHARS = 600
OVERLOAD_RETRIES = 4
MIN_STRIPE = 3  # chunks per stripe at least, when chunks carry the previous one's text as prompt

TextSink = Callable[[str], None]


# ---- planning ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ChunkPlan:
    candidates: list[Candidate]
    ignored: list[str]
    limit_s: float       # the longest chunk every candidate accepts (inf: no chunking needed)
    concurrency: int
    context: bool        # pass the previous chunk's text as prompt


def chunk_plan(router: Router, req: TranscriptionRequest, settings: Any) -> ChunkPlan:
    cands, route = router.plan(req, "transcription")
    limit = float(getattr(settings, "chunk_seconds", 0) or 0) or math.inf
    for c in cands:
        lim = c.endpoint.limits
        if lim.max_seconds:
            limit = min(limit, lim.max_seconds * 0.95)
        if lim.max_bytes:  # chunks are re-encoded (FLAC, else WAV): the WAV size is the worst case
            limit = min(limit, max(5.0, (lim.max_bytes * 0.95 - 4096) / WAV_BYTES_PER_SECOND))
    first = cands[0]
    local = first.endpoint.provider == "local"
    if local and getattr(settings, "local_chunk_seconds", 0) and getattr(settings, "chunk_seconds", 0):
        limit = min(limit, float(settings.local_chunk_seconds))
    conc = int(getattr(settings, "chunk_concurrency", 0) or 0)
    if conc <= 0:
        conc = max(1, int(getattr(settings, "workers", 2))) if local else 4
    # The local engine applies a prompt to every 30 s window it decodes (it batches windows, it does not
    # chain them), so a chunk's text as prompt would bias the whole next chunk: measured worse, not better.
    context = bool(getattr(settings, "chunk_context", True)) and first.endpoint.capabilities.prompt and not local
    return ChunkPlan(cands, route.ignored_params, limit, conc, context)


def chunking_possible(settings: Any, catalog: Any) -> bool:
    """Whether any transcription could be cut into chunks (so the VAD is worth loading at start-up): a chunk
    limit is set, or some transcription endpoint has a length or size limit (see chunk_plan)."""
    if float(getattr(settings, "chunk_seconds", 0) or 0) > 0:
        return True
    return any(e.limits.max_seconds or e.limits.max_bytes
               for m in catalog.by_kind("transcription") for e in m.endpoints)


def _language_code(v: str | None) -> str | None:
    if isinstance(v, str) and re.fullmatch(r"[a-z]{2,3}", v):
        return v
    return None


def compose_prompt(user_prompt: str | None, previous_text: str | None) -> str | None:
    """The user's prompt (vocabulary, style) followed by the tail of the previous chunk's text."""
    tail = None
    if previous_text and previous_text.strip():
        t = previous_text.strip()
        if len(t) > PROMPT_CONTEXT_CHARS:
            t = t[-PROMPT_CONTEXT_CHARS:]
            sp = t.find(" ")
            if 0 <= sp < 40:
                t = t[sp + 1:]
        tail = t
    if user_prompt and tail:
        return f"{user_prompt.strip()} {tail}"
    return user_prompt or tail


# ---- progressive text ------------------------------------------------------------------------------------
class SegmentHook:
    """Passed to Router.transcribe as `progress`: the local engine calls it from a worker thread with the
    time reached, and `on_segment` with each finished segment; text goes to the sink on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: TextSink):
        self.loop = loop
        self.sink = sink
        self.sent = ""

    def __call__(self, t: float) -> None:
        return None

    def on_segment(self, seg: Segment) -> None:
        self.loop.call_soon_threadsafe(self.text, seg.text)

    def text(self, delta: str) -> None:
        if not self.sent:
            delta = delta.lstrip()
        if delta:
            self.sent += delta
            self.sink(delta)

    def finish(self, final: str) -> None:
        """Send whatever of the final text has not been streamed (all of it for non-streaming providers)."""
        final = final.strip()
        if not self.sent:
            self.text(final)
        elif final.startswith(self.sent) and len(final) > len(self.sent):
            self.text(final[len(self.sent):])


class OrderedText:
    """Text from chunks that finish out of order, forwarded in order: chunk i's text is held until every
    chunk before it is done. Chunks are joined with a space (none for languages written without)."""

    def __init__(self, n: int, sink: TextSink, separator: Callable[[], str]):
        self.n = n
        self.sink = sink
        self.separator = separator
        self.pending = [""] * n
        self.started = [False] * n
        self.done = [False] * n
        self.cur = 0
        self.any = False

    def delta(self, i: int, text: str) -> None:
        self.pending[i] += text
        self._pump()

    def finish(self, i: int) -> None:
        self.done[i] = True
        self._pump()

    def _pump(self) -> None:
        while self.cur < self.n:
            i = self.cur
            t = self.pending[i]
            if t:
                self.pending[i] = ""
                if not self.started[i]:
                    t = t.lstrip()
                    if t and self.any:
                        t = self.separator() + t
                if t:
                    self.started[i] = True
                    self.any = True
                    self.sink(t)
            if not self.done[i]:
                return
            self.cur += 1


# ---- stitching -------------------------------------------------------------------------------------------
def stitch(req: TranscriptionRequest, chunks: list[Chunk], results: list[TranscriptionResult],
           duration: float) -> TranscriptionResult:
    segments: list[Segment] = []
    texts: list[str] = []
    last_seg = 0.0
    last_word = 0.0
    language = req.language
    for ch, res in zip(chunks, results):
        t = res.transcript
        language = language or _language_code(t.language) or t.language
        off = ch.offset
        hi = min(ch.offset + ch.duration, duration)
        segs = t.segments
        if not segs and t.text.strip():  # a provider that gave text only: one segment over the chunk
            segs = [Segment(id=0, start=0.0, end=ch.duration, text=" " + t.text.strip())]
        for s in segs:
            start = min(max(s.start + off, off, last_seg), hi)
            end = min(max(s.end + off, start), hi)
            words = []
            for w in s.words:
                ws = min(max(w.start + off, off, last_word), hi)
                we = min(max(w.end + off, ws), hi)
                last_word = ws
                words.append(Word(w.word, round(ws, 3), round(we, 3), w.probability, w.speaker))
            segments.append(dataclasses.replace(s, id=len(segments), start=round(start, 3), end=round(end, 3),
                                                seek=s.seek + int(round(off * 100)), words=words))
            last_seg = start
        if t.text.strip():
            texts.append(t.text.strip())
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    tin = [r.transcript.input_tokens for r in results if r.transcript.input_tokens is not None]
    tout = [r.transcript.output_tokens for r in results if r.transcript.output_tokens is not None]
    transcript = Transcript(text=sep.join(texts), language=language, duration=duration, segments=segments,
                            task=req.task, input_tokens=sum(tin) if tin else None,
                            output_tokens=sum(tout) if tout else None)
    uin = [r.usage.input_tokens for r in results if r.usage.input_tokens is not None]
    uout = [r.usage.output_tokens for r in results if r.usage.output_tokens is not None]
    usage = Usage(seconds=duration, input_tokens=sum(uin) if uin else None, output_tokens=sum(uout) if uout else None,
                  cost=sum(r.usage.cost for r in results))
    first = results[0].route
    route = dataclasses.replace(
        first, attempts=[a for r in results for a in r.route.attempts],
        ignored_params=sorted({p for r in results for p in r.route.ignored_params}),
        substitute=any(r.route.substitute for r in results))
    return TranscriptionResult(transcript, usage, route)


# ---- chunk audio -----------------------------------------------------------------------------------------
class ChunkAudio(PreparedAudio):
    """One chunk of long audio, kept as the 16 kHz mono int16 read from the spool (`pcm16`, its only copy).
    What PreparedAudio promises is made from it when something asks, and kept: `data` (the raw s16le bytes,
    format "pcm": for adapters that send PCM as it is) and `samples` (float32: the local engine). Re-encoding
    for upload (audio/convert.py) reads `pcm16` directly, so an upstream chunk costs its int16 and the encoded
    file, not four copies of the chunk."""

    def __init__(self, pcm16: np.ndarray, duration: float):
        self.pcm16 = pcm16
        self._data: bytes | None = None
        self._samples: np.ndarray | None = None
        self._lock = threading.Lock()
        super().__init__(None, "pcm", None, duration)  # type: ignore[arg-type]

    @property
    def data(self) -> bytes:  # type: ignore[override]
        if self._data is None:
            with self._lock:
                if self._data is None:
                    self._data = self.pcm16.astype("<i2", copy=False).tobytes()
        return self._data

    @data.setter
    def data(self, value: bytes | None) -> None:
        self._data = value

    @property
    def samples(self) -> np.ndarray:  # type: ignore[override]
        if self._samples is None:
            with self._lock:
                if self._samples is None:
                    self._samples = s16_to_float(self.pcm16)
        return self._samples

    @samples.setter
    def samples(self, value: np.ndarray | None) -> None:
        self._samples = value

    def __repr__(self) -> str:  # never build the bytes or the float samples just to show the object
        return f"ChunkAudio(format='pcm', samples={len(self.pcm16)}, duration={self.duration:.3f})"


# ---- the job ---------------------------------------------------------------------------------------------
class TranscriptionJob:
    def __init__(self, router: Router, req: TranscriptionRequest, field: str, settings: Any, *,
                 cache: TranscriptCache | None = None, cache_mode: str = OFF, namespace: str = ""):
        self.router = router
        self.req = req
        self.field = field
        self.settings = settings
        self.cache = cache
        self.cache_mode = cache_mode if cache is not None else OFF
        self.namespace = namespace
        self.headers: dict[str, str] = {}
        self.plan: ChunkPlan | None = None
        self.hit: TranscriptionResult | None = None
        self.prepared: PreparedAudio | None = None
        self.spool: PcmSpool | None = None
        self.chunks: list[Chunk] = []
        self.duration: float | None = None
        self.digest: str | None = None
        # srt/vtt cues are better from word timings: ask for them, but a cached transcript without is fine
        self.words_optional = req.response_format in ("srt", "vtt") and not req.want_words
        if self.words_optional:
            req.timestamp_granularities = [*req.timestamp_granularities, "word"]

    # ---- step 1 ----------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        self.plan = chunk_plan(self.router, self.req, self.settings)
        if self.cache is not None:
            if self.cache_mode == OFF:
                self.headers["X-Cache"] = "BYPASS"
            else:
                self.digest = await asyncio.to_thread(audio_digest, self.req.audio.data)
                if self.cache_mode == USE:
                    self.hit = await self._lookup()
                self.headers["X-Cache"] = "HIT" if self.hit else ("MISS" if self.cache_mode == USE else "BYPASS")
                if self.hit:
                    from ..api.audio_input import format_headers
                    self.headers.update(format_headers(self.req.audio))
                    self.duration = self.hit.transcript.duration
                    self.headers["X-Audio-Duration"] = f"{self.duration or 0.0:.3f}"
                    return
        await self._decode()
        self.headers["X-Audio-Duration"] = f"{self.duration or 0.0:.3f}"

    async def _decode(self) -> None:
        from ..api.audio_input import prepare as prepare_audio
        audio, limit = self.req.audio, self.plan.limit_s
        tmp = getattr(self.settings, "tmp_dir", None)
        if math.isinf(limit):
            est: float | None = 0.0
        elif audio.data[:4] == b"RIFF" and (layout := wav_layout(audio.data)) is not None:
            est = layout.duration  # read from the header: not worth a thread hop
        else:
            est = await asyncio.to_thread(probe_duration, audio.data, audio.declared_format)
        if est is not None and est <= limit * 0.9:
            # The header's estimate is only a hint: the in-memory decode stops the moment it passes the chunk
            # limit (float32 held: at most `limit` seconds), and audio that turns out longer than its header
            # said is decoded again onto the spool below, like any long file.
            bound = None if math.isinf(limit) else limit
            try:
                prepared, headers = await prepare_audio(audio, self.field, max_seconds=bound)
            except AudioTooLong:
                if bound is None or bound >= MAX_SECONDS:
                    raise  # this bound was the server's own limit
            else:
                self.headers.update(headers)
                self.prepared, self.duration = prepared, prepared.duration
                return
        spool, fmt = await asyncio.to_thread(decode_to_spool, audio.data, audio.declared_format,
                                             field=self.field, directory=tmp)
        audio.detected_format = fmt
        self.headers["X-Audio-Format-Detected"] = fmt
        if audio.declared_format and not agrees(audio.declared_format, fmt):
            self.headers["X-Audio-Format-Mismatch"] = f"declared {audio.declared_format}, decoded as {fmt}"
        if spool.duration <= limit:
            samples = await asyncio.to_thread(spool.read_float, 0, spool.n_samples)
            self.prepared = PreparedAudio(audio.data, fmt, samples, round(spool.duration, 3))
            self.duration = spool.duration
            spool.close()
            return
        self.spool, self.duration = spool, spool.duration
        self.chunks = await asyncio.to_thread(plan_chunks, spool, limit)
        self.headers["X-Chunks"] = str(len(self.chunks))
        # The chunks are cut from the spool: the original bytes are not needed any more.
        self.req.audio = Audio(b"", declared_format=audio.declared_format, detected_format=audio.detected_format,
                               filename=audio.filename)

    # ---- step 2 ----------------------------------------------------------------------------------------
    async def run(self, on_text: TextSink | None = None) -> TranscriptionResult:
        if self.hit is not None:
            if on_text and self.hit.transcript.text:
                on_text(self.hit.transcript.text)
            return self.hit
        try:
            if self.prepared is not None:
                result = await self._one(self.req, self.prepared, on_text)
                if result.transcript.duration is None:
                    result.transcript.duration = self.prepared.duration
            else:
                result = await self._chunked(on_text)
        finally:
            self.close()
        if self.cache is not None and self.cache_mode in (USE, REFRESH) and self.digest:
            await self._store(result)
        return result

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self.prepared = None

    async def _one(self, req: TranscriptionRequest, audio: PreparedAudio, on_text: TextSink | None) -> TranscriptionResult:
        if on_text is None:
            return await self.router.transcribe(req, audio)
        cand = self._streaming_candidate(req)
        if cand is not None:
            return await self._stream_upstream(req, audio, cand, on_text)
        hook = SegmentHook(asyncio.get_running_loop(), on_text)
        result = await self.router.transcribe(req, audio, progress=hook)
        hook.finish(result.transcript.text)
        return result

    async def _one_retrying(self, req, audio, on_text) -> TranscriptionResult:
        delay = 1.0
        for attempt in range(OVERLOAD_RETRIES + 1):
            try:
                return await self._one(req, audio, on_text)
            except Overloaded:
                if attempt == OVERLOAD_RETRIES:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _chunk_audio(self, ch: Chunk) -> "ChunkAudio":
        return ChunkAudio(self.spool.read(ch.start, ch.end), ch.duration)

    async def _chunked(self, on_text: TextSink | None) -> TranscriptionResult:
        req, plan, chunks = self.req, self.plan, self.chunks
        n = len(chunks)
        if plan.context:  # contiguous stripes, each long enough for the context to matter, run in parallel
            k = max(1, min(plan.concurrency, n // MIN_STRIPE))
            bounds = [round(i * n / k) for i in range(k + 1)]
            lanes: list = [iter(range(bounds[i], bounds[i + 1])) for i in range(k) if bounds[i + 1] > bounds[i]]
        else:  # one queue in file order: text streams steadily and the load stays balanced
            shared = iter(range(n))
            lanes = [shared] * max(1, min(plan.concurrency, n))
        results: list[TranscriptionResult | None] = [None] * n
        language = req.language
        language_known = asyncio.Event()
        first_cap = plan.candidates[0].endpoint.capabilities
        if language or not first_cap.language:
            language_known.set()
        ordered = OrderedText(n, on_text, lambda: "" if language in NO_SPACE_LANGUAGES else " ") if on_text else None
        extra = {k2: v for k2, v in req.extra.items() if k2 != "stream"}

        async def lane(indices) -> None:
            nonlocal language
            previous: str | None = None
            for i in indices:  # (a shared iterator hands each index to one lane only)
                if i != 0:
                    await language_known.wait()
                prompt = compose_prompt(req.prompt, previous) if plan.context else req.prompt
                creq = dataclasses.replace(req, prompt=prompt, language=language, extra=dict(extra),
                                           audio=Audio(b"", declared_format="pcm", detected_format="pcm"))
                audio = await asyncio.to_thread(self._chunk_audio, chunks[i])
                sink = (lambda d, i=i: ordered.delta(i, d)) if ordered else None
                res = await self._one_retrying(creq, audio, sink)
                del audio
                results[i] = res
                if ordered:
                    ordered.finish(i)
                if i == 0 and not language_known.is_set():
                    language = _language_code(res.transcript.language)
                    language_known.set()
                previous = res.transcript.text

        try:
            async with asyncio.TaskGroup() as tg:
                for it in lanes:
                    tg.create_task(lane(it))
        except BaseExceptionGroup as eg:
            first = _first_error(eg)
            raise first from None
        return stitch(req, chunks, results, self.duration or 0.0)  # type: ignore[arg-type]

    # ---- upstream streaming ------------------------------------------------------------------------------
    def _streaming_candidate(self, req: TranscriptionRequest) -> Candidate | None:
        if req.task != "transcribe":
            return None
        try:
            cands, _ = self.router.plan(req, "transcription")
        except GatewayError:
            return None
        c = cands[0]
        if c.endpoint.provider == "local" or not c.endpoint.capabilities.streaming:
            return None
        if hasattr(c.adapter, "transcribe_stream"):
            return c
        from ..api.sse import speaks_openai
        return c if speaks_openai(c.adapter) else None

    async def _stream_upstream(self, req, audio, cand: Candidate, on_text: TextSink) -> TranscriptionResult:
        """One streaming attempt on `cand` (through Router.run: timeout, breaker, attempt record). Once text
        has gone out nothing is retried; before that, a failure falls back to the other candidates, without
        streaming."""
        from ..api.sse import openai_stream_transcribe
        _, route = self.router.plan(req, "transcription", duration=audio.duration)
        sent: list[str] = []

        def emit(d: str) -> None:
            if not sent:
                d = d.lstrip()
            if d:
                sent.append(d)
                on_text(d)

        async def start(c: Candidate) -> Transcript:
            options = dict(req.provider.options.get(c.endpoint.provider, {}))
            try:
                if hasattr(c.adapter, "transcribe_stream"):
                    return await c.adapter.transcribe_stream(req, audio, c.endpoint, options, emit)
                return await openai_stream_transcribe(c.adapter, req, audio, c.endpoint, options, emit)
            except UpstreamError as e:
                if sent:  # text already reached the client: another attempt would repeat it
                    e.retryable = False
                raise

        try:
            _, transcript = await self.router.run(route, [cand], start)
        except GatewayError as e:
            others = dataclasses.replace(req.provider, ignore=[*(req.provider.ignore or []), cand.endpoint.provider])
            oreq = dataclasses.replace(req, provider=others)
            if sent or e.status < 500 and e.status not in (408, 413, 429) or not req.provider.allow_fallbacks:
                raise
            try:
                self.router.plan(oreq, "transcription", duration=audio.duration)
            except GatewayError:
                raise e from None
            hook = SegmentHook(asyncio.get_running_loop(), on_text)
            result = await self.router.transcribe(oreq, audio, progress=hook)
            hook.finish(result.transcript.text)
            result.route.attempts[:0] = route.attempts
            return result
        final = transcript.text.strip()
        already = "".join(sent)
        if not already:
            emit(final)
        elif final.startswith(already) and len(final) > len(already):
            emit(final[len(already):])
        route.ignored_params = self.router.ignored_params(req, cand.endpoint)
        usage = Usage(seconds=audio.duration, input_tokens=transcript.input_tokens, output_tokens=transcript.output_tokens)
        usage.cost = transcription_cost(cand.endpoint.pricing, usage)
        if transcript.duration is None:
            transcript.duration = audio.duration
        return TranscriptionResult(transcript, usage, route)

    # ---- cache -------------------------------------------------------------------------------------------
    def _key(self, words: bool) -> str:
        return cache_key(self.digest or "", self.req, words=words, namespace=self.namespace)

    async def _lookup(self) -> TranscriptionResult | None:
        if self.words_optional:
            keys = [self._key(True), self._key(False)]
        elif self.req.want_words:
            keys = [self._key(True)]
        else:  # an entry with word timings serves a request without them too
            keys = [self._key(False), self._key(True)]
        for key in keys:
            entry = await self.cache.get(key)
            if entry is None:
                continue
            t: Transcript = entry["transcript"]
            u = entry.get("usage") or {}
            usage = Usage(seconds=u.get("seconds", t.duration), input_tokens=u.get("input_tokens"),
                          output_tokens=u.get("output_tokens"), cost=0.0)
            route = Route(model=entry.get("model") or self.req.model, provider=entry.get("provider"),
                          endpoint=entry.get("endpoint"), substitute=bool(entry.get("substitute")), cache_hit=True)
            return TranscriptionResult(t, usage, route)
        return None

    async def _store(self, result: TranscriptionResult) -> None:
        r, u = result.route, result.usage
        meta = {"model": r.model, "provider": r.provider, "endpoint": r.endpoint, "substitute": r.substitute,
                "usage": {"seconds": u.seconds, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens}}
        await self.cache.put(self._key(self.req.want_words), result.transcript, meta)


def _first_error(eg: BaseExceptionGroup) -> BaseException:
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first_error(e)
        if isinstance(e, GatewayError):
            return e
    e = eg.exceptions[0]
    return _first_error(e) if isinstance(e, BaseExceptionGroup) else e


# ---- speech: text longer than an endpoint takes ------------------------------------------------------------
_SENTENCE = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+|\n+")
_CLAUSE = re.compile(r"(?<=[,;:—–])\s+")


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at sentence ends, else at clause punctuation, else
    between words (a single word longer than the limit is cut as it is)."""
    limit = max(1, limit)
    units: list[str] = []
    for sent in _SENTENCE.split(text):
        sent = sent.strip()
        if not sent:
            continue
        if len(sent) <= limit:
            units.append(sent)
            continue
        for clause in _CLAUSE.split(sent):
            if len(clause) <= limit:
                units.append(clause)
                continue
            words: list[str] = []
            for word in clause.split():  # a word longer than the limit is cut as it is
                words += [word[i:i + limit] for i in range(0, len(word), limit)]
            units += pack(words, limit)
    return pack(units, limit)


def speech_limit(router: Router, req: SpeechRequest, cands: list[Candidate] | None = None) -> int | None:
    """The smallest max_characters among the endpoints that could serve the request, whatever its length
    (`cands`: those, when the caller has them already, e.g. from the cost estimate)."""
    if cands is None:
        cands, _ = router.plan(req, "speech", lengths=False)
    limits = [c.endpoint.limits.max_characters for c in cands if c.endpoint.limits.max_characters]
    return min(limits) if limits else None


async def speak(router: Router, req: SpeechRequest, cands: list[Candidate] | None = None) -> SpeechResult:
    """Router.speak, except that text over the candidates' max_characters is split at sentence boundaries,
    the pieces synthesized in order (the next one started while the current one streams) and their audio
    joined into one stream of one format. `cands`: the request's candidates whatever its length, if known."""
    limit = speech_limit(router, req, cands)
    if limit is None or len(req.input) <= limit:
        return await router.speak(req)
    pieces = split_text(req.input, limit)
    # Pieces are joined as raw audio: ask for PCM where every candidate makes it (re-encoded once, as it
    # streams, into the requested format), else each piece is decoded and joined as samples.
    cands, _ = router.plan(dataclasses.replace(req, input=pieces[0]), "speech")
    if all(c.endpoint.output_formats is None or "pcm" in c.endpoint.output_formats for c in cands):
        req = dataclasses.replace(req, response_format="pcm")
    first = await router.speak(dataclasses.replace(req, input=pieces[0]))
    usage = dataclasses.replace(first.usage)
    usage.characters = len(req.input)
    if usage.input_tokens is not None:
        usage.input_tokens = estimate_text_tokens(req.input)
    # the total is not known until every piece is done; estimate from the first piece's price, settle later
    p = _pricing_of(router, first.route)
    if p is not None:
        usage.cost = speech_cost(p, usage)
    joined = JoinedSpeech(router, req, pieces, first, usage)
    stream = SpeechStream(joined.chunks(), joined.encoding, joined.rate)
    return SpeechResult(stream, joined.first_chunk, usage, first.route)


def _pricing_of(router: Router, route: Route):
    if not route.endpoint:
        return None
    model = router.catalog.find(route.model)
    for e in (model.endpoints if model else []):
        if e.key == route.endpoint:
            return e.pricing
    return None


class JoinedSpeech:
    """The audio of several SpeechResults as one stream. Float and raw PCM pieces are passed through
    (converted to the first piece's encoding and rate when a later piece came from elsewhere); compressed
    pieces are decoded and joined as float samples (concatenated files would not be one valid file)."""

    def __init__(self, router: Router, req: SpeechRequest, pieces: list[str], first: SpeechResult, usage: Usage):
        self.router, self.req, self.pieces, self.first, self.usage = router, req, pieces, first, usage
        enc = first.stream.encoding
        self.passthrough = enc in ("f32", "pcm")
        self.encoding = enc if self.passthrough else "f32"
        self.rate = first.stream.rate
        self.first_chunk: Any = None  # the first piece's chunks are the start of chunks()
        self._costs = [first.usage]

    async def chunks(self) -> AsyncIterator[Any]:
        pending: asyncio.Task | None = None
        try:
            current = self.first
            for k in range(len(self.pieces)):
                if k + 1 < len(self.pieces):
                    nxt = dataclasses.replace(self.req, input=self.pieces[k + 1])
                    pending = asyncio.create_task(self.router.speak(nxt))
                async for c in self._normalized(current):
                    yield c
                if pending is None:
                    break
                current = await pending
                pending = None
                self._costs.append(current.usage)
            self._settle()
        finally:
            if pending is not None:
                pending.cancel()

    def _settle(self) -> None:
        self.usage.cost = sum(u.cost for u in self._costs)
        tin = [u.input_tokens for u in self._costs if u.input_tokens is not None]
        tout = [u.output_tokens for u in self._costs if u.output_tokens is not None]
        if tin:
            self.usage.input_tokens = sum(tin)
        if tout:
            self.usage.output_tokens = sum(tout)

    async def _normalized(self, res: SpeechResult) -> AsyncIterator[Any]:
        enc, rate = res.stream.encoding, res.stream.rate
        if enc == self.encoding and rate == self.rate and self.encoding in ("f32", "pcm"):
            async for c in res.chunks():
                if c is not None and len(c):
                    yield c
            return
        # convert this piece to the joined stream's encoding
        from ..audio.transcode import decode_native
        if enc == "f32":
            parts = [c async for c in res.chunks() if c is not None and len(c)]
            samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        elif enc == "pcm":
            raw = b"".join([c async for c in res.chunks() if c])
            samples = np.frombuffer(raw[:len(raw) - len(raw) % 2], dtype="<i2").astype(np.float32) / 32768.0
        else:
            raw = b"".join([c async for c in res.chunks() if c])
            samples, rate = await asyncio.to_thread(decode_native, raw)
        if rate != self.rate and len(samples):
            n = max(1, int(round(len(samples) * self.rate / rate)))
            samples = np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples).astype(np.float32)
        if self.encoding == "pcm":
            yield (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        else:
            yield samples.astype(np.float32, copy=False)
