"""Memory of chunked transcription (jobs/transcription.py chunk_audio, core/audio.py LazyAudio, audio/convert.py encode_samples,
audio/chunking.py's VAD), checked to change nothing that is sent: the same cut points as faster-whisper's own
VAD gives, the same encodings from float32 samples, and chunk uploads that decode back to the spool's samples.
In-process, no server."""
from __future__ import annotations

import asyncio
import io
import json
import os
import tracemalloc

import av
import numpy as np
import pytest

from audio_factory import load_clip
from audiorouter.audio import chunking
from audiorouter.audio.chunking import PcmSpool, plan_chunks, s16_to_float
from audiorouter.audio.convert import encode_samples, for_endpoint
from audiorouter.audio.encode import wav_header
from audiorouter.core.audio import PreparedAudio
from audiorouter.jobs.transcription import chunk_audio, chunking_possible
from conftest import DEV_AUDIO, slow_except

RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~5.5 minutes of int16 speech: dev clips end to end (with their own pauses, no added silence)."""
    with open(DEV_AUDIO / "manifest.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = sorted((r for r in rows if r.get("language") == "en" and r["duration_s"] <= 60), key=lambda r: r["file"])
    parts, n = [], 0
    for r in rows:
        x = load_clip(r["file"])
        parts.append(x)
        n += len(x)
        if n >= 330 * RATE:
            break
    x = np.concatenate(parts)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def _decode_s16(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        out = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
    x = np.concatenate(out)
    assert x.dtype == np.int16, x.dtype  # FLAC decodes to s16: compare samples exactly
    return x


# ---- the VAD: same numbers as faster-whisper, less working memory ------------------------------------------
def _reference_gaps(window: np.ndarray) -> list[tuple[int, int]]:
    """silence_gaps as it was: faster-whisper's get_speech_timestamps over the whole window at once."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps
    if len(window) < 512:
        return [(0, len(window))]
    speech = get_speech_timestamps(window.copy(), VadOptions(min_silence_duration_ms=100, speech_pad_ms=30,
                                                             min_speech_duration_ms=100))
    gaps, prev = [], 0
    for s in speech:
        if s["start"] > prev:
            gaps.append((prev, s["start"]))
        prev = max(prev, s["end"])
    if prev < len(window):
        gaps.append((prev, len(window)))
    return gaps


@pytest.mark.parametrize("n", slow_except([512 * 300, 512 * 300 + 470, 512 * 2250 + 10, 72 * RATE, 513, 40 * RATE + 77],
                                          512 * 300 + 470, 513))
def test_vad_probabilities_and_gaps_match_faster_whisper(speech, n):
    from faster_whisper.vad import get_vad_model
    start = 37 * RATE + 123
    w = s16_to_float(speech[start:start + n])
    ref = get_vad_model()(np.pad(w.copy(), (0, 512 - n % 512)))
    assert np.array_equal(chunking.speech_probs(w), ref)
    assert chunking.silence_gaps(w) == _reference_gaps(w)
    quiet = w * np.float32(0.05)  # speech near the threshold: other decisions, still the same
    assert chunking.silence_gaps(quiet) == _reference_gaps(quiet)


@pytest.mark.slow  # the VAD over 5.5 minutes, twice per limit
@pytest.mark.parametrize("limit_s", [180.0, 20.0])
def test_chunk_boundaries_unchanged(speech, limit_s, monkeypatch):
    with PcmSpool() as spool:
        spool.append(speech)
        new = plan_chunks(spool, limit_s)
        monkeypatch.setattr(chunking, "silence_gaps", _reference_gaps)
        old = plan_chunks(spool, limit_s)
    assert [(c.start, c.end) for c in new] == [(c.start, c.end) for c in old]
    assert len(new) >= 2 and new[-1].end == len(speech)


def test_vad_batches_share_one_small_buffer(speech):
    """The only array the VAD wrapper allocates per call is one batch: not a copy of the window."""
    w = s16_to_float(speech[:72 * RATE])
    chunking.load_vad()
    tracemalloc.start()
    try:
        chunking.speech_probs(w)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 2**20, peak  # one 512 x 576 float32 buffer (1.2 MB) + probabilities; the window is 4.6 MB


# ---- encoding: frames of 10 s, the same files ---------------------------------------------------------------
def _old_encode(samples: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """encode_samples as it was: the whole input converted at once and given to the encoder as one frame."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    if fmt == "wav":
        return wav_header(rate, pcm.nbytes) + pcm.tobytes()
    container, codec, bitrate = {"flac": ("flac", "flac", None), "mp3": ("mp3", "libmp3lame", 32000),
                                 "ogg": ("ogg", "libopus", 24000)}[fmt]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        if bitrate:
            stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for p in stream.encode(frame):
            out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_float_encodings_unchanged(speech, fmt):
    x = s16_to_float(speech[:25 * RATE + 333]) * np.float32(1.2)  # some samples past full scale: clipped alike
    new, old = encode_samples(x, fmt), _old_encode(x, fmt)
    if fmt == "ogg":  # Ogg streams get a random serial number: compare what they decode to
        from audiorouter.audio.transcode import decode_native
        assert np.array_equal(decode_native(new)[0], decode_native(old)[0])
    else:
        assert new == old


def test_int16_encodes_exactly(speech):
    pcm = speech[:31 * RATE + 5]
    assert encode_samples(pcm, "wav") == wav_header(RATE, pcm.nbytes) + pcm.tobytes()
    assert np.array_equal(_decode_s16(encode_samples(pcm, "flac")), pcm)


def test_flac_from_int16_holds_little_but_the_output(speech):
    pcm = speech[:180 * RATE]
    encode_samples(pcm[:RATE], "flac")  # codec set-up outside the measurement
    tracemalloc.start()
    try:
        out = encode_samples(pcm, "flac")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the output (grown in place, then returned) and one 10 s frame; the old path converted the whole chunk
    # through float32 first: ~23 MB more for 180 s
    assert peak < 2.5 * len(out) + 2 * 2**20, (peak, len(out))


# ---- chunk audio -------------------------------------------------------------------------------------------
def _old_chunk_audio(pcm: np.ndarray, duration: float) -> PreparedAudio:
    return PreparedAudio(pcm.tobytes(), "pcm", pcm.astype(np.float32) * np.float32(1.0 / 32768.0), duration)


def test_chunk_audio_is_lazy_and_equal(speech):
    pcm = speech[:12 * RATE]
    a = chunk_audio(pcm, 12.0)
    assert a.made() == (False, False)
    assert "ChunkAudio" in repr(a) and a.made() == (False, False)  # showing it makes nothing either
    old = _old_chunk_audio(pcm, 12.0)
    assert a.format == old.format == "pcm" and a.duration == old.duration
    assert a.data == old.data
    assert np.array_equal(a.samples, old.samples) and a.samples.dtype == np.float32
    assert a.samples is a.samples and a.data is a.data  # made once


@pytest.mark.parametrize("formats,fmt", [(["flac", "mp3", "wav"], "flac"), (["wav"], "wav"), (["mp3"], "mp3")])
def test_chunk_upload_is_the_spool_samples(speech, formats, fmt):
    """A chunk re-encoded for an upstream: now from the int16 the spool holds, exactly; before, from float32
    samples scaled back by 32767, every sample 1 LSB closer to zero (the only difference)."""
    pcm = speech[50 * RATE:110 * RATE + 17]
    new = chunk_audio(pcm, len(pcm) / RATE)
    up = asyncio.run(for_endpoint(new, formats, 25 * 2**20))
    assert up.format == fmt and up.converted
    assert new.made() == (False, False)  # no raw bytes, no float32 copy made for an upload
    old = asyncio.run(for_endpoint(_old_chunk_audio(pcm, len(pcm) / RATE), formats, 25 * 2**20))
    if fmt == "mp3":
        assert len(up.data) == len(old.data)  # lossy: same length and framing; samples differ by 1 LSB
        return
    got, was = _decode_s16(up.data), _decode_s16(old.data)
    assert np.array_equal(got, pcm)
    assert np.array_equal(was, pcm - np.sign(pcm))


def test_chunk_upload_over_the_byte_limit_still_falls_back(speech):
    pcm = speech[:20 * RATE]
    a = chunk_audio(pcm, 20.0)
    flac = encode_samples(pcm, "flac")
    up = asyncio.run(for_endpoint(a, ["flac", "mp3"], len(flac) - 1))
    assert up.format == "mp3"


# ---- start-up ----------------------------------------------------------------------------------------------
def test_chunking_possible():
    from types import SimpleNamespace

    from audiorouter.routing.catalog import Catalog
    cat = Catalog.load(None)
    assert chunking_possible(SimpleNamespace(chunk_seconds=180.0), cat)
    # the shipped catalog has endpoints with byte/second limits: chunks can be needed with no chunk limit set
    assert chunking_possible(SimpleNamespace(chunk_seconds=0), cat)
    nolimits = SimpleNamespace(by_kind=lambda kind: [SimpleNamespace(endpoints=[
        SimpleNamespace(limits=SimpleNamespace(max_seconds=None, max_bytes=None))])])
    assert not chunking_possible(SimpleNamespace(chunk_seconds=0), nolimits)


def test_malloc_tuning_setting(monkeypatch):
    from audiorouter.config import Settings
    from audiorouter.core import malloc
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setenv("AUDIOROUTER_MALLOC_MMAP_THRESHOLD", "0")
    assert Settings().malloc_mmap_threshold == 0 and malloc.tune(0) is None
    monkeypatch.delenv("AUDIOROUTER_MALLOC_MMAP_THRESHOLD")
    default = Settings().malloc_mmap_threshold
    assert default == 1024 * 1024
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # glibc's own setting wins
    assert malloc.tune(default) is None
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    expected = default if malloc.glibc() and os.uname().sysname == "Linux" else None
    assert malloc.tune(default) == expected


def test_engine_scopes_raise_the_threshold_until_the_last_one_ends(monkeypatch):
    """big_buffers(): the threshold is ENGINE_THRESHOLD while any thread is inside one, and the gateway's
    again once the last one ends, whatever the order they end in."""
    import threading

    from audiorouter.core import malloc
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    if malloc.tune(1 << 20) is None:
        pytest.skip("not glibc on Linux")
    assert malloc.threshold() == 1 << 20
    inside, a_out = threading.Barrier(3), threading.Event()
    seen = []

    def first() -> None:
        with malloc.big_buffers():
            inside.wait()
        a_out.set()

    def second() -> None:
        with malloc.big_buffers():
            inside.wait()
            a_out.wait(10)
            seen.append(malloc.threshold())  # the other scope has ended, this one has not

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait()
    for t in threads:
        t.join(10)
    assert seen == [malloc.ENGINE_THRESHOLD]  # the first to leave did not lower it
    assert malloc.threshold() == 1 << 20
    with pytest.raises(RuntimeError), malloc.big_buffers():
        raise RuntimeError("an engine failing still ends its scope")
    assert malloc.threshold() == 1 << 20


def test_preload_vad_follows_preload_unless_set(monkeypatch):
    from audiorouter.config import Settings
    monkeypatch.delenv("AUDIOROUTER_PRELOAD_VAD", raising=False)
    assert Settings(preload=False).preload_vad is None
    monkeypatch.setenv("AUDIOROUTER_PRELOAD_VAD", "true")
    assert Settings(preload=False).preload_vad is True
