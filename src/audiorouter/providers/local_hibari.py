"""hibari TTS, in-process: float32 mono at 24 kHz, one chunk per sentence (and the first sentence split
further so the first audio leaves quickly)."""
from __future__ import annotations

import json
import os
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


def bundled_voices() -> list[str]:
    """Only voices whose weights ship inside the package; the others would be downloaded and fail offline."""
    with open(Path(str(resources.files("hibari"))) / "assets" / "voices.json", encoding="utf-8") as f:
        voices = json.load(f)
    return [name for name, v in voices.items() if v.get("bundled")]


class HibariEngine:
    sample_rate = 24000

    def __init__(self, cache_dir: Path, threads: int = 1):
        os.environ.setdefault("HIBARI_HOME", str(Path(cache_dir) / "hibari"))
        self.threads = threads
        self._tts: dict[str, object] = {}
        self._lock = threading.Lock()

    def load(self, voice: str = "heart"):
        with self._lock:
            tts = self._tts.get(voice)
            if tts is None:
                from hibari import Hibari
                tts = Hibari(voice=voice, threads=self.threads)
                tts.g2p  # noqa: B018 - load the G2P now, not on the first sentence
                self._tts[voice] = tts
            return tts

    def stream(self, text: str, voice: str = "heart", speed: float = 1.0,
               cancelled: Callable[[], bool] = lambda: False) -> Iterator[np.ndarray]:
        tts = self.load(voice)
        model_speed = float(min(max(speed, 0.5), 2.0))
        rest = 1.0 if model_speed == speed else speed / model_speed
        for piece in speech_pieces(text, tts.split_sentences):
            for ps in tts.phonemize(piece):  # one sentence at a time: the first is not held up by the rest
                if cancelled():
                    return
                audio = tts.from_ids(tts.ids(ps), model_speed)
                if rest != 1.0:
                    audio = _time_scale(audio, rest)
                yield audio.astype(np.float32, copy=False)


FIRST_PIECE_CHARS = 60  # a first sentence longer than this is split at clause punctuation (time to first audio)
_CLAUSE_BREAK = re.compile(r"(?<=[,;:—–])\s+")
_FUNCTION_WORD = re.compile(r"\s(?=(?:and|but|or|so|because|which|that|when|while|where|who|if|although)\s)", re.I)


def speech_pieces(text: str, split_sentences: Callable[[str], list[str]]) -> Iterator[str]:
    """Sentences in order, the first one cut short when it is long: synthesis time grows with length, so
    the first audio leaves after one clause instead of one long sentence."""
    sentences = split_sentences(text)
    if not sentences:
        return
    first = sentences[0]
    if len(first) > FIRST_PIECE_CHARS:
        head, tail = _first_clause(first)
        if tail:
            yield head
            first = tail
    yield first
    yield from sentences[1:]


def _first_clause(sentence: str) -> tuple[str, str]:
    """(first clause of at least ~20 characters, the rest); ("sentence", "") when it has no good break."""
    for m in _CLAUSE_BREAK.finditer(sentence):
        if m.start() >= 20:
            if m.start() > 2 * FIRST_PIECE_CHARS:
                break
            return sentence[:m.start()], sentence[m.end():]
    for m in _FUNCTION_WORD.finditer(sentence):  # no comma early on: break before a conjunction
        if 25 <= m.start() <= 2 * FIRST_PIECE_CHARS:
            return sentence[:m.start()], sentence[m.end():]
    return sentence, ""


def _time_scale(x: np.ndarray, factor: float) -> np.ndarray:
    """Speed beyond the model's range: resample (changes pitch a little, keeps it intelligible)."""
    n = max(1, int(round(len(x) / factor)))
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)
