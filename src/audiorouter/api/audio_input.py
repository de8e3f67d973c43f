"""Sniff and decode request audio off the event loop, and say when the declared format was wrong.

Response headers: X-Audio-Format-Detected (what the bytes were decoded as), X-Audio-Format-Mismatch (only
when the declared format disagrees with the bytes: "declared X, decoded as Y") and X-Audio-Decode-Errors
(packets skipped as corrupt, when any)."""
from __future__ import annotations

import asyncio
import threading

import numpy as np

from ..audio.decode import MAX_SECONDS, decode, wav_layout, wav_samples
from ..audio.sniff import agrees, sniff
from ..core.types import Audio
from ..providers.base import PreparedAudio


class LazyPreparedAudio(PreparedAudio):
    """PreparedAudio whose duration came from the container header (exact for PCM WAV) and whose 16 kHz
    samples are only computed when something needs them (the local engine, re-encoding, chunking): a request
    relayed upstream with its original bytes never pays for a decode."""

    def __init__(self, data: bytes, fmt: str, duration: float, field: str):
        self._samples: np.ndarray | None = None
        self._field = field
        self._lock = threading.Lock()
        super().__init__(data, fmt, None, duration)  # type: ignore[arg-type]

    @property
    def samples(self) -> np.ndarray:  # type: ignore[override]
        if self._samples is None:
            with self._lock:
                if self._samples is None:
                    layout = wav_layout(self.data)
                    fast = wav_samples(self.data, layout) if layout is not None else None
                    self._samples = fast if fast is not None else decode(self.data, "wav", field=self._field).samples
        return self._samples

    @samples.setter
    def samples(self, value: np.ndarray | None) -> None:
        self._samples = value

    def __repr__(self) -> str:  # never decode (or print 25 MB) just to show the object
        return f"LazyPreparedAudio(format={self.format!r}, bytes={len(self.data)}, duration={self.duration:.3f})"


def _prepare_wav(audio: Audio, field: str, max_seconds: float) -> tuple[PreparedAudio, dict[str, str]] | None:
    layout = wav_layout(audio.data)  # frames counted from the bytes really there, not the header's size
    if layout is None or layout.frames == 0 or layout.duration > max_seconds:
        return None  # the full decoder gives the precise error or handles the odd layout
    audio.detected_format = "wav"
    headers = {"X-Audio-Format-Detected": "wav"}
    if audio.declared_format and not agrees(audio.declared_format, "wav"):
        headers["X-Audio-Format-Mismatch"] = f"declared {audio.declared_format}, decoded as wav"
    return LazyPreparedAudio(audio.data, "wav", round(layout.duration, 3), field), headers


def format_headers(audio: Audio) -> dict[str, str]:
    """The format headers from the bytes' signature alone (no decode), for answers that skip decoding
    (a transcript cache hit)."""
    detected = sniff(audio.data, signatures_only=audio.declared_format == "pcm")
    if detected is None and audio.declared_format == "pcm":
        detected = "pcm"
    if detected is None:
        return {}
    headers = {"X-Audio-Format-Detected": detected}
    if audio.declared_format and not agrees(audio.declared_format, detected):
        headers["X-Audio-Format-Mismatch"] = f"declared {audio.declared_format}, decoded as {detected}"
    return headers


async def prepare(audio: Audio, field: str, max_seconds: float | None = None) -> tuple[PreparedAudio, dict[str, str]]:
    """Decode the whole input in memory (float32). More than `max_seconds` (default the server's limit) is
    an AudioTooLong raised as soon as decoding passes it: a header's claim is never trusted."""
    if audio.data[:4] == b"RIFF":
        fast = _prepare_wav(audio, field, MAX_SECONDS if max_seconds is None else max_seconds)
        if fast is not None:
            return fast
    decoded = await asyncio.to_thread(decode, audio.data, audio.declared_format, field=field,
                                      max_seconds=max_seconds)
    used = decoded.source_format
    audio.detected_format = used
    headers: dict[str, str] = {"X-Audio-Format-Detected": used}
    if audio.declared_format and not agrees(audio.declared_format, used):
        headers["X-Audio-Format-Mismatch"] = f"declared {audio.declared_format}, decoded as {used}"
    if decoded.decode_errors:
        headers["X-Audio-Decode-Errors"] = str(decoded.decode_errors)
    # measured to the millisecond, the unit usage.seconds reports: cost = price x the seconds the client sees
    return PreparedAudio(audio.data, used, decoded.samples, round(decoded.duration, 3)), headers
