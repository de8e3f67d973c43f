"""A request's beam size on the local Whisper (provider.options.local.beam_size; the voice-chat cascade asks
for 1): each request is decoded with its own, a batch never mixes two beam sizes, and a bad value is a 400
naming the field."""
from __future__ import annotations

import base64
import threading

import pytest

from audiorouter.audio.decode import decode
from audiorouter.config import default_cache_dir
from audiorouter.providers.local_whisper import WhisperEngine
from audiorouter.providers.whisper_weights import ensure_whisper_base
from wer import wer


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(ensure_whisper_base(default_cache_dir()), workers=1, batch_size=4)


def test_greedy_and_beam_requests_at_once_each_decode_with_their_own_beam(engine, manifest):
    from conftest import DEV_AUDIO
    clip = min((m for m in manifest if m["duration_s"] > 8), key=lambda m: m["duration_s"])
    samples = decode((DEV_AUDIO / clip["file"]).read_bytes()).samples
    engine.load()
    seen: list[set[int]] = []
    decode_batch = engine._decode

    def recording(batch):
        seen.append({w.beam for w in batch})
        return decode_batch(batch)

    engine._decode = recording  # type: ignore[method-assign]
    out: dict[int, str] = {}
    start = threading.Barrier(2)

    def run(beam: int) -> None:
        start.wait()
        out[beam] = engine.transcribe(samples, language="en", beam_size=beam).text

    threads = [threading.Thread(target=run, args=(b,)) for b in (1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert set(out) == {1, 5}
    assert all(len(s) == 1 for s in seen), seen       # no batch mixes beam sizes
    assert {b for s in seen for b in s} == {1, 5}     # and both were decoded with their own
    for beam, text in out.items():
        assert wer([clip["text"]], [text]).wer < 0.35, (beam, text)


def test_a_bad_beam_size_is_a_400_naming_the_field(client, manifest):
    from conftest import DEV_AUDIO
    data = base64.b64encode((DEV_AUDIO / manifest[0]["file"]).read_bytes()).decode()
    for bad in (0, 11, 2.5, "5", True):
        r = client.post("/api/v1/audio/transcriptions", json={
            "model": "local/whisper-base", "input_audio": {"data": data, "format": manifest[0]["file"].rsplit(".", 1)[1]},
            "provider": {"options": {"local": {"beam_size": bad}}}})
        assert r.status_code == 400, (bad, r.text)
        assert "provider.options.local.beam_size" in r.json()["error"]["message"]
