"""Whisper through faster-whisper, in-process. Thread-safe: one model, `workers` concurrent decodes,
one CPU thread each (measured faster than several threads per request on small machines)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.types import Segment, Transcript, Word

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class WhisperEngine:
    def __init__(self, model_dir: Path, workers: int, beam_size: int = 5):
        self.model_dir = Path(model_dir)
        self.workers = workers
        self.beam_size = beam_size
        self._model = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel
                self._model = WhisperModel(str(self.model_dir), device="cpu", compute_type="int8",
                                           cpu_threads=1, num_workers=self.workers, local_files_only=True)
        return self._model

    def transcribe(self, samples: np.ndarray, *, task: str = "transcribe", language: str | None = None,
                   prompt: str | None = None, temperature: float | None = None, words: bool = False,
                   progress: Callable[[float], None] | None = None,
                   on_segment: Callable[[Segment], None] | None = None) -> Transcript:
        model = self.load()
        duration = len(samples) / 16000.0
        temps: float | list[float] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if not temperature else [float(temperature)]
        seg_iter, info = model.transcribe(
            samples, task=task, language=language, initial_prompt=prompt or None, temperature=temps,
            beam_size=self.beam_size, vad_filter=True, word_timestamps=words,
            condition_on_previous_text=False)
        segments: list[Segment] = []
        for s in seg_iter:
            seg = Segment(
                id=len(segments), start=round(float(s.start), 3), end=round(float(s.end), 3), text=s.text, seek=s.seek,
                tokens=list(s.tokens), temperature=float(s.temperature or 0.0), avg_logprob=float(s.avg_logprob),
                compression_ratio=float(s.compression_ratio), no_speech_prob=float(s.no_speech_prob),
                words=[Word(w.word.strip(), round(float(w.start), 3), round(float(w.end), 3), float(w.probability))
                       for w in (s.words or [])])
            segments.append(seg)
            if on_segment:
                on_segment(seg)
            if progress:
                progress(min(seg.end, duration))
        text = "".join(s.text for s in segments).strip()
        return Transcript(text=text, language=info.language, duration=duration, segments=segments, task=task)
