"""Speech with word timings (`timestamps: "word"`, jobs/speech_timings.py): the placing of a known text's words
on what a recogniser heard (audio/align.py); ElevenLabs' with-timestamps through the gateway against the strict
fake (the JSON envelope, the SSE events, long text split into pieces, the 400s); and the local path on hibari
output, whose word boundaries are compared with a forced alignment of the known text."""
from __future__ import annotations

import base64
import io
import itertools
import json
import statistics

import av
import numpy as np
import pytest

from audiorouter.audio.align import known_words, place_words, to_16k
from audiorouter.core.types import Word
from audiorouter.providers.elevenlabs import char_words
from fakes.elevenlabs_fake import SECONDS_PER_CHAR, ElevenLabsFake
from fakes.harness import api_client, serve, start_gateway

KEY = "xi-timings-key"
TTS = "elevenlabs/eleven-flash-v2.5"
SHORT = "test/eleven-short"  # the same voices, at most 40 characters a call: long text is split
TEXT = "Hello there, my friend! It's 5 o'clock."


# ---- placing the text's words (audio/align.py) ------------------------------------------------------------
def test_known_words_keep_the_text_and_drop_lone_punctuation():
    assert known_words("Dr. Smith said — quite loudly — \"it's over\"; ok…") == \
        ["Dr", "Smith", "said", "quite", "loudly", "it's", "over", "ok"]


def test_heard_words_give_their_times_to_the_text_words():
    heard = [Word("hello", 0.10, 0.40), Word("There,", 0.45, 0.80), Word("friend.", 0.9, 1.3)]
    out = place_words(["Hello", "there", "friend"], heard, 2.0)
    assert [(w.word, w.start, w.end) for w in out] == [("Hello", 0.1, 0.4), ("there", 0.45, 0.8),
                                                       ("friend", 0.9, 1.3)]


def test_words_heard_differently_share_the_span_heard_in_their_place():
    # "25" heard as "twenty five": the one text word takes the span of both heard words
    heard = [Word("it", 0.0, 0.2), Word("costs", 0.2, 0.6), Word("twenty", 0.7, 1.0), Word("five", 1.0, 1.4),
             Word("dollars", 1.5, 2.0)]
    out = place_words(["It", "costs", "25", "dollars"], heard, 2.2)
    assert (out[2].word, out[2].start, out[2].end) == ("25", 0.7, 1.4)
    assert out[3].start == 1.5


def test_words_not_heard_share_the_gap_between_their_neighbours():
    heard = [Word("one", 0.0, 0.5), Word("four", 2.0, 2.5)]
    out = place_words(["one", "two", "three", "four"], heard, 3.0)
    assert out[1].start == 0.5 and out[2].end == 2.0 and out[1].end == out[2].start
    assert out[2].end - out[2].start > out[1].end - out[1].start  # "three" is longer than "two"
    tail = place_words(["one", "two"], [Word("one", 0.0, 0.5)], 1.5)
    assert (tail[1].start, tail[1].end) == (0.5, 1.5)  # the last one runs to the end of the audio
    assert [w.word for w in place_words(["a", "b"], [], 1.0)] == ["a", "b"]


def test_every_word_comes_back_in_order_whatever_was_heard():
    text = known_words("The quick brown fox jumps over the lazy dog")
    heard = [Word("a", 0.3, 0.2), Word("quick", 0.5, 0.7), Word("brown", 0.4, 0.9), Word("box", 1.0, 1.2),
             Word("extra", 1.2, 1.3), Word("dog", 2.5, 2.9)]
    out = place_words(text, heard, 3.0)
    assert [w.word for w in out] == text
    assert all(w.end >= w.start for w in out)
    assert all(b.start >= a.start for a, b in itertools.pairwise(out))


def test_elevenlabs_characters_make_words_without_their_punctuation():
    chars = [(c, i * 0.1, (i + 1) * 0.1) for i, c in enumerate('"Hi," she said.')]
    assert [(w.word, w.start, w.end) for w in char_words(chars)] == [
        ("Hi", 0.1, 0.3), ("she", 0.6, 0.9), ("said", 1.0, 1.4)]


def test_resampling_keeps_the_length():
    x = np.sin(np.arange(24000 * 2) / 24000 * 2 * np.pi * 200).astype(np.float32)
    y = to_16k(x, 24000)
    assert abs(len(y) - 32000) <= 32 and y.dtype == np.float32


# ---- ElevenLabs with-timestamps through the gateway ----------------------------------------------------------
@pytest.fixture(scope="module")
def fake():
    yield from serve(ElevenLabsFake(KEY))


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    voices = {"Rachel": "21m00Tcm4TlvDq8ikWAM"}
    catalog = {"providers": {"elevenlabs": {"name": "ElevenLabs", "adapter": "elevenlabs", "base_url": fake.url,
                                            "api_key_env": "AR_TEST_XI_KEY", "timeout_s": 5}},
               "models": [{"id": SHORT, "name": "Short", "kind": "speech", "voices": ["Rachel"], "endpoints": [
                   {"provider": "elevenlabs", "upstream_model": "eleven_flash_v2_5", "output_formats": ["mp3", "pcm"],
                    "voice_map": voices, "limits": {"max_characters": 40}}]}]}
    yield from start_gateway(tmp_path_factory.mktemp("gw-timings"), catalog, AR_TEST_XI_KEY=KEY)


@pytest.fixture
def api(gw, fake):
    yield from api_client(gw, fake)


def tts_calls(fake):
    return [c for c in fake.calls if c.path.startswith("/v1/text-to-speech/")]


def fake_words(text: str, offset: float = 0.0) -> list[tuple[str, float, float]]:
    """What the fake's timings (an equal share of the audio per character) make of `text`'s words."""
    per = max(0.3, SECONDS_PER_CHAR * len(text)) / len(text)
    out, i = [], 0
    for w in known_words(text):
        i = text.index(w, i)
        out.append((w, round(offset + round(i * per, 3), 3), round(offset + round((i + len(w)) * per, 3), 3)))
        i += len(w)
    return out


def mp3_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as c:
        return sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate


def test_word_timings_from_elevenlabs_in_a_json_envelope(api, fake):
    r = api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Rachel",
                                               "response_format": "mp3", "timestamps": "word"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    (call,) = tts_calls(fake)
    assert call.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream/with-timestamps"
    assert call.q1("output_format") == "pcm_24000" and call.json["text"] == TEXT
    assert body["format"] == "mp3" and body["media_type"] == "audio/mpeg" and body["timestamps_source"] == "provider"
    assert [(w["word"], w["start"], w["end"]) for w in body["words"]] == fake_words(TEXT)
    seconds = len(call.reply_bytes) / 48000
    assert abs(mp3_seconds(base64.b64decode(body["audio"])) - seconds) < 0.1
    assert abs(body["duration"] - seconds) < 0.01
    assert body["usage"]["characters"] == len(TEXT) and body["usage"]["cost"] > 0


def test_openrouter_timestamp_granularities_and_sse_events(api, fake):
    r = api.post("/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Rachel", "response_format": "pcm",
                                           "stream_format": "sse", "timestamp_granularities": ["word"]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["speech.timestamps.delta", "speech.audio.done"]
    assert set(kinds[:-2]) == {"speech.audio.delta"}
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-2])
    (call,) = tts_calls(fake)
    assert audio == call.reply_bytes  # pcm_24000 from the upstream, passed through as it is
    assert [(w["word"], w["start"], w["end"]) for w in events[-2]["words"]] == fake_words(TEXT)
    assert events[-1]["usage"]["characters"] == len(TEXT)


def test_long_text_is_split_and_its_words_follow_on(api, fake):
    pieces = ["The first sentence is here.", "A second one follows it.", "And then a third."]
    text = " ".join(pieces)
    r = api.post("/api/v1/audio/speech", json={"model": SHORT, "input": text, "voice": "Rachel",
                                               "timestamps": "word"})
    assert r.status_code == 200, r.text
    calls = tts_calls(fake)
    assert [c.json["text"] for c in calls] == pieces
    assert all(c.path.endswith("/stream/with-timestamps") for c in calls)
    expected, offset = [], 0.0
    for c in calls:
        expected += fake_words(c.json["text"], offset)
        offset += len(c.reply_bytes) / 48000
    got = [(w["word"], w["start"], w["end"]) for w in r.json()["words"]]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert all(abs(g[1] - e[1]) < 0.002 and abs(g[2] - e[2]) < 0.002 for g, e in zip(got, expected))
    assert abs(r.json()["duration"] - offset) < 0.01


def test_a_broken_with_timestamps_chunk_is_a_502(api, fake):
    fake.fail_raw(200, b'{"audio_base64": "not base64!", "alignment": null}\n', "application/json")
    r = api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Rachel", "timestamps": "word"})
    assert r.status_code == 502 and "malformed" in r.json()["error"]["message"]


BAD = [
    ({"timestamps": "segment"}, "timestamps"),
    ({"timestamps": True}, "timestamps"),
    ({"timestamp_granularities": ["character"]}, "timestamp_granularities"),
    ({"timestamp_granularities": "word", "timestamps": "none"}, "timestamp_granularities"),
    ({"timestamp_granularities": [1]}, "timestamp_granularities"),
]


@pytest.mark.parametrize("extra,param", BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_timestamps_are_a_400_naming_the_field(api, fake, extra, param):
    for path in ("/api/v1/audio/speech", "/v1/audio/speech"):
        r = api.post(path, json={"model": TTS, "input": TEXT, "voice": "Rachel", **extra})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        got = err.get("param") or err["metadata"]["param"]
        assert got.split("[")[0] == param and param in err["message"]
    assert not tts_calls(fake)


def test_without_timestamps_nothing_changes(api, fake):
    r = api.post("/api/v1/audio/speech", json={"model": TTS, "input": TEXT, "voice": "Rachel", "timestamps": "none"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("audio/")
    assert tts_calls(fake)[0].path.endswith("/stream")


# ---- the local path: hibari's audio timed by the local Whisper ----------------------------------------------
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Tickets cost twelve dollars for adults and are free for children.",
    "Please keep your bag with you at all times while you are in the museum.",
    "Dr. Smith said that it's over, and we will see what happens next.",
    "On the third of March, twelve hundred people came to hear the concert.",
    "Welcome to the audio router demonstration, where every request finds a provider.",
    "Supercalifragilisticexpialidocious is a word that nobody can say quickly.",
    "He opened the window, looked outside, and decided to stay at home today.",
]


@pytest.fixture(scope="module")
def local_router(tmp_path_factory):
    from audiorouter.config import Settings, default_cache_dir
    from audiorouter.providers.registry import build_adapters
    from audiorouter.routing.catalog import Catalog
    from audiorouter.routing.router import Router
    settings = Settings(preload=False, cache_dir=default_cache_dir(), data_dir=tmp_path_factory.mktemp("data"))
    catalog = Catalog.load()
    return Router(catalog, build_adapters(catalog, settings), settings)


def forced_alignment(model, samples: np.ndarray, text: str) -> list[Word]:
    """The reference: Whisper's cross-attention alignment (faster-whisper's find_alignment, the DTW its word
    timestamps use) of the known text's tokens, not of what Whisper recognised; 30 s of audio at most."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    feats = model.feature_extractor(samples)[..., :-1]
    n = feats.shape[-1]
    enc = model.encode(pad_or_trim(feats))
    tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    (aligned,) = model.find_alignment(tok, [tok.encode(" " + text.strip())], enc, n)
    words = [Word(a["word"], float(a["start"]), float(a["end"])) for a in aligned]
    return place_words(known_words(text), words, len(samples) / 16000)


@pytest.mark.slow
async def test_local_word_timings_agree_with_a_forced_alignment(local_router):
    from audiorouter.jobs.speech_timings import align
    local = local_router.adapters["local"]
    engine = local.hibari
    model = local.whisper.load()
    errors: list[float] = []
    inner: list[float] = []  # without each sentence's first start: the reference's DTW puts it at 0.0, in silence
    for text in SENTENCES:
        audio = np.concatenate(list(engine.stream(text, "heart")))
        words = await align(local_router, audio, engine.sample_rate, text)
        assert [w.word for w in words] == known_words(text)
        reference = forced_alignment(model, to_16k(audio, engine.sample_rate), text)
        assert words[0].start > 0.15 and reference[0].start < 0.05  # hibari begins with ~0.3 s of silence
        for k, (w, ref) in enumerate(zip(words, reference)):
            errors += [abs(w.start - ref.start), abs(w.end - ref.end)]
            inner += [abs(w.start - ref.start), abs(w.end - ref.end)] if k else [abs(w.end - ref.end)]

    def figures(e: list[float]) -> tuple[float, float, float]:
        e = sorted(e)
        return statistics.median(e), e[int(0.9 * (len(e) - 1))], e[-1]

    for name, e in (("all", errors), ("first starts left out", inner)):
        med, p9, top = figures(e)
        print(f"word boundaries vs forced alignment, {name} ({len(e)}): median {med * 1000:.0f} ms, "
              f"p90 {p9 * 1000:.0f} ms, max {top * 1000:.0f} ms")
    median, p90, _ = figures(errors)
    assert median <= 0.05 and p90 <= 0.1
    assert figures(inner)[1] <= 0.1


@pytest.mark.slow
def test_local_speech_with_word_timings_over_http(client):
    text = "The museum opens at nine in the morning. Please keep your bag with you."
    r = client.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": text, "response_format": "wav",
                                                  "timestamps": "word"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timestamps_source"] == "aligned" and body["format"] == "wav"
    words = body["words"]
    assert [w["word"] for w in words] == known_words(text)
    assert all(0 <= w["start"] <= w["end"] <= body["duration"] + 0.05 for w in words)
    assert all(b["start"] >= a["start"] for a, b in itertools.pairwise(words))
    with av.open(io.BytesIO(base64.b64decode(body["audio"]))) as c:
        seconds = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert abs(seconds - body["duration"]) < 0.05
    assert words[-1]["end"] > 0.6 * seconds  # the words run through the audio, not bunched at its start
