"""Decode any supported input to 16 kHz mono float32 in memory (PyAV), and measure its duration.

The container is chosen by the bytes (sniff), never by the declared format, except for headerless PCM
(s16le, 16 kHz, mono), which has no signature and is decoded as such only when declared "pcm". Every way
input can be bad is an InvalidRequest (400) naming the request field: empty, not audio, no audio stream,
no samples, corrupt or truncated; too long is an AudioTooLong (413)."""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from ..core.errors import InvalidRequest, PayloadTooLarge
from .sniff import known, sniff

TARGET_RATE = 16000
PCM_RATE = 16000  # headerless "pcm" input: s16le, 16 kHz, mono

# The demuxers an upload may be opened with. Anything else (playlists, concat lists, image or subtitle
# formats...) is refused before it can open other files or URLs.
ALLOWED_DEMUXERS = ",".join([
    "wav", "w64", "mp3", "flac", "ogg", "matroska", "webm", "mov", "mp4", "m4a", "3gp", "3g2", "aac", "aiff",
    "asf", "amr", "amrnb", "amrwb", "caf", "au", "voc",
])
_FORCE = {  # canonical format -> demuxer to force when probing alone fails
    "wav": "wav", "mp3": "mp3", "flac": "flac", "ogg": "ogg", "opus": "ogg", "webm": "matroska", "m4a": "mp4",
    "mp4": "mp4", "aac": "aac", "aiff": "aiff", "asf": "asf", "amr": "amr", "caf": "caf",
}
# Decoded audio is held in memory as float32 (64 KB a second); refuse what would not fit comfortably.
MAX_SECONDS = float(os.environ.get("AUDIOROUTER_MAX_AUDIO_SECONDS", str(4 * 3600)))
# Up to this share of packets may fail to decode (a glitch, a cut last frame) before the file is refused.
MAX_BAD_PACKET_SHARE = 0.1

logging.getLogger("libav").setLevel(logging.ERROR)


@dataclass
class Decoded:
    samples: np.ndarray  # float32, mono, TARGET_RATE
    source_format: str
    source_rate: int | None = None
    source_channels: int | None = None
    decode_errors: int = 0  # packets that failed to decode and were skipped

    @property
    def duration(self) -> float:
        return len(self.samples) / TARGET_RATE


def bad_audio(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", param=field, code="invalid_audio")


def decode(data: bytes, declared: str | None = None, *, field: str = "input_audio.data",
           max_seconds: float | None = None) -> Decoded:
    """Decode by the bytes' real container; `declared` only matters for headerless PCM. Decoding stops with
    AudioTooLong as soon as more than `max_seconds` (default MAX_SECONDS) came out, whatever the header
    claimed: the float32 held is bounded by the limit, never by what the bytes say."""
    if not data:
        raise bad_audio(field, "the audio is empty (0 bytes)")
    limit = MAX_SECONDS if max_seconds is None else max_seconds
    detected = sniff(data, signatures_only=declared == "pcm")
    if detected is None and declared == "pcm":
        return _decode_pcm(data, field, limit)
    if detected is None and declared not in (None, "pcm") and known(declared) and declared not in ("mp3", "aac"):
        # every other known container starts with a signature: these bytes are not one
        raise bad_audio(field, f"the bytes are not a {declared} file (no {declared} header) and not any other "
                          "known audio format; if this is headerless 16 kHz 16-bit mono PCM, declare format pcm")
    return _decode_container(data, detected, declared, field, limit)


def _decode_pcm(data: bytes, field: str, limit: float) -> Decoded:
    usable = len(data) - (len(data) % 2)
    if usable == 0:
        raise bad_audio(field, "the audio decodes to no samples (headerless pcm needs at least one 16-bit sample)")
    if usable / 2 / PCM_RATE > limit:
        raise too_long(field, usable / 2 / PCM_RATE, limit)
    samples = np.frombuffer(data, dtype="<i2", count=usable // 2).astype(np.float32) * np.float32(1 / 32768)
    return Decoded(samples, "pcm", PCM_RATE, 1)


class AudioTooLong(PayloadTooLarge):
    """413: the audio (as decoded, or as its header says) is longer than `limit` seconds. Raised the moment
    decoding passes the limit, so no more than the limit is ever held."""

    def __init__(self, field: str, seconds: float, limit: float):
        super().__init__(f"{field}: the audio is longer than this server accepts ({seconds:.0f} s; the limit is "
                         f"{limit:.0f} s)", param=field, code="audio_too_long", metadata={"limit_seconds": limit})
        self.limit = limit


def too_long(field: str, seconds: float, limit: float) -> AudioTooLong:
    return AudioTooLong(field, seconds, limit)


def open_raw(data: bytes | BinaryIO, force: str | None):
    """The bytes, or an open binary file (read from its start: audio on disk is never read whole)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        src: BinaryIO = io.BytesIO(data)
    else:
        src = data
        src.seek(0)
    return av.open(src, mode="r", format=force, metadata_errors="ignore",
                   container_options={"format_whitelist": ALLOWED_DEMUXERS})


def open_container(data: bytes | BinaryIO, detected: str | None, what: str, field: str):
    """Open the bytes with an allowed demuxer, forcing the sniffed one when probing alone fails."""
    try:
        return open_raw(data, None)
    except (av.FFmpegError, ValueError, OSError, EOFError) as first:
        force = _FORCE.get(detected or "")
        if force is None:
            raise bad_audio(field, f"could not decode the audio as {what}: {_reason(first)}") from None
        try:
            return open_raw(data, force)
        except (av.FFmpegError, ValueError, OSError, EOFError) as e:
            raise bad_audio(field, f"could not decode the audio as {what}: {_reason(e)}") from None


def _decode_container(data: bytes, detected: str | None, declared: str | None, field: str,
                      limit: float) -> Decoded:
    out = _Mono16k()
    report = decode_into(data, detected, declared, out, field, limit)
    return Decoded(out.samples(), report.format, report.rate, report.channels, decode_errors=report.errors)


def _reason(e: BaseException | None) -> str:
    if isinstance(e, (av.error.EOFError, EOFError)):
        return "the data ends before any audio could be read (an empty or truncated file)"
    if isinstance(e, av.error.InvalidDataError):
        return "the data is not valid audio of that kind (corrupt, truncated or not audio at all)"
    if isinstance(e, av.error.PermissionError):
        return "this kind of file is not accepted as audio input"
    if e is None:
        return "no packet of it could be decoded"
    return e.__class__.__name__


class MonoResampler:
    """Resample frames of any format/layout/rate to mono 16 kHz (`sample_format` "flt" or "s16"), re-creating
    the resampler if the stream changes shape midway (concatenated mp3s do). Subclasses keep the output
    in `_emit`; `n` counts the samples emitted."""

    sample_format = "flt"

    def __init__(self) -> None:
        self._key: tuple[str, str, int] | None = None
        self._rs: av.AudioResampler | None = None
        self.n = 0

    def _emit(self, samples: np.ndarray) -> None:
        raise NotImplementedError

    def _take(self, frames) -> None:
        for out in frames:
            a = out.to_ndarray().reshape(-1)
            self.n += len(a)
            self._emit(a)

    def feed(self, frame: av.AudioFrame) -> None:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        rs = self._rs
        if rs is None or key != self._key:
            self.flush()
            self._rs = rs = av.AudioResampler(format=self.sample_format, layout="mono", rate=TARGET_RATE)
            self._key = key
        self._take(rs.resample(frame))

    def flush(self) -> None:
        if self._rs is not None:
            self._take(self._rs.resample(None))
            self._rs = None
            self._key = None


class _Mono16k(MonoResampler):
    """float32 mono 16 kHz, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[np.ndarray] = []

    def _emit(self, samples: np.ndarray) -> None:
        self.parts.append(samples)

    def samples(self) -> np.ndarray:
        if not self.parts:
            return np.zeros(0, np.float32)
        return np.concatenate(self.parts).astype(np.float32, copy=False)


@dataclass
class DecodeReport:
    format: str
    rate: int | None
    channels: int | None
    errors: int


def decode_into(data: bytes | BinaryIO, detected: str | None, declared: str | None, out: MonoResampler, field: str,
                limit: float) -> DecodeReport:
    """Demux and decode packet by packet into `out`, tolerating a few bad packets; every way the input can be
    bad (no audio stream, unknown codec, too long, no samples, corrupt, truncated) is a 400 naming `field`."""
    what = detected or (declared if known(declared) else None) or "any known audio format"
    container = open_container(data, detected, what, field)
    try:
        streams = container.streams.audio
        if not streams:
            raise bad_audio(field, "the file has no audio stream")
        stream = streams[0]
        try:
            rate, channels = stream.rate, stream.channels
        except AttributeError:  # PyAV has no codec context for it: an unknown codec or a corrupt header
            raise bad_audio(field, f"the audio codec of this {what} file is unknown or unsupported (corrupt header?)") \
                from None
        fmt = detected or _container_name(container)
        declared_s = declared_seconds(container, stream)
        if declared_s is not None and declared_s > limit * 1.05:
            raise too_long(field, declared_s, limit)
        packets = bad = 0
        demux_error: BaseException | None = None
        last_error: BaseException | None = None
        try:
            for packet in container.demux(stream):
                packets += 1
                try:
                    frames = packet.decode()
                except (av.FFmpegError, ValueError) as e:
                    bad += 1
                    last_error = e
                    continue
                for frame in frames:
                    out.feed(frame)
                if out.n > limit * TARGET_RATE:
                    raise too_long(field, out.n / TARGET_RATE, limit)
        except InvalidRequest:
            raise
        except (av.FFmpegError, ValueError, OSError, EOFError, IndexError) as e:  # the demuxer gave up
            demux_error = e
        try:
            out.flush()
        except (av.FFmpegError, ValueError):
            bad += 1
    finally:
        container.close()
    seconds = out.n / TARGET_RATE
    if out.n == 0:
        if bad or demux_error is not None:
            raise bad_audio(field, f"could not decode any audio as {what}: {_reason(demux_error or last_error)}")
        raise bad_audio(field, "the audio decodes to no samples (the file holds no sound)")
    errors = bad + (1 if demux_error is not None else 0)
    if errors:
        if bad > max(1, MAX_BAD_PACKET_SHARE * packets):
            raise bad_audio(field, f"the audio is corrupt: {bad} of {packets} packets could not be decoded")
        if declared_s and seconds < 0.9 * declared_s - 0.5:
            raise bad_audio(field, f"the audio is truncated or corrupt: the file says it lasts {declared_s:.2f} s "
                              f"but decoding stopped after {seconds:.2f} s")
    return DecodeReport(fmt, rate, channels, errors)


def declared_seconds(container, stream) -> float | None:
    try:
        if stream.duration is not None and stream.time_base is not None:
            s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            s = container.duration / 1_000_000
        else:
            return None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return s if 0 < s < 1e7 else None


def _container_name(container) -> str:
    name = container.format.name.split(",")[0]
    return {"matroska": "webm", "mov": "mp4", "w64": "wav", "amrnb": "amr", "amrwb": "amr"}.get(name, name)


# ---- fast path: PCM WAV measured from its header ------------------------------------------------------------
@dataclass(frozen=True)
class WavLayout:
    """Where the sample frames of a constant-frame-size WAV are, read from its RIFF header alone."""
    tag: int           # 1 PCM, 3 IEEE float, 6 A-law, 7 mu-law (WAVE_FORMAT_EXTENSIBLE resolved)
    rate: int
    channels: int
    bits: int
    block_align: int
    offset: int        # first byte of the data chunk's payload
    frames: int        # whole frames present (the header's size, capped at the bytes really there)

    @property
    def duration(self) -> float:
        return self.frames / self.rate


_FRAME_TAGS = {1, 3, 6, 7}


def wav_layout(data: bytes) -> WavLayout | None:
    """Parse a RIFF/WAVE header (fmt + data chunks) without decoding; None for anything that is not a plain
    frame-based WAV (ADPCM, odd chunk layouts, truncated headers): those take the full decoder."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    end = len(data)
    while pos + 8 <= end:
        cid = data[pos:pos + 4]
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > end:
                return None
            tag = int.from_bytes(data[body:body + 2], "little")
            channels = int.from_bytes(data[body + 2:body + 4], "little")
            rate = int.from_bytes(data[body + 4:body + 8], "little")
            block_align = int.from_bytes(data[body + 12:body + 14], "little")
            bits = int.from_bytes(data[body + 14:body + 16], "little")
            if tag == 0xFFFE and size >= 40 and body + 26 <= end:
                tag = int.from_bytes(data[body + 24:body + 26], "little")  # the sub-format GUID's first bytes
            fmt = (tag, channels, rate, block_align, bits)
        elif cid == b"data":
            if fmt is None:
                return None
            tag, channels, rate, block_align, bits = fmt
            if tag not in _FRAME_TAGS or not (0 < channels <= 32) or not (1000 <= rate <= 768000) \
                    or block_align != channels * ((bits + 7) // 8) or block_align == 0:
                return None
            available = end - body
            n = available if size in (0, 0xFFFFFFFF) or size > available else size  # streamed / truncated
            return WavLayout(tag, rate, channels, bits, block_align, body, n // block_align)
        if size == 0xFFFFFFFF:
            return None
        pos = body + size + (size & 1)
    return None


def wav_samples(data: bytes, layout: WavLayout) -> np.ndarray | None:
    """16 kHz mono float32 straight from 16-bit mono 16 kHz PCM (no resampling needed), else None."""
    if layout.tag != 1 or layout.bits != 16 or layout.channels != 1 or layout.rate != TARGET_RATE:
        return None
    pcm = np.frombuffer(data, dtype="<i2", count=layout.frames, offset=layout.offset)
    return pcm.astype(np.float32) * np.float32(1 / 32768)
