"""Speakers stay the same across long-audio chunks: diarized long audio is cut into overlapping chunks and
each chunk's speakers are matched to the previous chunk's on the stretch both heard (jobs/transcription.py
stitch, core/speakers.py match_speakers). Against a strict fake Deepgram that numbers speakers per request
in order of appearance, as Deepgram does, so a chunk that starts with the second voice calls it speaker 0."""
from __future__ import annotations

import secrets

import numpy as np
import pytest

from audiorouter.core.speakers import match_speakers
from fakes.deepgram_fake import DeepgramFake
from fakes.harness import api_client, b64, serve, start_gateway
from fakes.runner import encode_audio, tone

KEY = "dg-test-" + secrets.token_hex(16)
RATE = 16000
CHUNK_SECONDS = 20
FREQ = {"lo": 220.0, "hi": 520.0}
WORD_S, WORD_GAP_S, TURN_GAP_S = 0.4, 0.15, 0.7


def conversation() -> tuple[np.ndarray, list[tuple[str, int]]]:
    """About 80 s of two alternating "voices" (tone-burst words in two pitches): the samples and the turns."""
    lengths = [3, 4, 2, 5, 4, 3, 6, 2, 3, 5, 4, 2, 3, 4, 5, 3, 2, 4, 3, 5, 4, 3, 2, 4]
    turns = [("lo" if i % 2 == 0 else "hi", n) for i, n in enumerate(lengths)]
    parts = [np.zeros(int(0.5 * RATE), np.float32)]
    for voice, n in turns:
        for _ in range(n):
            parts += [tone(WORD_S, RATE, FREQ[voice]), np.zeros(int(WORD_GAP_S * RATE), np.float32)]
        parts.append(np.zeros(int(TURN_GAP_S * RATE), np.float32))
    return np.concatenate(parts), turns


@pytest.fixture(scope="module")
def fake():
    yield from serve(DeepgramFake(KEY, tone_speakers=True))


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    catalog = {"providers": {"deepgram": {"name": "Deepgram", "adapter": "deepgram", "base_url": fake.url + "/v1",
                                          "api_key_env": "AR_TEST_DEEPGRAM_KEY", "timeout_s": 120}}}
    yield from start_gateway(tmp_path_factory.mktemp("gw-diarize-chunks"), catalog, AR_TEST_DEEPGRAM_KEY=KEY,
                             AUDIOROUTER_CHUNK_SECONDS=str(CHUNK_SECONDS), AUDIOROUTER_CACHE_TTL_S="0")


@pytest.fixture
def api(gw, fake):
    yield from api_client(gw, fake)


def test_match_speakers_by_shared_time():
    before = [("speaker_0", 0.0, 4.0), ("speaker_1", 5.0, 9.0)]
    after = [("speaker_0", 5.1, 8.9), ("speaker_1", 3.0, 3.9), ("speaker_2", 9.5, 12.0)]
    # in [3, 9]: after's speaker_0 talks while before's speaker_1 does, after's speaker_1 while speaker_0 does;
    # after's speaker_2 speaks only past the shared stretch, so it has no counterpart
    assert match_speakers(before, after, 3.0, 9.0) == {"speaker_0": "speaker_1", "speaker_1": "speaker_0"}
    # one-to-one, and a pair needs enough shared time
    assert match_speakers(before, [("x", 0.0, 4.0), ("y", 1.0, 2.0)], 0.0, 9.0) == {"x": "speaker_0"}
    assert match_speakers(before, [("x", 3.9, 4.05)], 0.0, 9.0) == {}


def test_speakers_stay_the_same_across_chunks(api, fake):
    samples, turns = conversation()
    wav = encode_audio(samples, RATE, "wav")
    r = api.post("/api/v1/audio/transcriptions", json={
        "model": "deepgram/nova-3", "input_audio": {"data": b64(wav), "format": "wav"},
        "response_format": "diarized_json"})
    assert r.status_code == 200, r.text
    calls = [c for c in fake.calls if c.path == "/v1/listen"]
    assert int(r.headers["X-Chunks"]) == len(calls) >= 4
    assert all(c.q1("diarize") == "true" for c in calls)
    # the premise: some chunk's own numbering starts with the other voice (the file starts with "lo", so that
    # is a later chunk; chunks run concurrently, so the calls' order is not the file's)
    assert any(c.info["speakers"][0] == "hi" for c in calls), [c.info["speakers"] for c in calls]
    # the chunks overlap: together they are longer than the audio
    assert sum(c.info["duration"] for c in calls) > len(samples) / RATE + 2

    segs = r.json()["segments"]
    label_of: dict[str, set[str]] = {"lo": set(), "hi": set()}
    said = {"lo": 0, "hi": 0}
    for s in segs:
        words = s["text"].replace(".", "").split()
        assert len(set(words)) == 1, s  # a turn is one voice
        label_of[words[0]].add(s["speaker"])
        said[words[0]] += len(words)
    assert label_of == {"lo": {"A"}, "hi": {"B"}}, label_of
    # every word once: the overlap is kept from one chunk only
    assert said == {v: sum(n for voice, n in turns if voice == v) for v in ("lo", "hi")}
    starts = [s["start"] for s in segs]
    assert starts == sorted(starts)
