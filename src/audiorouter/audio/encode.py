"""Incremental encoding of float32 mono audio into the speech output formats, so bytes can be streamed as
soon as each chunk of audio exists. One encoder per response; feed() returns whatever bytes are ready."""
from __future__ import annotations

import struct
from fractions import Fraction

import av
import numpy as np

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
}
# container, codec, output sample rate (None = keep the source rate)
_CODECS = {
    "mp3": ("mp3", "libmp3lame", None),
    "flac": ("flac", "flac", None),
    "opus": ("ogg", "libopus", 48000),
    "aac": ("adts", "aac", None),
}


def content_type(fmt: str, rate: int) -> str:
    if fmt == "pcm":
        return f"audio/pcm;rate={rate};channels=1"
    return CONTENT_TYPES[fmt]


def to_s16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(rate: int, data_bytes: int | None = None) -> bytes:
    """A 16-bit mono WAV header; with unknown length (streaming) the sizes are 0xFFFFFFFF as OpenAI does."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
                       b"data", size)


class _Sink:
    """A write-only, non-seekable file for PyAV: muxers then write streamable output."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, b) -> int:
        self.buf += b
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class StreamEncoder:
    def __init__(self, fmt: str, rate: int, *, known_length: int | None = None):
        self.fmt, self.rate = fmt, rate
        self._header_sent = False
        self._known_length = known_length
        self._pts = 0
        self._muxed = False
        if fmt in ("pcm", "wav"):
            return
        container_fmt, codec, out_rate = _CODECS[fmt]
        self._sink = _Sink()
        self._out = av.open(self._sink, mode="w", format=container_fmt,
                            options={"page_duration": "100000"} if container_fmt == "ogg" else None)
        self._stream: av.AudioStream = self._out.add_stream(codec, rate=out_rate or rate, layout="mono")  # type: ignore[assignment]
        if fmt == "mp3":
            self._stream.bit_rate = 64000 if rate <= 24000 else 128000
        elif fmt == "aac":
            self._stream.bit_rate = 64000
        elif fmt == "opus":
            self._stream.bit_rate = 32000
        self._resampler = None
        self._out_rate = out_rate or rate

    def feed(self, samples: np.ndarray) -> bytes:
        if self.fmt == "pcm":
            return to_s16(samples)
        if self.fmt == "wav":
            head = b""
            if not self._header_sent:
                self._header_sent = True
                head = wav_header(self.rate, self._known_length)
            return head + to_s16(samples)
        if samples.size == 0:
            return b""
        frame = av.AudioFrame.from_ndarray(to_s16_array(samples).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.rate)
        self._pts += samples.size
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
            self._muxed = True
        return self._sink.take()

    def close(self) -> bytes:
        if self.fmt == "pcm":
            return b""
        if self.fmt == "wav":
            return b"" if self._header_sent else wav_header(self.rate, self._known_length or 0)
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        if not self._muxed:  # no audio at all: still a valid (empty) file, not zero bytes
            self._out.start_encoding()
        self._out.close()
        return self._sink.take()


def to_s16_array(samples: np.ndarray) -> np.ndarray:
    """Little-endian int16: int16 input as it is (no copy when already contiguous), float32 in [-1, 1]
    clipped and scaled by 32767."""
    if samples.dtype.kind == "i" and samples.dtype.itemsize == 2:
        return np.ascontiguousarray(samples, dtype="<i2")
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def encode_all(samples: np.ndarray, fmt: str, rate: int) -> bytes:
    enc = StreamEncoder(fmt, rate, known_length=samples.size * 2 if fmt == "wav" else None)
    return enc.feed(samples) + enc.close()


def warm_up(rate: int) -> None:
    """Encode a moment of silence in every compressed format once (codec and muxer set-up, first-call
    allocations), so the first request of each format does not pay for it."""
    silence = np.zeros(rate // 10, np.float32)
    for fmt in _CODECS:
        encode_all(silence, fmt, rate)
