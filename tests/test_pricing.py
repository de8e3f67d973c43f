"""Usage and cost: the gateway measures the audio itself (usage.seconds = the decoded duration, checked
against the manifest's duration_s for clips of every rate and container), and cost = catalog price x units.
Prices come from a user catalog (AUDIOROUTER_CATALOG) that overrides the local Whisper model with a
per-second price and adds a per-minute model with a per-request fee and a billing minimum, and a
per-character priced speech model."""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from conftest import DEV_AUDIO, ServerProcess

PER_SECOND = 0.0001          # local/whisper-base, overridden
MIN_PER_MINUTE = 0.006       # test/whisper-minimum: 0.0001 a second ...
MIN_PER_REQUEST = 0.001      # ... plus a fee per request ...
MIN_SECONDS = 10             # ... for at least 10 s
PER_MILLION_CHARS = 15.0     # test/hibari-priced
NO_STORE = {"Cache-Control": "no-store"}  # every request is measured and priced, not answered from a cache

CATALOG = f"""
models:
  - id: local/whisper-base
    name: "Whisper base (priced for this test)"
    kind: transcription
    endpoints:
      - provider: local
        upstream_model: whisper-base
        pricing: {{per_second: {PER_SECOND}}}
        capabilities: {{translation: true, word_timestamps: true, prompt: true}}
  - id: test/whisper-minimum
    name: "Whisper with a billing minimum"
    kind: transcription
    endpoints:
      - provider: local
        upstream_model: whisper-base
        pricing: {{per_minute: {MIN_PER_MINUTE}, per_request: {MIN_PER_REQUEST}, minimum_seconds: {MIN_SECONDS}}}
  - id: test/hibari-priced
    name: "hibari, priced per character"
    kind: speech
    voices: [heart]
    endpoints:
      - provider: local
        upstream_model: hibari
        pricing: {{per_million_characters: {PER_MILLION_CHARS}}}
        output_formats: [pcm, mp3, wav, flac, opus, aac]
        capabilities: {{speed: true, streaming: true}}
        voice_map: {{alloy: heart, nova: heart}}
"""


@pytest.fixture(scope="module")
def priced_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("priced")
    path = tmp / "catalog.yaml"
    path.write_text(CATALOG)
    s = ServerProcess(env={"AUDIOROUTER_CATALOG": str(path)}, tmp=tmp).start()
    yield s
    s.stop()


@pytest.fixture
def priced(priced_server):
    with httpx.Client(base_url=priced_server.url, timeout=180, headers=NO_STORE) as c:
        yield c


def entry(manifest, name):
    return next(m for m in manifest if m["file"] == name)


CLIPS = [
    "jfk_inaugural_excerpt.flac",                        # 44.1 kHz stereo FLAC, 11 s
    "asterisk_en_demo-nogo.wav",                         # 8 kHz wav, 10.5 s
    "common_voice_en_16812.mp3",                         # 48 kHz mp3
    "sr_onetwothree_stereo-16-bit-44100Hz.aiff",         # stereo AIFF
    "thorsten_de_sample01_gt.wav",                       # 22.05 kHz
    "librispeech_test-other_3080-5032-0009.flac",        # 16 kHz FLAC, 22.75 s
]


@pytest.mark.parametrize("name", CLIPS)
def test_usage_seconds_is_the_measured_duration_and_cost_is_price_times_seconds(priced, manifest, name):
    want = entry(manifest, name)["duration_s"]
    data = base64.b64encode((DEV_AUDIO / name).read_bytes()).decode()
    r = priced.post("/api/v1/audio/transcriptions",
                    json={"model": "local/whisper-base", "input_audio": {"data": data, "format": name.rsplit(".", 1)[1]}})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert abs(usage["seconds"] - want) < 0.01, (usage, want)
    assert float(r.headers["x-audio-duration"]) == pytest.approx(usage["seconds"], abs=0.001)
    assert usage["cost"] > 0
    assert usage["cost"] == pytest.approx(PER_SECOND * usage["seconds"], rel=1e-6, abs=1e-9)


def test_openai_dialect_reports_duration_usage_and_cost(priced, manifest):
    name = "librispeech_dev-clean_3752-4944-0002.flac"
    r = priced.post("/v1/audio/transcriptions", data={"model": "local/whisper-base"},
                    files={"file": (name, (DEV_AUDIO / name).read_bytes())})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["type"] == "duration"
    assert abs(usage["seconds"] - entry(manifest, name)["duration_s"]) < 0.01
    assert usage["cost"] == pytest.approx(PER_SECOND * usage["seconds"], rel=1e-6)


def test_verbose_json_duration_matches_usage(priced, manifest):
    name = "ljspeech_LJ002-0020.wav"
    r = priced.post("/api/v1/audio/transcriptions", json={
        "model": "local/whisper-base", "response_format": "verbose_json",
        "input_audio": {"data": base64.b64encode((DEV_AUDIO / name).read_bytes()).decode(), "format": "wav"}})
    body = r.json()
    assert body["duration"] == pytest.approx(entry(manifest, name)["duration_s"], abs=0.01)
    assert body["usage"]["seconds"] == pytest.approx(body["duration"], abs=0.001)


def test_minimum_seconds_and_per_request_fee(priced, manifest):
    name = "librispeech_dev-clean_3752-4944-0000.flac"  # 3.3 s, under the 10 s minimum
    secs = entry(manifest, name)["duration_s"]
    assert secs < MIN_SECONDS
    data = base64.b64encode((DEV_AUDIO / name).read_bytes()).decode()
    r = priced.post("/api/v1/audio/transcriptions",
                    json={"model": "test/whisper-minimum", "input_audio": {"data": data, "format": "flac"}})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["seconds"] == pytest.approx(secs, abs=0.01)  # what was sent, not what was billed
    assert usage["cost"] == pytest.approx(MIN_PER_REQUEST + MIN_PER_MINUTE / 60 * MIN_SECONDS, rel=1e-6)

    name = "librispeech_test-other_1688-142285-0000.flac"  # 15 s, over the minimum
    secs = entry(manifest, name)["duration_s"]
    data = base64.b64encode((DEV_AUDIO / name).read_bytes()).decode()
    r = priced.post("/api/v1/audio/transcriptions",
                    json={"model": "test/whisper-minimum", "input_audio": {"data": data, "format": "flac"}})
    usage = r.json()["usage"]
    assert usage["cost"] == pytest.approx(MIN_PER_REQUEST + MIN_PER_MINUTE / 60 * usage["seconds"], rel=1e-6)
    assert usage["seconds"] == pytest.approx(secs, abs=0.01)


def test_local_substitute_is_billed_at_the_local_price(priced):
    """openai/whisper-1 has no key here: the built-in engine serves it, at the local (substitute) price 0."""
    name = "sr_english.wav"
    r = priced.post("/v1/audio/transcriptions", data={"model": "openai/whisper-1"},
                    files={"file": (name, (DEV_AUDIO / name).read_bytes())})
    assert r.status_code == 200, r.text
    assert r.headers["x-provider-substitute"] == "true"
    assert r.json()["usage"]["cost"] == 0


TEXT = "Cost is price times units. This sentence has a known number of characters."


def test_speech_cost_per_character(priced):
    r = priced.post("/api/v1/audio/speech", json={"model": "test/hibari-priced", "input": TEXT, "voice": "alloy"})
    assert r.status_code == 200, r.text
    assert len(r.content) > 0
    assert int(r.headers["x-characters"]) == len(TEXT)
    assert float(r.headers["x-cost"]) == pytest.approx(PER_MILLION_CHARS * len(TEXT) / 1e6, rel=1e-6)


def test_speech_cost_in_sse_done_event(priced):
    r = priced.post("/v1/audio/speech", json={"model": "test/hibari-priced", "input": TEXT, "stream_format": "sse",
                                              "response_format": "pcm"})
    assert r.status_code == 200, r.text
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    assert done["usage"]["cost"] == pytest.approx(PER_MILLION_CHARS * len(TEXT) / 1e6, rel=1e-6)
    assert done["usage"]["characters"] == len(TEXT)


def test_unpriced_local_speech_costs_nothing(priced):
    r = priced.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": TEXT})
    assert r.status_code == 200
    assert float(r.headers["x-cost"]) == 0


def test_catalog_prices_are_listed(priced):
    models = {m["id"]: m for m in priced.get("/api/v1/models").json()["data"]}
    assert float(models["local/whisper-base"]["pricing"]["audio"]) == pytest.approx(PER_SECOND)
    assert float(models["test/whisper-minimum"]["pricing"]["request"]) == pytest.approx(MIN_PER_REQUEST)
    assert "test/hibari-priced" in models
