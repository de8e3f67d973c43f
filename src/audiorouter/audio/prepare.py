"""Request audio made ready for a transcription: sniffed and decoded off the event loop, and the response
headers that say what it turned out to be.

Headers: X-Audio-Format-Detected (what the bytes were decoded as), X-Audio-Format-Mismatch (only when the
declared format disagrees with the bytes: "declared X, decoded as Y") and X-Audio-Decode-Errors (packets
skipped as corrupt, when any). `format_headers` is the one place they are built."""
from __future__ import annotations

import asyncio

from ..core.audio import LazyAudio, PreparedAudio
from ..core.types import Audio
from .decode import MAX_SECONDS, decode, wav_layout, wav_samples
from .sniff import agrees, sniff


def format_headers(declared: str | None, detected: str, decode_errors: int = 0) -> dict[str, str]:
    """X-Audio-Format-Detected, X-Audio-Format-Mismatch when `declared` disagrees, X-Audio-Decode-Errors."""
    headers = {"X-Audio-Format-Detected": detected}
    if declared and not agrees(declared, detected):
        headers["X-Audio-Format-Mismatch"] = f"declared {declared}, decoded as {detected}"
    if decode_errors:
        headers["X-Audio-Decode-Errors"] = str(decode_errors)
    return headers


def sniffed_format_headers(audio: Audio) -> dict[str, str]:
    """The format headers from the bytes' signature alone (no decode), for answers that skip decoding
    (a transcript cache hit)."""
    detected = sniff(audio.data, signatures_only=audio.declared_format == "pcm")
    if detected is None and audio.declared_format == "pcm":
        detected = "pcm"
    if detected is None:
        return {}
    return format_headers(audio.declared_format, detected)


def _wav_decoder(data: bytes, field: str):
    def make():
        layout = wav_layout(data)
        fast = wav_samples(data, layout) if layout is not None else None
        return fast if fast is not None else decode(data, "wav", field=field).samples
    return make


def _prepare_wav(audio: Audio, field: str, max_seconds: float) -> tuple[PreparedAudio, dict[str, str]] | None:
    """PCM WAV: the duration from the header (frames counted from the bytes really there, not the header's
    size), the 16 kHz samples only made when something needs them (the local engine, re-encoding): a request
    relayed upstream with its original bytes never pays for a decode."""
    layout = wav_layout(audio.data)
    if layout is None or layout.frames == 0 or layout.duration > max_seconds:
        return None  # the full decoder gives the precise error or handles the odd layout
    audio.detected_format = "wav"
    lazy = LazyAudio("wav", round(layout.duration, 3), data=audio.data,
                     make_samples=_wav_decoder(audio.data, field), label="LazyPreparedAudio")
    return lazy, format_headers(audio.declared_format, "wav")


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
    headers = format_headers(audio.declared_format, used, decoded.decode_errors)
    # measured to the millisecond, the unit usage.seconds reports: cost = price x the seconds the client sees
    return PreparedAudio(audio.data, used, decoded.samples, round(decoded.duration, 3)), headers
