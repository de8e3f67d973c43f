"""The transcription use case: audio of any length in, one transcript out (or its text as it comes).

Every caller goes through here: the API's transcription and translation routes (streamed or not), the CLI,
background batch work. Step by step (TranscriptionJob):
1. prepare(): plan the candidates ONCE (bad model or parameters fail here, before any work; the plan is
   passed down to every router call, chunks included), look the request up in the transcript cache, then
   decode. Audio that fits the chunk limit takes the ordinary path (whole-file float32, one router call).
   Longer audio is decoded frame by frame to int16 PCM spilled to a temporary file (never float32 for the
   whole file) and cut at silences into chunks that every candidate accepts: at most
   AUDIOROUTER_CHUNK_SECONDS, and within each endpoint's limits.max_seconds / max_bytes and each adapter's
   own max_audio_seconds (Google's sync recognize: 55 s).
2. run(): chunks go to Router.transcribe (so fallbacks and attempts work per chunk) `concurrency` at a time.
   Where the endpoint takes prompts (not the local engine: it applies a prompt to every window it decodes),
   chunks run as contiguous stripes: inside a stripe in order, each with the previous chunk's text as its
   prompt; stripes in parallel. Otherwise from one queue in file order. The first chunk runs first when no
   language was given, and its detected language is pinned for the rest, as Whisper does for one file.
   Segment and word timestamps are shifted by the chunk's offset, clamped to it and kept monotonic; usage
   and cost are the sums over chunks (stitch: the one chunk-and-stitch path). Diarized long audio whose
   answer shows speakers: each chunk after the first also transcribes the DIARIZE_OVERLAP_S before its cut,
   and its speakers are matched to the previous chunk's by who speaks when in that shared stretch
   (core.speakers.match_speakers), so speaker A stays A; the shared stretch is kept from the earlier chunk.
3. With a text sink (stream=true), text is emitted in order as it is final: per segment from the local
   engine, per upstream SSE delta from adapters that stream (`transcribe_stream`), per chunk otherwise."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..audio.chunking import (
    RATE,
    WAV_BYTES_PER_SECOND,
    Chunk,
    PcmSpool,
    decode_file_to_spool,
    decode_to_spool,
    plan_chunks,
    probe_duration,
    probe_file_duration,
    s16_to_float,
)
from ..audio.decode import MAX_SECONDS, AudioTooLong, wav_layout
from ..audio.prepare import format_headers, sniffed_format_headers
from ..audio.prepare import prepare as prepare_audio
from ..audio.sniff import canonical
from ..core import languages
from ..core.audio import LazyAudio, PreparedAudio
from ..core.errors import GatewayError, Overloaded
from ..core.speakers import Turn, is_generic, match_speakers
from ..core.types import Audio, Segment, Transcript, TranscriptionRequest, Usage, Word
from ..routing.router import Candidate, Plan, Route, Router, TranscriptionResult
from ..store.transcript_cache import OFF, REFRESH, USE, TranscriptCache, audio_digest, cache_key, get_cache, policy

__all__ = ["OFF", "REFRESH", "USE", "ChunkPlan", "TranscriptCache", "TranscriptionJob", "TranscriptionResult",
           "audio_from_path", "cache_policy", "chunk_audio", "chunk_plan", "chunking_possible",
           "get_cache", "stitch", "transcribe"]

log = logging.getLogger("audiorouter.jobs.transcription")

cache_policy = policy
PROMPT_CONTEXT_CHARS = 600
OVERLOAD_RETRIES = 4
MIN_STRIPE = 3  # chunks per stripe at least, when chunks carry the previous one's text as prompt
# Diarized long audio: seconds each chunk re-hears before its cut, to match its speakers with the previous
# chunk's (at most a quarter of the chunk limit). Speakers silent in that stretch cannot be matched.
DIARIZE_OVERLAP_S = 8.0
SPEAKER_FORMATS = ("diarized_json", "verbose_json", "srt", "vtt")  # the answers that show speakers

TextSink = Callable[[str], None]
Progress = Callable[[float], None]


# ---- planning ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ChunkPlan:
    plan: Plan           # the request's one routing plan, passed to every router call
    limit_s: float       # the longest chunk every candidate accepts (inf: no chunking needed)
    concurrency: int
    context: bool        # pass the previous chunk's text as prompt

    @property
    def candidates(self) -> list[Candidate]:
        return self.plan.cands

    @property
    def ignored(self) -> list[str]:
        return self.plan.route.ignored_params


def chunk_plan(plan: Plan, settings: Any) -> ChunkPlan:
    cands = plan.cands
    limit = float(getattr(settings, "chunk_seconds", 0) or 0) or math.inf
    for c in cands:
        lim = c.endpoint.limits
        if lim.max_seconds:
            limit = min(limit, lim.max_seconds * 0.95)
        if lim.max_bytes:  # chunks are re-encoded (FLAC, else WAV): the WAV size is the worst case
            limit = min(limit, max(5.0, (lim.max_bytes * 0.95 - 4096) / WAV_BYTES_PER_SECOND))
        own = c.adapter.max_audio_seconds(c.endpoint)  # what one call of the adapter takes, whatever the catalog says
        if own:
            limit = min(limit, own)
    first = cands[0]
    local = first.endpoint.provider == "local"
    local_limit = float(getattr(settings, "local_chunk_seconds", 0) or 0)
    if local and local_limit and float(getattr(settings, "chunk_seconds", 0) or 0):
        limit = min(limit, float(settings.local_chunk_seconds))
    conc = int(getattr(settings, "chunk_concurrency", 0) or 0)
    if conc <= 0:
        conc = max(1, int(getattr(settings, "workers", 2))) if local else 4
    # The local engine applies a prompt to every 30 s window it decodes (it batches windows, it does not
    # chain them), so a chunk's text as prompt would bias the whole next chunk: measured worse, not better.
    context = bool(getattr(settings, "chunk_context", True)) and first.endpoint.capabilities.prompt and not local
    return ChunkPlan(plan, limit, conc, context)


def duration_matters(req: TranscriptionRequest) -> bool:
    """Whether the audio's length changes which candidates serve and in what order (provider.sort=price,
    provider.max_price.total): then the plan is made for the decoded duration."""
    return req.provider.sort == "price" or "total" in (req.provider.max_price or {})


def chunking_possible(settings: Any, catalog: Any) -> bool:
    """Whether any transcription could be cut into chunks (so the VAD is worth loading at start-up): a chunk
    limit is set, or some transcription endpoint has a length or size limit (see chunk_plan)."""
    if float(getattr(settings, "chunk_seconds", 0) or 0) > 0:
        return True
    return any(e.limits.max_seconds or e.limits.max_bytes
               for m in catalog.by_kind("transcription") for e in m.endpoints)


def _language_code(v: str | None) -> str | None:
    """A detected language as a code a request may name (core.languages), else None."""
    c = languages.code(v)
    return c if c and languages.is_known(c) else None


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
    chunk before it is done. Chunks are joined with a space (none for languages written without:
    core.languages.joiner)."""

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
def _speaker_turns(t: Transcript, off: float) -> list[Turn]:
    """Who speaks when in a chunk's transcript (absolute times): its words' speakers, else its segments'."""
    words = [(w.speaker, w.start, w.end) for s in t.segments for w in s.words if w.speaker is not None]
    if not words:
        words = [(s.speaker, s.start, s.end) for s in t.segments if s.speaker is not None]
    return [(lab, a + off, b + off) for lab, a, b in words]


class ChunkSpeakers:
    """One set of speaker labels over overlapping chunks: the first chunk's generic labels become speaker_0,
    1, ... in order of appearance; each later chunk's are matched to the previous chunk's on the stretch both
    transcribed (core.speakers.match_speakers), and a speaker without a match gets the next new number.
    Labels that name someone (known speakers) are kept as they are."""

    def __init__(self) -> None:
        self.count = 0
        self.prev: list[Turn] = []

    def relabel(self, t: Transcript, off: float, shared_until: float | None) -> Transcript:
        turns = _speaker_turns(t, off)
        generic = [lab for lab, _, _ in turns if is_generic(lab)]
        matched = (match_speakers(self.prev, [x for x in turns if is_generic(x[0])], off, shared_until)
                   if shared_until is not None else {})
        mapping: dict[str, str] = {}
        for lab in dict.fromkeys(generic):
            if lab in matched:
                mapping[lab] = matched[lab]
            else:
                mapping[lab] = f"speaker_{self.count}"
                self.count += 1
        self.prev = [(mapping.get(lab, lab), a, b) for lab, a, b in turns]

        def name(lab: str | None) -> str | None:
            return mapping.get(lab, lab) if lab is not None else None

        segs = [dataclasses.replace(s, speaker=name(s.speaker),
                                    words=[dataclasses.replace(w, speaker=name(w.speaker)) for w in s.words])
                for s in t.segments]
        return dataclasses.replace(t, segments=segs)


def _kept(segs: list[Segment], off: float, lo: float, hi: float) -> list[Segment]:
    """The segments (and words) of a chunk whose middle falls in [lo, hi), absolute: the rest is the stretch
    another chunk also transcribed and keeps."""
    def inside(a: float, b: float) -> bool:
        return lo <= (a + b) / 2 + off < hi

    out = []
    for s in segs:
        if s.words:
            words = [w for w in s.words if inside(w.start, w.end)]
            if not words:
                continue
            if len(words) < len(s.words):
                s = dataclasses.replace(s, start=words[0].start, end=words[-1].end, words=words,
                                        text=" " + " ".join(w.word.strip() for w in words))
            out.append(s)
        elif inside(s.start, s.end):
            out.append(s)
    return out


def stitch(req: TranscriptionRequest, chunks: list[Chunk], results: list[TranscriptionResult],
           duration: float, cuts: list[float] | None = None) -> TranscriptionResult:
    """One transcript from the chunks' results. `cuts`: where each chunk's own part starts when the chunks
    overlap (chunk i re-hears [chunk i's offset, cuts[i]]): the overlap is kept from the earlier chunk, and
    diarized speakers are matched across it (ChunkSpeakers)."""
    segments: list[Segment] = []
    texts: list[str] = []
    last_seg = 0.0
    last_word = 0.0
    language = req.language
    speakers = ChunkSpeakers() if cuts is not None and req.extra.get("diarize") else None
    for i, (ch, res) in enumerate(zip(chunks, results)):
        t = res.transcript
        language = language or _language_code(t.language) or t.language
        off = ch.offset
        hi = min(ch.offset + ch.duration, duration)
        segs = t.segments
        if not segs and t.text.strip():  # a provider that gave text only: one segment over the chunk
            segs = [Segment(id=0, start=0.0, end=ch.duration, text=" " + t.text.strip())]
        if cuts is not None:
            if speakers is not None:
                segs = speakers.relabel(dataclasses.replace(t, segments=segs), off,
                                        cuts[i] if i > 0 else None).segments
            segs = _kept(segs, off, cuts[i] if i > 0 else -math.inf,
                         cuts[i + 1] if i + 1 < len(cuts) else math.inf)
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
                                                seek=s.seek + round(off * 100), words=words))
            last_seg = start
        text = (languages.joiner(language).join(s.text.strip() for s in segs if s.text.strip())
                if cuts is not None else t.text.strip())
        if text:
            texts.append(text)
    sep = languages.joiner(language)
    tin = [r.transcript.input_tokens for r in results if r.transcript.input_tokens is not None]
    tout = [r.transcript.output_tokens for r in results if r.transcript.output_tokens is not None]
    transcript = Transcript(text=sep.join(texts), language=language, duration=duration, segments=segments,
                            task=req.task, input_tokens=sum(tin) if tin else None,
                            output_tokens=sum(tout) if tout else None,
                            logprobs=([lp for r in results for lp in (r.transcript.logprobs or [])]
                                      if any(r.transcript.logprobs is not None for r in results) else None))
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
def chunk_audio(pcm16: Any, duration: float) -> LazyAudio:
    """One chunk of long audio, kept as the 16 kHz mono int16 read from the spool: the raw s16le bytes (format
    "pcm", for adapters that send PCM as it is) and the float32 samples (the local engine) are made only when
    asked; re-encoding for upload reads the int16 directly (core/audio.py LazyAudio)."""
    return LazyAudio.from_pcm16(pcm16, duration, s16_to_float)


def audio_from_path(path: str | os.PathLike) -> Audio:
    """A file on disk as request audio: its bytes, the format its extension names, its name."""
    p = Path(path)
    return Audio(p.read_bytes(), declared_format=canonical(p.suffix), filename=p.name)


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # the stdlib's chunked file hash


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
        self._plan: ChunkPlan | None = None
        self.hit: TranscriptionResult | None = None
        self.prepared: PreparedAudio | None = None
        self.spool: PcmSpool | None = None
        self.chunks: list[Chunk] = []
        self.cuts: list[float] | None = None  # overlapping chunks (diarized): where each chunk's own part starts
        self.duration: float | None = None
        self.digest: str | None = None
        # srt/vtt cues are better from word timings: ask for them, but a cached transcript without is fine
        self.words_optional = req.response_format in ("srt", "vtt") and not req.want_words
        if self.words_optional:
            req.timestamp_granularities = [*req.timestamp_granularities, "word"]

    # ---- step 1 ----------------------------------------------------------------------------------------
    @property
    def plan(self) -> ChunkPlan:
        """The request's plan (candidates, chunk limit, concurrency): made once, by prepare()."""
        if self._plan is None:
            raise RuntimeError("TranscriptionJob.prepare() has not run")
        return self._plan

    async def prepare(self) -> None:
        self._plan = chunk_plan(self.router.plan(self.req, "transcription"), self.settings)
        if self.cache is not None:
            if self.cache_mode == OFF:
                self.headers["X-Cache"] = "BYPASS"
            else:
                a = self.req.audio
                self.digest = await asyncio.to_thread(_file_digest, a.path) if a.path and not a.data \
                    else await asyncio.to_thread(audio_digest, a.data)  # (the same sha256: store/transcript_cache)
                if self.cache_mode == USE:
                    self.hit = await self._lookup()
                self.headers["X-Cache"] = "HIT" if self.hit else ("MISS" if self.cache_mode == USE else "BYPASS")
                if self.hit:
                    self.headers.update(sniffed_format_headers(self.req.audio))
                    self.duration = self.hit.transcript.duration
                    self.headers["X-Audio-Duration"] = f"{self.duration or 0.0:.3f}"
                    return
        await self._decode()
        self.headers["X-Audio-Duration"] = f"{self.duration or 0.0:.3f}"
        if duration_matters(self.req):  # price-sorted or price-capped: choose for this audio's length
            self.plan.plan = self.router.plan(self.req, "transcription", duration=self._plan_duration())
        if self.req.extra.get("stream") and self.stream_ignored():
            self.headers["X-Ignored-Parameters"] = ",".join(self.stream_ignored())

    def _plan_duration(self) -> float | None:
        """The audio length one router call sees: the whole file, or the longest chunk."""
        if self.chunks:
            return max(ch.duration for ch in self.chunks)
        return self.duration

    async def _decode(self) -> None:
        audio, limit = self.req.audio, self.plan.limit_s
        tmp = getattr(self.settings, "tmp_dir", None)
        # Audio on disk (Audio.path) is read into memory only when it goes to one router call as it is; long
        # audio is decoded from the file onto the spool, never read whole.
        on_disk = audio.path if audio.path and not audio.data else None
        if math.isinf(limit):
            est: float | None = 0.0
        elif on_disk:
            est = await asyncio.to_thread(probe_file_duration, on_disk, audio.declared_format)
        elif audio.data[:4] == b"RIFF" and (layout := wav_layout(audio.data)) is not None:
            est = layout.duration  # read from the header: not worth a thread hop
        else:
            est = await asyncio.to_thread(probe_duration, audio.data, audio.declared_format)
        # where chunks are possible (a finite limit), a file on disk is read whole only if a synchronous request
        # could have sent it: a header that claims a short length for a big upload does not bring it into
        # memory, it is decoded onto the spool below
        cap = getattr(self.settings, "max_body_bytes", None)
        inline_ok = (not on_disk or cap is None or math.isinf(limit)
                     or await asyncio.to_thread(os.path.getsize, on_disk) <= cap)
        if est is not None and est <= limit * 0.9 and inline_ok:
            # The header's estimate is only a hint: the in-memory decode stops the moment it passes the chunk
            # limit (float32 held: at most `limit` seconds), and audio that turns out longer than its header
            # said is decoded again onto the spool below, like any long file.
            if on_disk:
                audio.data = await asyncio.to_thread(Path(on_disk).read_bytes)
            bound = None if math.isinf(limit) else limit
            try:
                prepared, headers = await prepare_audio(audio, self.field, max_seconds=bound)
            except AudioTooLong:
                if bound is None or bound >= MAX_SECONDS:
                    raise  # this bound was the server's own limit
                if on_disk:
                    audio.data = b""  # the header lied: the file is decoded below, not these bytes
            else:
                self.headers.update(headers)
                self.prepared, self.duration = prepared, prepared.duration
                return
        if on_disk:
            spool, fmt = await asyncio.to_thread(decode_file_to_spool, on_disk, audio.declared_format,
                                                 field=self.field, directory=tmp)
        else:
            spool, fmt = await asyncio.to_thread(decode_to_spool, audio.data, audio.declared_format,
                                                 field=self.field, directory=tmp)
        audio.detected_format = fmt
        self.headers.update(format_headers(audio.declared_format, fmt))
        if spool.duration <= limit:
            if on_disk:  # short after all (its header said more, or nothing): one router call takes the bytes
                audio.data = await asyncio.to_thread(Path(on_disk).read_bytes)
            samples = await asyncio.to_thread(spool.read_float, 0, spool.n_samples)
            self.prepared = PreparedAudio(audio.data, fmt, samples, round(spool.duration, 3))
            self.duration = spool.duration
            spool.close()
            return
        self.spool, self.duration = spool, spool.duration
        overlap = self._speaker_overlap(limit)
        self.chunks = await asyncio.to_thread(plan_chunks, spool, limit - overlap)
        if overlap:  # each chunk after the first re-hears the stretch before its cut (stitch matches speakers)
            self.cuts = [ch.offset for ch in self.chunks]
            back = int(overlap * RATE)
            self.chunks = [ch if ch.index == 0 else Chunk(ch.index, max(0, ch.start - back), ch.end)
                           for ch in self.chunks]
        self.headers["X-Chunks"] = str(len(self.chunks))
        # The chunks are cut from the spool: the original bytes are not needed any more.
        self.req.audio = Audio(b"", declared_format=audio.declared_format, detected_format=audio.detected_format,
                               filename=audio.filename)

    def _speaker_overlap(self, limit: float) -> float:
        """Seconds of overlap between chunks: DIARIZE_OVERLAP_S (at most a quarter of the chunk limit) when the
        request diarizes and its answer shows speakers, not streamed; else 0."""
        req = self.req
        if not req.extra.get("diarize") or req.extra.get("stream") or req.response_format not in SPEAKER_FORMATS:
            return 0.0
        return min(DIARIZE_OVERLAP_S, limit * 0.25)

    # ---- step 2 ----------------------------------------------------------------------------------------
    async def run(self, on_text: TextSink | None = None, progress: Progress | None = None) -> TranscriptionResult:
        """The transcript. `on_text(delta)`: its text as it becomes final, in order (on the event loop).
        `progress(seconds)`: how far the work has come (the local engine's own progress, else per chunk)."""
        if self.hit is not None:
            if on_text and self.hit.transcript.text:
                on_text(self.hit.transcript.text)
            return self._with_request_ignored(self.hit)
        try:
            if self.prepared is not None:
                result = await self._one(self.req, self.prepared, on_text, progress)
                if result.transcript.duration is None:
                    result.transcript.duration = self.prepared.duration
            else:
                result = await self._chunked(on_text, progress)
        finally:
            self.close()
        if self.cache is not None and self.cache_mode in (USE, REFRESH) and self.digest:
            await self._store(result)
        return self._with_request_ignored(result)

    def _with_request_ignored(self, result: TranscriptionResult) -> TranscriptionResult:
        """The result with the parameters the request itself rules out (req.extra["ignored_params"]: e.g.
        include=logprobs with a format that cannot carry them) added to the route's ignored ones."""
        extra = self.req.extra.get("ignored_params") or ()
        if extra:
            result.route.ignored_params = sorted({*result.route.ignored_params, *extra})
        return result

    def stream_ignored(self) -> list[str]:
        """What a streamed answer (whose headers go out before any provider is tried) will ignore: the plan's
        first candidate's ignored parameters and the request's own."""
        return sorted({*self.plan.ignored, *(self.req.extra.get("ignored_params") or ())})

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self.prepared = None

    async def _one(self, req: TranscriptionRequest, audio: PreparedAudio, on_text: TextSink | None,
                   progress: Progress | None = None) -> TranscriptionResult:
        plan = self.plan.plan
        if on_text is None:
            return await self.router.transcribe(req, audio, progress, plan=plan)
        cand = self._streaming_candidate(req)
        if cand is not None:
            return await self._stream_upstream(req, audio, cand, on_text)
        hook = SegmentHook(asyncio.get_running_loop(), on_text)
        result = await self.router.transcribe(req, audio, hook, plan=plan)
        hook.finish(result.transcript.text)
        return result

    async def _one_retrying(self, req: TranscriptionRequest, audio: PreparedAudio,
                            on_text: TextSink | None) -> TranscriptionResult:
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

    def _chunk_audio(self, ch: Chunk) -> LazyAudio:
        return chunk_audio(self.spool.read(ch.start, ch.end), ch.duration)  # type: ignore[union-attr]

    async def _chunked(self, on_text: TextSink | None, progress: Progress | None) -> TranscriptionResult:
        req, plan, chunks = self.req, self.plan, self.chunks
        done_s = 0.0
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
        # (overlapping chunks repeat text: their text is sent once stitched)
        ordered = OrderedText(n, on_text, lambda: languages.joiner(language)) if on_text and not self.cuts else None
        extra = {k2: v for k2, v in req.extra.items() if k2 != "stream"}

        async def lane(indices: Iterable[int]) -> None:
            nonlocal language, done_s
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
                if progress is not None:
                    done_s += chunks[i].duration
                    progress(done_s)

        try:
            async with asyncio.TaskGroup() as tg:
                for it in lanes:
                    tg.create_task(lane(it))
        except BaseExceptionGroup as eg:
            first = _first_error(eg)
            raise first from None
        result = stitch(req, chunks, results, self.duration or 0.0, self.cuts)  # type: ignore[arg-type]
        if on_text is not None and self.cuts and result.transcript.text:
            on_text(result.transcript.text)
        return result

    # ---- upstream streaming ------------------------------------------------------------------------------
    def _streaming_candidate(self, req: TranscriptionRequest) -> Candidate | None:
        """The plan's first candidate when it can stream its text (an adapter with transcribe_stream)."""
        if req.task != "transcribe":
            return None
        c = self.plan.candidates[0]
        if c.endpoint.provider == "local" or not c.endpoint.capabilities.streaming:
            return None
        return c if hasattr(c.adapter, "transcribe_stream") else None

    async def _stream_upstream(self, req: TranscriptionRequest, audio: PreparedAudio, cand: Candidate,
                               on_text: TextSink) -> TranscriptionResult:
        """One streaming attempt on `cand` (Router.transcribe with stream=: timeout, breaker, attempt record).
        Once text has gone out nothing is retried; before that, a failure falls back to the plan's other
        providers, without streaming."""
        plan = self.plan.plan
        sent: list[str] = []

        def emit(d: str) -> None:
            if not sent:
                d = d.lstrip()
            if d:
                sent.append(d)
                on_text(d)

        route = plan.new_route()
        try:
            result = await self.router.transcribe(req, audio, plan=plan.only([cand]), stream=emit, route=route)
        except GatewayError as e:
            if sent or (e.status < 500 and e.status not in (408, 413, 429)) or not req.provider.allow_fallbacks:
                raise
            provider = cand.endpoint.provider.lower()
            others = [c for c in plan.cands if c.endpoint.provider.lower() != provider]
            if not others:
                raise
            hook = SegmentHook(asyncio.get_running_loop(), on_text)
            result = await self.router.transcribe(req, audio, hook, plan=plan.only(others))
            hook.finish(result.transcript.text)
            result.route.attempts[:0] = route.attempts
            return result
        final = result.transcript.text.strip()
        already = "".join(sent)
        if not already:
            emit(final)
        elif final.startswith(already) and len(final) > len(already):
            emit(final[len(already):])
        return result

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
        assert self.cache is not None
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
        assert self.cache is not None
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




async def transcribe(router: Router, req: TranscriptionRequest, settings: Any, *, field: str = "file",
                     cache: TranscriptCache | None = None, cache_mode: str = OFF, namespace: str = "",
                     on_text: TextSink | None = None,
                     progress: Progress | None = None) -> tuple[TranscriptionResult, dict[str, str]]:
    """The whole use case in one call (prepare, run, close): the result and the response headers
    (X-Audio-*, X-Cache, X-Chunks). For callers with no answer to start before the work (the CLI, batch
    work); the API prepares first so that every 4xx comes before its answer."""
    job = TranscriptionJob(router, req, field, settings, cache=cache, cache_mode=cache_mode, namespace=namespace)
    try:
        await job.prepare()
        result = await job.run(on_text, progress)
    finally:
        job.close()
    return result, job.headers
