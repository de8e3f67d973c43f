"""Make input audio acceptable to one upstream endpoint: keep the client's bytes when the endpoint takes
that container and size, else re-encode the decoded 16 kHz mono samples into the most faithful format it
accepts that fits under its byte limit (FLAC, then MP3 at 32 kbit/s, then Ogg/Opus, then WAV). Encodings
are computed once per request (off the event loop) and reused by every attempt and retry."""
from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from ..core.audio import PreparedAudio
from ..core.errors import PayloadTooLarge
from .encode import to_s16_array, wav_header

RATE = 16000
MIME = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "opus": "audio/ogg",
    "webm": "audio/webm", "m4a": "audio/mp4", "mp4": "audio/mp4", "aac": "audio/aac", "mpeg": "audio/mpeg",
    "mpga": "audio/mpeg", "aiff": "audio/aiff", "amr": "audio/amr", "asf": "audio/x-ms-asf",
}
# A container the client sent, and the names an endpoint's input_formats may list it under.
_EQUIVALENT = {
    "opus": ("opus", "ogg"), "ogg": ("ogg",), "mp3": ("mp3", "mpeg", "mpga"), "mpeg": ("mpeg", "mp3", "mpga"),
    "mpga": ("mpga", "mp3", "mpeg"), "m4a": ("m4a", "mp4"), "mp4": ("mp4", "m4a"),
}
# Re-encoding targets, most faithful first.
_TARGETS = ("flac", "mp3", "ogg", "wav")


@dataclass(frozen=True)
class Upload:
    """Bytes to send upstream, with the container name and a filename whose extension matches it (OpenAI
    and others infer the format from the extension)."""
    data: bytes
    format: str
    filename: str
    mime: str
    converted: bool


def accepted_name(fmt: str | None, formats: Iterable[str] | None) -> str | None:
    """The name under which the endpoint accepts `fmt`, or None. Headerless PCM and unknown bytes are never
    sent as they are: an upstream could not tell their sample rate."""
    if not fmt or fmt == "pcm":
        return None
    if formats is None:
        return fmt
    allowed = set(formats)
    for name in _EQUIVALENT.get(fmt, (fmt,)):
        if name in allowed:
            return name
    return None


FRAME_SECONDS = 10  # encoder input per frame: only the encoded output is ever whole in memory


def encode_samples(samples: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """One file of mono samples (int16 as they are, or float32 in [-1, 1]), sized for upload (speech-grade
    bitrates). Converted and fed to the encoder FRAME_SECONDS at a time: besides the output, memory holds one
    frame's worth, whatever the length."""
    step = rate * FRAME_SECONDS
    n = len(samples)
    if fmt == "wav":
        return b"".join([wav_header(rate, n * 2),
                         *(to_s16_array(samples[i:i + step]).data for i in range(0, n, step))])
    container, codec, bitrate, out_rate = {
        "flac": ("flac", "flac", None, rate),
        "mp3": ("mp3", "libmp3lame", 32000, rate),
        "ogg": ("ogg", "libopus", 24000, 48000 if rate not in (8000, 12000, 16000, 24000, 48000) else rate),
    }[fmt]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream: av.AudioStream = out.add_stream(codec, rate=out_rate, layout="mono")  # type: ignore[assignment]
        if bitrate:
            stream.bit_rate = bitrate
        for i in range(0, n, step):
            frame = av.AudioFrame.from_ndarray(to_s16_array(samples[i:i + step]).reshape(1, -1), format="s16",
                                               layout="mono")
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def source_samples(audio: PreparedAudio) -> np.ndarray:
    """What to encode `audio` from: its int16 PCM where it keeps some (`pcm16`, 16 kHz mono: a chunk of long
    audio, jobs/transcription.py), else its float32 samples."""
    pcm = getattr(audio, "pcm16", None)
    return pcm if pcm is not None else audio.samples


def _cache(audio: PreparedAudio) -> dict[str, bytes]:
    cache: dict[str, bytes] | None = audio.__dict__.get("_ar_encodings")
    if cache is None:
        cache = audio.__dict__["_ar_encodings"] = {}
    return cache


async def encoded(audio: PreparedAudio, fmt: str) -> bytes:
    cache = _cache(audio)
    data = cache.get(fmt)
    if data is None:  # samples fetched in the thread too: lazily decoded audio decodes off the event loop
        data = await asyncio.to_thread(lambda: encode_samples(source_samples(audio), fmt))
        cache[fmt] = data
    return data


def _upload(data: bytes, fmt: str, converted: bool) -> Upload:
    ext = "ogg" if fmt == "opus" else fmt
    return Upload(data, fmt, f"audio.{ext}", MIME.get(fmt, "application/octet-stream"), converted)


async def for_endpoint(audio: PreparedAudio, input_formats: Iterable[str] | None,
                       max_bytes: int | None, *, field: str = "file", provider: str = "") -> Upload:
    """The upload for an endpoint with these accepted containers and byte limit."""
    formats = list(input_formats) if input_formats is not None else None
    name = accepted_name(audio.format, formats)
    if name is not None and (max_bytes is None or len(audio.data) <= max_bytes):
        return _upload(audio.data, name, False)
    tried: list[str] = []
    for target in _TARGETS:
        if accepted_name(target, formats) is None:
            continue
        data = await encoded(audio, target)
        tried.append(f"{target}={len(data)}")
        if max_bytes is None or len(data) <= max_bytes:
            return _upload(data, accepted_name(target, formats) or target, True)
    what = f"{provider} " if provider else ""
    raise PayloadTooLarge(
        f"{field}: the audio ({audio.duration:.1f} s) does not fit {what}endpoint's limit of {max_bytes} bytes "
        f"in any format it accepts ({', '.join(tried) or 'none it can take'})",
        param=field, metadata={"max_bytes": max_bytes, "provider_name": provider or None})


def describe(upload: Upload) -> dict[str, Any]:
    return {"format": upload.format, "bytes": len(upload.data), "converted": upload.converted}
