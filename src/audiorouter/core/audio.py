"""Audio as the layers above hand it to each other: `PreparedAudio` (input audio measured by the gateway),
`LazyAudio` (the same, with its bytes or samples made only when something asks) and `SpeechStream`
(synthesized audio as it is produced). Plain data: no decoding happens here."""
from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PreparedAudio:
    """Input audio, measured by the gateway: the original bytes and container, plus 16 kHz mono samples."""
    data: bytes
    format: str
    samples: np.ndarray
    duration: float


class LazyAudio(PreparedAudio):
    """PreparedAudio whose `data` and/or `samples` are made on first use (by the given functions, once, under a
    lock: the local engine and an upload may ask from two threads) and kept.

    Two uses: audio relayed upstream with its original bytes never pays for a decode (samples made from the
    bytes only if the local engine or a re-encode needs them); and a chunk of long audio kept as the 16 kHz
    mono int16 read from the spool (`pcm16`, its only copy), from which the raw s16le bytes (format "pcm")
    and the float32 samples are made when asked. Re-encoding for upload (audio/convert.py) reads `pcm16`
    directly, so a chunk costs its int16 and the encoded file, not four copies."""

    def __init__(self, fmt: str, duration: float, *, data: bytes | None = None,
                 make_data: Callable[[], bytes] | None = None,
                 make_samples: Callable[[], np.ndarray] | None = None,
                 pcm16: np.ndarray | None = None, label: str = "LazyAudio"):
        self._data = data
        self._samples: np.ndarray | None = None
        self._make_data = make_data
        self._make_samples = make_samples
        self._lock = threading.Lock()
        self.pcm16 = pcm16
        self._label = label
        self.format = fmt
        self.duration = duration

    @classmethod
    def from_pcm16(cls, pcm16: np.ndarray, duration: float, to_float: Callable[[np.ndarray], np.ndarray]) -> LazyAudio:
        """A chunk of 16 kHz mono int16 PCM: bytes (format "pcm") and float samples made from it on demand."""
        return cls("pcm", duration, make_data=lambda: pcm16.astype("<i2", copy=False).tobytes(),
                   make_samples=lambda: to_float(pcm16), pcm16=pcm16, label="ChunkAudio")

    @property
    def data(self) -> bytes:
        if self._data is None:
            with self._lock:
                if self._data is None:
                    if self._make_data is None:
                        raise AttributeError("data")
                    self._data = self._make_data()
        return self._data

    @data.setter
    def data(self, value: bytes | None) -> None:
        self._data = value

    @property
    def samples(self) -> np.ndarray:
        if self._samples is None:
            with self._lock:
                if self._samples is None:
                    if self._make_samples is None:
                        raise AttributeError("samples")
                    self._samples = self._make_samples()
        return self._samples

    @samples.setter
    def samples(self, value: np.ndarray | None) -> None:
        self._samples = value

    def made(self) -> tuple[bool, bool]:
        """Whether the bytes and the samples exist yet (without making them)."""
        return self._data is not None, self._samples is not None

    def __repr__(self) -> str:  # never build the bytes or decode (or print 25 MB) just to show the object
        if self.pcm16 is not None:
            return f"{self._label}(format={self.format!r}, samples={len(self.pcm16)}, duration={self.duration:.3f})"
        size = len(self._data) if self._data is not None else "?"
        return f"{self._label}(format={self.format!r}, bytes={size}, duration={self.duration:.3f})"

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__


@dataclass
class SpeechStream:
    """Synthesized audio as it is produced. encoding "f32": numpy float32 mono chunks at `rate`;
    otherwise bytes already encoded in that format (one of core.types.SPEECH_FORMATS)."""
    chunks: AsyncIterator[Any]
    encoding: str
    rate: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    words: list[Any] | None = None  # the provider's core.types.Word timings, if it gives them (complete once drained)
