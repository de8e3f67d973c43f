"""Speech with word timings (`timestamps: "word"`): the audio of jobs/speech.py plus each word's start and end.

Where the serving provider times the words itself (ElevenLabs' with-timestamps endpoints: adapters with
`speech_word_timestamps`, whose SpeechStream carries `words`) those are used, offset piece by piece when long
text was split (jobs/speech.JoinedSpeech). Everywhere else the audio is kept as it streams out and, once it is
complete, the local Whisper (the router's local provider, as for any transcription) transcribes it with word
timestamps, and audio/align.place_words lines what it heard up with the known text: the words returned are
always the text's own, in order, each with a start and an end (seconds from the start of the audio).
Measured on hibari output against a forced alignment of the known text: docs/speech.md."""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ..audio.align import known_words, place_words, speech_onset, to_16k
from ..audio.transcode import decode_native
from ..core.audio import PreparedAudio
from ..core.errors import InvalidRequest, UpstreamError
from ..core.types import Audio, SpeechRequest, TranscriptionRequest, Word
from ..routing.router import Candidate, Plan, Router
from .speech import SpeechResult, encoded, speak

__all__ = ["TimedSpeech", "align", "check_timings", "speak_timed"]

PROMPT_CHARS = 400  # text up to this long is also Whisper's prompt (its spelling of names and numbers)
ONSET_SLACK_S = 0.1  # a first word starting this far from the speech onset is moved to it


def _provider_timed(c: Candidate) -> bool:
    return bool(getattr(c.adapter, "speech_word_timestamps", False))


def check_timings(router: Router, req: SpeechRequest, cands: list[Candidate] | Plan | None) -> None:
    """A 400 naming `timestamps` when no candidate can time the words: none of them times its own speech and
    there is no local Whisper to align the audio with."""
    if req.timestamps != "word" or "local" in router.adapters:
        return
    cs = cands.cands if isinstance(cands, Plan) else cands
    if cs and all(_provider_timed(c) for c in cs):
        return
    raise InvalidRequest("timestamps: word timings need the local Whisper (to align the audio) or a provider "
                         "that times its own speech, and this server has neither for this model",
                         param="timestamps")


async def speak_timed(router: Router, req: SpeechRequest, cands: list[Candidate] | Plan | None = None) -> TimedSpeech:
    check_timings(router, req, cands)
    result = await speak(router, req, cands)
    return TimedSpeech(router, req, result)


class TimedSpeech:
    """A SpeechResult whose audio is also kept (as it streams out through `audio(fmt)`) so that `words()` can
    time the words once it is complete."""

    def __init__(self, router: Router, req: SpeechRequest, result: SpeechResult):
        self.router, self.req, self.result = router, req, result
        self.source: str | None = None  # "provider" or "aligned", once words() has run
        self.duration = 0.0
        self._kept: list[Any] = []
        if result.first is not None:
            self._keep(result.first)
        result.stream.chunks = self._tap(result.stream.chunks)

    @property
    def usage(self) -> Any:
        return self.result.usage

    def _keep(self, chunk: Any) -> None:
        if chunk is not None and len(chunk):
            self._kept.append(chunk)

    async def _tap(self, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for c in chunks:
            self._keep(c)
            yield c

    def audio(self, fmt: str) -> AsyncIterator[bytes]:
        return encoded(self.result, fmt)

    def _samples(self) -> tuple[np.ndarray, int]:
        """The audio as it came (f32 chunks, raw PCM or a compressed file): float32 mono and its rate."""
        enc, rate = self.result.stream.encoding, self.result.stream.rate
        if enc == "f32":
            return (np.concatenate(self._kept).astype(np.float32, copy=False) if self._kept
                    else np.zeros(0, np.float32)), rate
        raw = b"".join(self._kept)
        if enc == "pcm":
            return np.frombuffer(raw[:len(raw) - len(raw) % 2], dtype="<i2").astype(np.float32) / 32768.0, rate
        return decode_native(raw)

    async def words(self) -> list[Word]:
        """Every word of the input with its start and end; call once the audio has been read to its end."""
        samples, rate = await asyncio.to_thread(self._samples)
        self.duration = len(samples) / rate if rate else 0.0
        given = self.result.stream.words
        if given is not None and (given or not known_words(self.req.input)):
            self.source = "provider"
            return list(given)
        self.source = "aligned"
        return await align(self.router, samples, rate, self.req.input)


async def align(router: Router, samples: np.ndarray, rate: int, text: str) -> list[Word]:
    """`text`'s words timed in `samples` (float32 mono at `rate`) by the local Whisper."""
    local = router.adapters.get("local")
    if local is None:  # check_timings keeps such requests out; a provider that promised words sent none
        raise UpstreamError("timestamps: the provider sent no word timings and there is no local Whisper to "
                            "align the audio with", retryable=False)
    mono = await asyncio.to_thread(to_16k, samples, rate)
    duration = len(mono) / 16000.0
    words = known_words(text)
    if not words or not len(mono):
        return place_words(words, [], duration)
    treq = TranscriptionRequest(model="local", audio=Audio(b""), timestamp_granularities=["segment", "word"],
                                prompt=text if len(text) <= PROMPT_CHARS else None)
    heard = await local.transcribe(treq, PreparedAudio(b"", "pcm", mono, duration), None, {})  # type: ignore[attr-defined]
    out = place_words(words, heard.words, duration)
    # The first word begins where speech does: Whisper starts it at its (VAD-padded) window's start, i.e. in the
    # silence synthesized audio begins with, and faster-whisper shortens a first word it finds too long (over
    # twice the median word) from its start, so "Supercalifragilisticexpialidocious" would begin a second late.
    onset = speech_onset(mono, 16000)
    if out and onset is not None and abs(out[0].start - onset) > ONSET_SLACK_S and onset < out[0].end:
        out[0] = dataclasses.replace(out[0], start=round(onset, 3))
    return out

