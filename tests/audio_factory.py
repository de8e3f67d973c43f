"""Synthetic test audio in every input format, made in memory with PyAV from real dev clips (or any float32
samples, e.g. hibari output). Independent of audiorouter's own decoder/encoder, so tests of those are not
circular.

    samples = load_clip("jfk_inaugural_excerpt.flac")          # float32 mono 16 kHz
    data = make_audio(samples, "m4a")                          # bytes of an AAC-in-MP4 file
    duration_of(data)                                          # seconds, decoded back with PyAV
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import numpy as np

DEV_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "dev"
RATE = 16000

# format -> (muxer, codec, codec sample rate or None for the input's, channels)
CONTAINERS = {
    "wav": ("wav", "pcm_s16le", None, 1),
    "mp3": ("mp3", "libmp3lame", None, 1),
    "flac": ("flac", "flac", None, 1),
    "m4a": ("ipod", "aac", None, 1),        # AAC in an MP4 container with the M4A brand
    "mp4": ("mp4", "aac", None, 1),         # AAC in a plain MP4 (isom brand)
    "ogg": ("ogg", "vorbis", None, 2),      # Vorbis in Ogg (FFmpeg's native Vorbis encoder wants stereo)
    "opus": ("ogg", "libopus", 48000, 1),   # Opus in Ogg
    "webm": ("webm", "libopus", 48000, 1),  # Opus in WebM, as browsers' MediaRecorder makes it
    "aac": ("adts", "aac", None, 1),        # raw AAC with ADTS headers
    "aiff": ("aiff", "pcm_s16be", None, 1),
    "wav_u8": ("wav", "pcm_u8", None, 1),
    "wav_s24": ("wav", "pcm_s24le", None, 1),
    "wav_s32": ("wav", "pcm_s32le", None, 1),
    "wav_f32": ("wav", "pcm_f32le", None, 1),
    "wav_stereo": ("wav", "pcm_s16le", None, 2),
}
# The name a client would declare for each made format.
DECLARED = {k: k.split("_")[0] for k in CONTAINERS} | {"pcm": "pcm"}
FORMATS = ("wav", "mp3", "flac", "m4a", "mp4", "ogg", "opus", "webm", "aac", "pcm")


def load_clip(name: str | Path, rate: int = RATE) -> np.ndarray:
    """A dev clip (file name under shared/audio/dev, or a path) as float32 mono at `rate`."""
    path = Path(name) if Path(name).is_absolute() else DEV_AUDIO / name
    with av.open(str(path)) as c:
        return _resampled(c, rate)


def decode_bytes(data: bytes, rate: int | None = None) -> tuple[np.ndarray, int]:
    """Any container's bytes -> (float32 mono samples, rate). `rate` None keeps the stream's own rate."""
    with av.open(io.BytesIO(data)) as c:
        r = rate or c.streams.audio[0].rate
        return _resampled(c, r), r


def duration_of(data: bytes) -> float:
    samples, rate = decode_bytes(data)
    return len(samples) / rate


def _resampled(container, rate: int) -> np.ndarray:
    stream = container.streams.audio[0]
    rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
    parts = [f.to_ndarray().reshape(-1) for frame in container.decode(stream) for f in rs.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def make_audio(samples: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """Encode float32 mono `samples` at `rate` as `fmt` (a CONTAINERS key, or "pcm": headerless s16le at
    16 kHz mono). An empty `samples` gives a valid file holding no audio."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if fmt == "pcm":
        if rate != RATE:
            samples = resample(samples, rate, RATE)
        return to_s16(samples).tobytes()
    muxer, codec, codec_rate, channels = CONTAINERS[fmt]
    out_rate = codec_rate or rate
    layout = "stereo" if channels == 2 else "mono"
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=muxer) as out:
        stream = out.add_stream(codec, rate=out_rate, layout=layout)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        if not samples.size:
            out.start_encoding()  # header (and trailer) with no packets: a valid, empty file
        else:
            pcm = to_s16(samples)
            if channels == 2:  # a slightly different right channel, so it is real stereo
                right = to_s16(samples * 0.8)
                frame = av.AudioFrame.from_ndarray(np.stack([pcm, right]).T.reshape(1, -1).copy(), format="s16",
                                                   layout="stereo")
            else:
                frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            ctx = stream.codec_context
            rs = av.AudioResampler(format=ctx.format.name, layout=layout, rate=out_rate,
                                   frame_size=ctx.frame_size or None)
            for f in rs.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
            for f in rs.resample(None):
                for packet in stream.encode(f):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return buf.getvalue()


def empty_wav(rate: int = RATE) -> bytes:
    """A well-formed WAV header announcing 0 bytes of 16-bit mono samples."""
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
                       b"data", 0)


def to_s16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return samples
    n = round(len(samples) * dst / src)
    return np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def noise(seconds: float, level: float = 0.003, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Low white noise (about -50 dBFS at the default level): a quiet room with nobody speaking."""
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * level).astype(np.float32)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
