"""The built-in offline provider: Whisper base (transcription, translation) and hibari (speech), run in a
bounded worker pool off the event loop."""
from __future__ import annotations

import asyncio
import logging
import math
import threading
from typing import Any

from ..core import languages
from ..core.audio import PreparedAudio, SpeechStream
from ..core.errors import InvalidRequest
from ..core.types import SpeechRequest, Transcript, TranscriptionRequest
from .base import ProviderAdapter
from .local_hibari import HibariEngine, bundled_voices
from .local_whisper import WhisperEngine
from .whisper_weights import ensure_whisper_base
from .workers import WorkerPool

log = logging.getLogger("audiorouter.local")

STT_BATCH = 8  # windows decoded together at most (AUDIOROUTER_WHISPER_BATCH_SIZE when settings has it)


def _stt_options(req: TranscriptionRequest,
                 options: dict[str, Any]) -> tuple[str | None, str | None, float | None, int | None]:
    """language, prompt, temperature and beam size for Whisper: the request's, overridden by
    provider.options.local (beam_size 1 to 10; 1 decodes greedily, as the voice-chat cascade does for speed); a
    wrong type or a language Whisper does not know is a 400, not an engine crash."""
    language = options.get("language", req.language)
    prompt = options.get("prompt", req.prompt)
    temperature = options.get("temperature", req.temperature)
    pre = "provider.options.local." if "language" in options else ""
    if language is not None and (not isinstance(language, str) or language not in languages.WHISPER_CODES):
        raise InvalidRequest(f"{pre}language: {str(language)[:40]!r} is not a language the local Whisper knows",
                             param=f"{pre}language")
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequest("provider.options.local.prompt: expected a string", param="provider.options.local.prompt")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 1):
        raise InvalidRequest("provider.options.local.temperature: expected a number between 0 and 1",
                             param="provider.options.local.temperature")
    beam = options.get("beam_size")
    if beam is not None and (isinstance(beam, bool) or not isinstance(beam, int) or not 1 <= beam <= 10):
        raise InvalidRequest("provider.options.local.beam_size: expected a whole number from 1 to 10",
                             param="provider.options.local.beam_size")
    return language, prompt, temperature, beam


def vad_options(strategy: Any) -> dict[str, Any] | None:
    """OpenAI's chunking_strategy as Silero VAD settings for the local Whisper: "auto" is what the engine does
    anyway (VAD-cut windows of <= 30 s); server_vad's threshold, silence_duration_ms and prefix_padding_ms
    become VadOptions' threshold, min_silence_duration_ms and speech_pad_ms."""
    if not isinstance(strategy, dict):
        return None
    out: dict[str, Any] = {}
    if strategy.get("threshold") is not None:
        out["threshold"] = float(strategy["threshold"])
    if strategy.get("silence_duration_ms") is not None:
        out["min_silence_duration_ms"] = int(strategy["silence_duration_ms"])
    if strategy.get("prefix_padding_ms") is not None:
        out["speech_pad_ms"] = int(strategy["prefix_padding_ms"])
    return out or None


def word_logprobs(t: Transcript) -> list[dict[str, Any]]:
    """include[]=logprobs from the local Whisper, in OpenAI's shape [{token, logprob, bytes}]: one entry per
    word, the log of faster-whisper's word probability (the mean of the probabilities of the word's tokens), so
    the "tokens" here are words, not BPE pieces."""
    out = []
    for w in t.words:
        p = w.probability if w.probability is not None else 1.0
        out.append({"token": w.word, "logprob": round(math.log(max(p, 1e-12)), 6), "bytes": list(w.word.encode())})
    return out


class LocalProvider(ProviderAdapter):
    def __init__(self, slug, spec, settings):
        super().__init__(slug, spec, settings)
        self.pool = WorkerPool(settings.workers, settings.queue_size)
        # Transcriptions wait in their thread for the Whisper engine's batch decoder (which does the compute),
        # so enough of them must be in flight at once to fill a batch.
        self.stt_batch = int(getattr(settings, "whisper_batch_size", 0) or STT_BATCH)
        self.stt_pool = WorkerPool(max(settings.workers, self.stt_batch), settings.queue_size, name="stt")
        self._whisper: WhisperEngine | None = None
        self.hibari = HibariEngine(settings.cache_dir)
        self.voices = bundled_voices()

    def available(self) -> bool:
        return True

    @property
    def whisper(self) -> WhisperEngine:
        if self._whisper is None:
            model_dir = self.settings.whisper_model_dir or ensure_whisper_base(self.settings.cache_dir)
            self._whisper = WhisperEngine(model_dir, self.settings.workers, self.settings.whisper_beam_size,
                                          batch_size=self.stt_batch)
        return self._whisper

    def engine_stats(self) -> dict[str, float]:
        """The Whisper engine's batch counters for /metrics (api/metrics.py); empty until it is loaded."""
        w = self._whisper
        return {} if w is None else {"batches": w.batches, "windows": w.windows, "waiting": w.waiting}

    async def start(self) -> None:
        if self.settings.preload:
            await asyncio.to_thread(self.whisper.load)
            # one synthesis and one encoding per output format now, so the first request does not pay for
            # onnxruntime's first runs, the G2P's caches, FFT plans and codec set-up (~30-40 ms)
            await asyncio.to_thread(self._warm_speech)
        if self.settings.preload if getattr(self.settings, "preload_llm", None) is None else self.settings.preload_llm:
            await asyncio.to_thread(self._warm_chat)

    def _warm_chat(self) -> None:
        """The voice-chat cascade's LLM loaded, and its system prompt in the model's cache (providers/
        local_chat.py); where the LLM is not installed, it stays off until a request asks for it (a 503)."""
        from .chat import chat_client
        from .local_llm import LLMUnavailable
        try:
            chat_client(self).warm_up()
        except LLMUnavailable as e:
            log.warning("local LLM not preloaded: %s", e.message)

    def _warm_speech(self) -> None:
        from ..audio.encode import warm_up
        self.hibari.warm_up(self.voices[0])
        warm_up(self.hibari.sample_rate)

    async def aclose(self) -> None:
        self.pool.shutdown()
        self.stt_pool.shutdown()
        self.hibari.close()

    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint, options: dict[str, Any],
                         progress=None) -> Transcript:
        engine = self.whisper
        language, prompt, temperature, beam = _stt_options(req, options)
        logprobs = "logprobs" in (req.extra.get("include") or ())
        vad = vad_options(req.extra.get("chunking_strategy"))
        cancel = threading.Event()
        try:
            t = await self.stt_pool.run(lambda: engine.transcribe(
                audio.samples, task=req.task, language=language, prompt=prompt,
                temperature=temperature, words=req.want_words or logprobs, progress=progress,
                on_segment=getattr(progress, "on_segment", None), cancelled=cancel.is_set, vad=vad,
                beam_size=beam))
        except asyncio.CancelledError:
            cancel.set()  # the caller is gone (client left, or a faster fallback won): stop the engine too
            raise
        if logprobs:
            t.logprobs = word_logprobs(t)
        return t

    async def synthesize(self, req: SpeechRequest, endpoint, voice: str, options: dict[str, Any]) -> SpeechStream:
        if voice not in self.voices:
            raise InvalidRequest(f"voice: {voice!r} is not available locally; choose one of {self.voices}",
                                 param="voice", metadata={"voices": self.voices})
        cancel = threading.Event()
        engine = self.hibari
        pool, stt_pool = self.pool, self.stt_pool

        # A second core may help this request's synthesis when no other local job runs and the event loop
        # will not be busy encoding its output (mp3, opus, aac and flac are encoded there as they stream).
        raw_out = req.response_format in ("pcm", "wav")

        def spare_core() -> bool:
            return raw_out and pool.running + stt_pool.running <= 1

        def produce(emit) -> None:
            for chunk in engine.stream(req.input, voice, req.speed, cancelled=cancel.is_set, spare_core=spare_core):
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
