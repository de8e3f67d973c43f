"""Decode any supported input to 16 kHz mono float32 in memory (PyAV), and measure its duration."""
from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from ..core.errors import InvalidRequest
from .sniff import sniff

TARGET_RATE = 16000
PCM_RATE = 16000  # headerless "pcm" input: s16le, 16 kHz, mono


@dataclass
class Decoded:
    samples: np.ndarray  # float32, mono, TARGET_RATE
    source_format: str
    source_rate: int | None = None
    source_channels: int | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / TARGET_RATE


def decode(data: bytes, declared: str | None = None, *, field: str = "input_audio.data") -> Decoded:
    """Decode by the bytes' real container; `declared` only matters for headerless PCM."""
    if not data:
        raise InvalidRequest(f"{field}: the audio is empty", param=field)
    detected = sniff(data)
    if detected is None and declared in ("pcm", None):
        if len(data) % 2:
            data = data[:-1]
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if declared == "pcm":
            return Decoded(samples, "pcm", PCM_RATE, 1)
    try:
        return _decode_container(data, detected or declared or "unknown", field)
    except InvalidRequest:
        raise
    except (av.FFmpegError, ValueError, IndexError, StopIteration, EOFError, OSError) as e:
        raise InvalidRequest(f"{field}: could not decode the audio as {detected or declared or 'any known format'} ({e.__class__.__name__})",
                             param=field) from None


def _decode_container(data: bytes, fmt: str, field: str) -> Decoded:
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        streams = container.streams.audio
        if not streams:
            raise InvalidRequest(f"{field}: the file has no audio stream", param=field)
        stream = streams[0]
        rate, channels = stream.rate, stream.channels
        resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_RATE)
        parts: list[np.ndarray] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InvalidRequest(f"{field}: the audio decodes to no samples", param=field)
    return Decoded(samples.astype(np.float32, copy=False), fmt, rate, channels)
