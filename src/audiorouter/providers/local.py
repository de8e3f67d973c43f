"""The built-in offline provider: Whisper base (transcription, translation) and hibari (speech), run in a
bounded worker pool off the event loop."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..core.errors import InvalidRequest
from ..core.types import SpeechRequest, Transcript, TranscriptionRequest
from .base import PreparedAudio, ProviderAdapter, SpeechStream
from .local_hibari import HibariEngine, bundled_voices
from .local_whisper import WhisperEngine
from .whisper_weights import ensure_whisper_base
from .workers import WorkerPool


class LocalProvider(ProviderAdapter):
    def __init__(self, slug, spec, settings):
        super().__init__(slug, spec, settings)
        self.pool = WorkerPool(settings.workers, settings.queue_size)
        self._whisper: WhisperEngine | None = None
        self.hibari = HibariEngine(settings.cache_dir)
        self.voices = bundled_voices()

    def available(self) -> bool:
        return True

    @property
    def whisper(self) -> WhisperEngine:
        if self._whisper is None:
            model_dir = self.settings.whisper_model_dir or ensure_whisper_base(self.settings.cache_dir)
            self._whisper = WhisperEngine(model_dir, self.settings.workers, self.settings.whisper_beam_size)
        return self._whisper

    async def start(self) -> None:
        if self.settings.preload:
            await asyncio.to_thread(self.whisper.load)
            await asyncio.to_thread(self.hibari.load, self.voices[0])

    async def aclose(self) -> None:
        self.pool.shutdown()

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint, options: dict[str, Any],
                         progress=None) -> Transcript:
        engine = self.whisper
        prompt = options.get("prompt", req.prompt)
        return await self.pool.run(lambda: engine.transcribe(
            audio.samples, task=req.task, language=options.get("language", req.language), prompt=prompt,
            temperature=options.get("temperature", req.temperature), words=req.want_words, progress=progress))

    async def synthesize(self, req: SpeechRequest, endpoint, voice: str, options: dict[str, Any]) -> SpeechStream:
        if voice not in self.voices:
            raise InvalidRequest(f"voice: {voice!r} is not available locally; choose one of {self.voices}",
                                 param="voice", metadata={"voices": self.voices})
        cancel = threading.Event()
        engine = self.hibari

        def produce(emit) -> None:
            for chunk in engine.stream(req.input, voice, req.speed, cancelled=cancel.is_set):
                emit(chunk)

        q = self.pool.submit_stream(produce)

        async def chunks():
            try:
                while True:
                    item = await q.get()
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                cancel.set()

        return SpeechStream(chunks(), "f32", engine.sample_rate)
