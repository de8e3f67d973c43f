"""Long audio without holding it all in memory: decode any input to 16 kHz mono int16 PCM spilled to a
temporary file (2 bytes a sample, never float32 for the whole file), then choose cut points at silences
(Silero VAD, run only on the stretch where a cut may fall) so that every chunk fits a provider's limits
and no word is split between two chunks."""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import av
import numpy as np

from .decode import MonoResampler, WavLayout, decode_into
from .sniff import known, sniff

RATE = 16000
WAV_BYTES_PER_SECOND = RATE * 2


class PcmSpool:
    """Append-only int16 mono PCM at 16 kHz kept in an unlinked temporary file; slices are read back with
    pread, so memory stays flat however long the audio is."""

    def __init__(self, directory: str | None = None):
        self._f = tempfile.TemporaryFile(prefix="audiorouter-pcm-", dir=directory)  # noqa: SIM115 - closed by close()
        self._fd = self._f.fileno()
        self._lock = threading.Lock()
        self.n_samples = 0

    def append(self, pcm: np.ndarray) -> None:
        if pcm.dtype != np.int16:
            pcm = pcm.astype(np.int16)
        with self._lock:
            os.pwrite(self._fd, pcm.tobytes(), self.n_samples * 2)
            self.n_samples += len(pcm)

    def read(self, start: int, end: int) -> np.ndarray:
        start, end = max(0, start), min(end, self.n_samples)
        if end <= start:
            return np.zeros(0, np.int16)
        want = (end - start) * 2
        buf = bytearray(want)
        view = memoryview(buf)
        got = 0
        while got < want:  # pread may return less than asked
            n = os.preadv(self._fd, [view[got:]], start * 2 + got)
            if n <= 0:
                break
            got += n
        return np.frombuffer(buf, dtype=np.int16, count=got // 2)

    def read_float(self, start: int, end: int) -> np.ndarray:
        return s16_to_float(self.read(start, end))

    @property
    def duration(self) -> float:
        return self.n_samples / RATE

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass

    def __enter__(self) -> PcmSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def s16_to_float(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32)
    out *= np.float32(1.0 / 32768.0)  # in place: one float32 copy, not two
    return out


# ---- probing and streaming decode ----------------------------------------------------------------------
# The checks (demuxer whitelist, what counts as corrupt or truncated, the length limit, error wording) are
# those of audio/decode.py; only the destination differs: int16 in a spool instead of float32 in memory.
def probe_duration(data: bytes, declared: str | None = None) -> float | None:
    """The duration the container claims, without decoding (None when it does not say). Only an estimate:
    callers must still cope with audio that turns out longer."""
    from . import decode as dec
    return _probe(data, len(data), lambda: dec.wav_layout(data), data, declared)


def probe_file_duration(path: str | os.PathLike, declared: str | None = None) -> float | None:
    """probe_duration for audio in a file (its head and what the demuxer asks for are read, not the file)."""
    with open(path, "rb") as f:
        head, size = _file_head(f)
        return _probe(head, size, lambda: _file_wav_layout(head, size), f, declared)


def _probe(head: bytes, size: int, wav: Callable[[], WavLayout | None], source: bytes | BinaryIO,
           declared: str | None) -> float | None:
    from . import decode as dec
    detected = sniff(head, signatures_only=declared == "pcm")
    if detected is None and declared == "pcm":
        return size / WAV_BYTES_PER_SECOND
    if detected == "wav":
        layout = wav()  # PCM WAV: the header says it exactly, no demuxer needed
        if layout is not None:
            return layout.duration
    try:
        container = dec.open_raw(source, None)
    except (av.FFmpegError, ValueError, OSError, EOFError):
        return None
    try:
        if not container.streams.audio:
            return None
        return dec.declared_seconds(container, container.streams.audio[0])
    except (av.FFmpegError, ValueError, IndexError, OSError):
        return None
    finally:
        container.close()


class _SpoolWriter(MonoResampler):
    """int16 mono 16 kHz into the spool, ~10 s at a time."""

    sample_format = "s16"

    def __init__(self, spool: PcmSpool):
        super().__init__()
        self.spool = spool
        self._pending: list[np.ndarray] = []
        self._size = 0

    def _emit(self, samples: np.ndarray) -> None:
        self._pending.append(samples)
        self._size += len(samples)
        if self._size >= RATE * 10:
            self.drain()

    def flush(self) -> None:
        super().flush()
        self.drain()

    def drain(self) -> None:
        if self._pending:
            self.spool.append(np.concatenate(self._pending))
            self._pending, self._size = [], 0


HEAD_BYTES = 1024 * 1024  # of a file on disk: what sniffing (ID3 tag + 64 KiB of frames) and a RIFF header need


def _file_head(f: BinaryIO) -> tuple[bytes, int]:
    size = os.fstat(f.fileno()).st_size
    return os.pread(f.fileno(), min(size, HEAD_BYTES), 0), size


def _file_wav_layout(head: bytes, size: int) -> WavLayout | None:
    """wav_layout of a file of which only `head` was read: the frame count from the header and the file size."""
    from . import decode as dec
    layout = dec.wav_layout(head)
    if layout is None:
        return None
    declared = int.from_bytes(head[layout.offset - 4:layout.offset], "little")
    available = size - layout.offset
    n = available if declared in (0, 0xFFFFFFFF) or declared > available else declared
    return replace(layout, frames=n // layout.block_align)


def decode_to_spool(data: bytes, declared: str | None = None, *, field: str = "input_audio.data",
                    directory: str | None = None) -> tuple[PcmSpool, str]:
    """Decode any supported input to 16 kHz mono int16 in a PcmSpool, packet by packet. Returns the spool
    and the format it was decoded as. Bad input is a 400 naming `field`, as audio/decode.py words it."""
    from . import decode as dec
    mv = memoryview(data)
    return _to_spool(data, len(data), lambda off, n: mv[off:off + n], dec.wav_layout(data), data, declared, field,
                     directory)


def decode_file_to_spool(path: str | os.PathLike, declared: str | None = None, *, field: str = "file",
                         directory: str | None = None) -> tuple[PcmSpool, str]:
    """decode_to_spool for audio in a file: read a piece at a time (the demuxer reads the open file), never
    whole, so memory stays flat however big the file is."""
    with open(path, "rb") as f:
        head, size = _file_head(f)
        fd = f.fileno()
        return _to_spool(head, size, lambda off, n: os.pread(fd, n, off), _file_wav_layout(head, size), f,
                         declared, field, directory)


def _to_spool(head: bytes, size: int, piece: Callable[[int, int], Any], wav: WavLayout | None,
              source: bytes | BinaryIO, declared: str | None, field: str,
              directory: str | None) -> tuple[PcmSpool, str]:
    from . import decode as dec
    if not size:
        raise dec.bad_audio(field, "the audio is empty (0 bytes)")
    limit = dec.MAX_SECONDS
    detected = sniff(head, signatures_only=declared == "pcm")
    spool = PcmSpool(directory)
    step = RATE * 2 * 60
    try:
        if detected is None and declared == "pcm":  # headerless s16le, 16 kHz, mono: already what we keep
            usable = size - (size % 2)
            if usable == 0:
                raise dec.bad_audio(field, "the audio decodes to no samples (headerless pcm needs at least one "
                                      "16-bit sample)")
            if usable / 2 / RATE > limit:
                raise dec.too_long(field, usable / 2 / RATE, limit)
            for i in range(0, usable, step):
                spool.append(np.frombuffer(piece(i, min(step, usable - i)), dtype="<i2"))
            return spool, "pcm"
        layout = wav if detected == "wav" else None
        if layout is not None and layout.tag == 1 and layout.bits == 16 and layout.channels == 1 \
                and layout.rate == RATE and layout.frames:  # already 16 kHz mono s16: copy, no decoder
            if layout.duration > limit:
                raise dec.too_long(field, layout.duration, limit)
            total = layout.frames * 2
            for i in range(0, total, step):
                spool.append(np.frombuffer(piece(layout.offset + i, min(step, total - i)), dtype="<i2"))
            return spool, "wav"
        if detected is None and declared not in (None, "pcm", "mp3", "aac") and known(declared):
            raise dec.bad_audio(field, f"the bytes are not a {declared} file (no {declared} header) and not any other "
                                  "known audio format; if this is headerless 16 kHz 16-bit mono PCM, declare "
                                  "format pcm")
        fmt = _decode_into(source, detected, declared, spool, field, limit)
        return spool, fmt
    except BaseException:
        spool.close()
        raise


def _decode_into(data: bytes | BinaryIO, detected: str | None, declared: str | None, spool: PcmSpool, field: str,
                 limit: float) -> str:
    return decode_into(data, detected, declared, _SpoolWriter(spool), field, limit).format


@dataclass
class Chunk:
    index: int
    start: int  # samples
    end: int

    @property
    def offset(self) -> float:
        return self.start / RATE

    @property
    def duration(self) -> float:
        return (self.end - self.start) / RATE


MIN_GAP_S = 0.12   # the shortest pause worth preferring over an energy minimum


# Silero VAD (faster-whisper's model file and onnxruntime session), run the way faster_whisper.vad runs it and
# with the same numbers out, but VAD_BATCH steps per model call into one reused buffer: the model's working
# memory grows with the steps per call (a 72 s window in one call: ~33 MiB; 512 steps: ~7 MiB), its output
# does not depend on the split (its LSTM state is carried from call to call, as faster-whisper does past
# 10000 steps).
VAD_STEP = 512      # samples per VAD step at 16 kHz
VAD_CONTEXT = 64    # samples of the previous step prepended to each step
VAD_BATCH = 512     # steps per model call (~16 s)
VAD_THRESHOLD = 0.5
VAD_MIN_SILENCE = RATE * 100 // 1000  # VadOptions(min_silence_duration_ms=100, speech_pad_ms=30,
VAD_SPEECH_PAD = RATE * 30 // 1000    #            min_speech_duration_ms=100), as samples
VAD_MIN_SPEECH = RATE * 100 // 1000


def _vad_session():
    from faster_whisper.vad import get_vad_model  # loaded once per process (lru_cache), shared with local Whisper
    return get_vad_model().session


def load_vad() -> None:
    """Load the VAD and run it once (onnxruntime's first-run set-up), so the first long request does not pay
    for it: the server calls this at start-up when chunking can happen."""
    speech_probs(np.zeros(RATE, np.float32))


def speech_probs(window: np.ndarray) -> np.ndarray:
    """Speech probability of each 512-sample step of `window` (float32, 16 kHz), exactly as
    faster_whisper.vad.get_speech_timestamps computes them: the window zero-padded by 512 - len % 512 samples
    (a whole step when it divides evenly), the last step's last 64 samples zeroed, each step preceded by the
    64 samples before it (zeros for the first)."""
    session = _vad_session()
    n = len(window)
    steps = n // VAD_STEP + 1
    full = n // VAD_STEP  # steps made only of window samples; step `full` is the padded last one
    out = np.empty(steps, np.float32)
    buf = np.empty((min(VAD_BATCH, steps), VAD_CONTEXT + VAD_STEP), np.float32)
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    for s0 in range(0, steps, VAD_BATCH):
        s1 = min(s0 + VAD_BATCH, steps)
        b = buf[:s1 - s0]
        nf = min(s1, full) - s0  # rows of whole steps
        if nf > 0:
            b[:nf, VAD_CONTEXT:] = window[s0 * VAD_STEP:(s0 + nf) * VAD_STEP].reshape(nf, VAD_STEP)
        if s1 > full:  # the padded last step
            r, rest = full - s0, window[full * VAD_STEP:]
            b[r, VAD_CONTEXT:VAD_CONTEXT + len(rest)] = rest
            b[r, VAD_CONTEXT + len(rest):] = 0.0
            b[r, -VAD_CONTEXT:] = 0.0
        b[1:, :VAD_CONTEXT] = b[:-1, -VAD_CONTEXT:]
        b[0, :VAD_CONTEXT] = window[s0 * VAD_STEP - VAD_CONTEXT:s0 * VAD_STEP] if s0 else 0.0
        probs, h, c = session.run(None, {"input": b, "h": h, "c": c})
        out[s0:s1] = np.asarray(probs).reshape(-1)
    return out


def speech_spans(probs: np.ndarray, n: int) -> list[tuple[int, int]]:
    """faster_whisper.vad.get_speech_timestamps' speech segments (start, end samples) from the step
    probabilities, for this module's options (threshold 0.5, silence 100 ms, padding 30 ms, speech at least
    100 ms, no maximum length)."""
    neg = max(VAD_THRESHOLD - 0.15, 0.01)
    spans: list[list[int]] = []
    start: int | None = None
    temp_end = 0
    for i, p in enumerate(probs):  # numpy float32 scalars against Python floats, as faster-whisper compares
        pos = VAD_STEP * i
        if p >= VAD_THRESHOLD and temp_end:
            temp_end = 0
        if p >= VAD_THRESHOLD and start is None:
            start = pos
            continue
        if p < neg and start is not None:
            if not temp_end:
                temp_end = pos
            if pos - temp_end < VAD_MIN_SILENCE:
                continue
            if temp_end - start > VAD_MIN_SPEECH:
                spans.append([start, temp_end])
            start, temp_end = None, 0
    if start is not None and n - start > VAD_MIN_SPEECH:
        spans.append([start, n])
    for i, sp in enumerate(spans):  # padding, split evenly where two segments are closer than twice it
        if i == 0:
            sp[0] = max(0, sp[0] - VAD_SPEECH_PAD)
        if i != len(spans) - 1:
            nxt = spans[i + 1]
            silence = nxt[0] - sp[1]
            if silence < 2 * VAD_SPEECH_PAD:
                sp[1] += silence // 2
                nxt[0] = max(0, nxt[0] - silence // 2)
            else:
                sp[1] = min(n, sp[1] + VAD_SPEECH_PAD)
                nxt[0] = max(0, nxt[0] - VAD_SPEECH_PAD)
        else:
            sp[1] = min(n, sp[1] + VAD_SPEECH_PAD)
    return [(a, b) for a, b in spans]


def speech_seconds(window: np.ndarray) -> float:
    """How much of `window` (float32, 16 kHz) the VAD hears as speech, in seconds."""
    if len(window) < VAD_STEP:
        return 0.0
    return sum(b - a for a, b in speech_spans(speech_probs(window), len(window))) / RATE


def silence_gaps(window: np.ndarray) -> list[tuple[int, int]]:
    """Stretches without speech in `window` (float32, 16 kHz), as (start, end) sample offsets."""
    if len(window) < 512:
        return [(0, len(window))]
    gaps: list[tuple[int, int]] = []
    prev = 0
    for start, end in speech_spans(speech_probs(window), len(window)):
        if start > prev:
            gaps.append((prev, start))
        prev = max(prev, end)
    if prev < len(window):
        gaps.append((prev, len(window)))
    return gaps


def _quietest(window: np.ndarray, frame: int = 320) -> int:
    """Offset of the quietest 20 ms in the window (the later one on ties): the fallback cut when nobody
    pauses."""
    n = len(window) // frame
    if n == 0:
        return len(window) // 2
    energy = np.square(window[:n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1)
    i = n - 1 - int(np.argmin(energy[::-1]))
    return i * frame + frame // 2


def choose_cut(window: np.ndarray) -> int:
    """Where to cut inside `window`: the middle of the longest pause (the longer the pause, the likelier it
    is between sentences), later ones preferred a little (fuller chunks); else the quietest point."""
    gaps = silence_gaps(window)
    n = max(1, len(window))
    ok = [g for g in gaps if g[1] - g[0] >= MIN_GAP_S * RATE]
    if ok:
        a, b = max(ok, key=lambda g: (min(g[1] - g[0], 2 * RATE) * (0.75 + 0.25 * (g[0] + g[1]) / (2 * n)), g[0]))
        return (a + b) // 2
    return _quietest(window)


def plan_chunks(spool: PcmSpool, max_seconds: float, *, search_fraction: float = 0.4) -> list[Chunk]:
    """Cut the spool into chunks of at most `max_seconds`, each ending at a silence found in the last
    `search_fraction` of its allowed length."""
    total = spool.n_samples
    limit = max(1, int(max_seconds * RATE))
    chunks: list[Chunk] = []
    pos = 0
    while total - pos > limit:
        lo = pos + int(limit * (1.0 - search_fraction))
        hi = pos + limit
        window = spool.read_float(lo, hi)
        cut = lo + choose_cut(window)
        cut = min(max(cut, pos + 1), hi)
        chunks.append(Chunk(len(chunks), pos, cut))
        pos = cut
    chunks.append(Chunk(len(chunks), pos, total))
    return chunks
