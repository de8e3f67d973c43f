"""The local Whisper engine stops when its request is cancelled: the remaining windows are dropped from the
decoder's queue and the calling thread gets TranscriptionCancelled, so a client that leaves does not keep a
core busy for nobody."""
from __future__ import annotations

import threading

import pytest

from audiorouter.audio.decode import decode
from audiorouter.config import default_cache_dir
from audiorouter.providers.local_whisper import TranscriptionCancelled, WhisperEngine
from audiorouter.providers.whisper_weights import ensure_whisper_base


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    # small batches, so that windows are still queued when the flag rises
    return WhisperEngine(ensure_whisper_base(default_cache_dir()), workers=1, batch_size=2)


@pytest.fixture(scope="module")
def long_samples(manifest):
    from conftest import DEV_AUDIO
    longest = max(manifest, key=lambda m: m["duration_s"])
    return decode((DEV_AUDIO / longest["file"]).read_bytes()).samples


@pytest.mark.parametrize("words", [False, True], ids=["batched", "sequential"])
def test_cancel_after_the_first_segment_stops_the_engine(engine, long_samples, words):
    flag = threading.Event()
    seen = []

    def on_segment(seg):
        seen.append(seg)
        flag.set()  # the client leaves as soon as the first text is out

    windows_before = engine.windows
    with pytest.raises(TranscriptionCancelled):
        engine.transcribe(long_samples, language="en", words=words, on_segment=on_segment, cancelled=flag.is_set)
    # 275 s of speech is ten windows of 30 s; only the batches under way when the flag rose were decoded
    assert 1 <= len(seen) < 20
    if not words:
        assert engine.windows - windows_before < 10


def test_a_request_cancelled_before_it_starts_decodes_nothing(engine, long_samples):
    windows_before = engine.windows
    with pytest.raises(TranscriptionCancelled):
        engine.transcribe(long_samples, language="en", cancelled=lambda: True)
    assert engine.windows == windows_before


def test_the_engine_still_serves_after_a_cancellation(engine, long_samples):
    t = engine.transcribe(long_samples[: 16000 * 12], language="en")
    assert len(t.text.split()) > 10
