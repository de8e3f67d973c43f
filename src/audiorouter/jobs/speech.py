"""The speech use case: text in, one stream of audio in the requested format out.

Text longer than the candidates take (the smallest of their limits.max_characters and each adapter's own
max_input_characters: Deepgram's 2,000) is split at sentence boundaries (core.text.split_text: the one
splitter), the pieces synthesized in order (the next one started while the current one streams) and their
audio joined into one stream of one format; `encoded` turns the stream into the requested container as it
comes. The API's speech routes and the CLI go through here; the plan is made once and passed down."""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ..audio.encode import StreamEncoder, content_type
from ..audio.transcode import decode_native, transcode_stream
from ..core.audio import SpeechStream
from ..core.text import split_text
from ..core.types import SpeechRequest, Usage
from ..routing.pricing import estimate_text_tokens, speech_cost
from ..routing.router import Candidate, Plan, Route, Router, SpeechResult

__all__ = ["SpeechResult", "encoded", "media_type", "plan_speech", "speak", "speech_limit", "split_text"]


def plan_speech(router: Router, req: SpeechRequest) -> Plan:
    """The request's plan whatever its length (text over a limit is split to fit, so lengths are not checked)."""
    return router.plan(req, "speech", lengths=False)


def speech_limit(cands: list[Candidate]) -> int | None:
    """The most characters every one of `cands` takes in one call (None: no limit)."""
    limits = []
    for c in cands:
        if c.endpoint.limits.max_characters:
            limits.append(c.endpoint.limits.max_characters)
        own = c.adapter.max_input_characters(c.endpoint)
        if own:
            limits.append(own)
    return min(limits) if limits else None


def _as_plan(router: Router, req: SpeechRequest, cands: list[Candidate] | Plan | None) -> Plan:
    if cands is None:
        return plan_speech(router, req)
    if isinstance(cands, Plan):
        return cands
    # the candidates the caller already has (the ledger's estimate planned them): the Route template for them
    model = router.resolve(req.model, "speech")
    return Plan(list(cands), Route(model=model.id, ignored_params=router.ignored_params(req, cands[0].endpoint)))


async def speak(router: Router, req: SpeechRequest, cands: list[Candidate] | Plan | None = None) -> SpeechResult:
    """Speech for `req`, whatever its length. `cands`: the request's plan (or its candidates) whatever the
    text's length, when the caller has it already (e.g. from the cost estimate); planned here otherwise."""
    plan = _as_plan(router, req, cands)
    limit = speech_limit(plan.cands)
    if limit is None or len(req.input) <= limit or req.turns:  # (a dialogue in turns is one call, never split)
        return await router.speak(req, plan=plan)
    pieces = split_text(req.input, limit)
    # Pieces are joined as raw audio: ask for PCM where every candidate makes it (re-encoded once, as it
    # streams, into the requested format), else each piece is decoded and joined as samples.
    if all(c.endpoint.output_formats is None or "pcm" in c.endpoint.output_formats for c in plan.cands):
        req = dataclasses.replace(req, response_format="pcm")
    first = await router.speak(dataclasses.replace(req, input=pieces[0]), plan=plan)
    usage = dataclasses.replace(first.usage)
    usage.characters = len(req.input)
    if usage.input_tokens is not None:
        usage.input_tokens = estimate_text_tokens(req.input)
    # the total is not known until every piece is done; estimate from the first piece's price, settle later
    p = _pricing_of(router, first.route)
    if p is not None:
        usage.cost = speech_cost(p, usage)
    joined = JoinedSpeech(router, req, pieces, first, usage, plan)
    # word timings from the provider (timestamps "word"), each piece's offset by the audio before it
    stream = SpeechStream(joined.chunks(), joined.encoding, joined.rate,
                          words=[] if first.stream.words is not None else None)
    joined.stream = stream
    return SpeechResult(stream, joined.first_chunk, usage, first.route)


def _pricing_of(router: Router, route: Route) -> Any:
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
    pieces are decoded and joined as float samples (concatenated files would not be one valid file). Word
    timings the pieces came with are put on `stream` (the joined one), shifted by the audio before each piece;
    a piece without them (served by a provider that does not time words) leaves the joined stream without."""

    def __init__(self, router: Router, req: SpeechRequest, pieces: list[str], first: SpeechResult, usage: Usage,
                 plan: Plan):
        self.router, self.req, self.pieces, self.first, self.usage = router, req, pieces, first, usage
        self.plan = plan
        enc = first.stream.encoding
        self.passthrough = enc in ("f32", "pcm")
        self.encoding = enc if self.passthrough else "f32"
        self.rate = first.stream.rate
        self.first_chunk: Any = None  # the first piece's chunks are the start of chunks()
        self._costs = [first.usage]
        self.stream: SpeechStream | None = None
        self.emitted = 0  # bytes (pcm) or samples (f32) of the joined stream so far

    async def chunks(self) -> AsyncIterator[Any]:
        pending: asyncio.Task | None = None
        try:
            current = self.first
            for k in range(len(self.pieces)):
                if k + 1 < len(self.pieces):
                    nxt = dataclasses.replace(self.req, input=self.pieces[k + 1])
                    pending = asyncio.create_task(self.router.speak(nxt, plan=self.plan))
                base = self.emitted / self.rate / (2 if self.encoding == "pcm" else 1)
                async for c in self._normalized(current):
                    self.emitted += len(c)
                    yield c
                self._add_words(current, base)
                if pending is None:
                    break
                current = await pending
                pending = None
                self._costs.append(current.usage)
            self._settle()
        finally:
            if pending is not None:
                pending.cancel()

    def _add_words(self, piece: SpeechResult, base: float) -> None:
        joined = self.stream
        if joined is None or joined.words is None:
            return
        if piece.stream.words is None:
            joined.words = None
            return
        joined.words.extend(dataclasses.replace(w, start=round(w.start + base, 3), end=round(w.end + base, 3))
                            for w in piece.stream.words)

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
            n = max(1, round(len(samples) * self.rate / rate))
            samples = np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)),
                                samples).astype(np.float32)
        if self.encoding == "pcm":
            yield (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        else:
            yield samples.astype(np.float32, copy=False)


# ---- encoding ------------------------------------------------------------------------------------------
ENCODE_SLICE_S = 0.25  # seconds of audio per encoder call for mp3/opus/aac/flac output
FIRST_SLICE_S = 0.1  # the first call: enough for the first mp3/aac/opus packet (~1 ms of encoding, not ~3)


def _slices(n: int, rate: int, first: bool) -> list[tuple[int, int]]:
    step = max(1, int(rate * ENCODE_SLICE_S))
    out, i = [], 0
    if first and n > step:
        i = max(1, int(rate * FIRST_SLICE_S))
        out.append((0, i))
    while i < n:
        out.append((i, min(n, i + step)))
        i += step
    return out


async def encoded(result: SpeechResult, fmt: str) -> AsyncIterator[bytes]:
    stream = result.stream
    if stream.encoding == "f32":
        enc = StreamEncoder(fmt, stream.rate)
        # Compressed formats are fed a fraction of a second at a time (the very first slice smaller still):
        # the first bytes leave after a millisecond or two of encoding instead of a whole sentence's worth,
        # and the event loop is never held for long.
        sliced = fmt not in ("pcm", "wav")
        first = True
        async for chunk in result.chunks():
            if chunk is None or not len(chunk):
                continue
            if not sliced:
                yield enc.feed(chunk)
                continue
            for a, b in _slices(len(chunk), stream.rate, first):
                out = enc.feed(chunk[a:b])
                if out:
                    yield out
            first = False
        tail = enc.close()
        if tail:
            yield tail
    elif stream.encoding == fmt:
        async for chunk in result.chunks():
            if chunk:
                yield chunk
    else:
        async for chunk in transcode_stream(result.chunks(), stream.encoding, stream.rate, fmt):
            yield chunk


def media_type(result: SpeechResult, fmt: str) -> str:
    """The Content-Type of `encoded(result, fmt)` (raw PCM names its rate)."""
    return content_type(fmt, result.stream.rate)
