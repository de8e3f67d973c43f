"""Audio input handling over HTTP: every container made from a real dev clip is decoded in memory and
transcribed right through both request shapes (OpenRouter JSON with base64, OpenAI multipart); the dev set's
own odd encodings (AIFF, 8/24/32-bit WAV, stereo, 24-bit FLAC, 48 kHz mp3); the container is sniffed from
the bytes and a wrong declared format is reported in headers; base64 variants (data: URI, line breaks,
URL-safe, no padding); silence gives no text."""
from __future__ import annotations

import base64
import json

import pytest

from audio_factory import DECLARED, FORMATS, load_clip, make_audio, noise, silence
from conftest import DEV_AUDIO, slow_except
from wer import normalize

JFK = "jfk_inaugural_excerpt.flac"
JFK_WORDS = ("fellow americans", "ask not what your country can do for you")
MODEL = "local/whisper-base"
# These tests are about decoding: the transcript cache (same bytes -> same answer) must not stand in for it.
NO_STORE = {"Cache-Control": "no-store"}


@pytest.fixture(scope="module")
def jfk() -> object:
    return load_clip(JFK)


def post_json(client, data: bytes | str, fmt: str | None, path="/api/v1/audio/transcriptions", **extra):
    b64 = data if isinstance(data, str) else base64.b64encode(data).decode()
    ia = {"data": b64} if fmt is None else {"data": b64, "format": fmt}
    return client.post(path, json={"model": MODEL, "input_audio": ia, **extra}, headers=NO_STORE)


def post_form(client, data: bytes, filename: str, path="/v1/audio/transcriptions", **fields):
    return client.post(path, data={"model": MODEL, **fields}, files={"file": (filename, data, "application/octet-stream")},
                       headers=NO_STORE)


def assert_jfk(r) -> None:
    assert r.status_code == 200, r.text
    text = normalize(r.json()["text"])
    for words in JFK_WORDS:
        assert words in text, (words, text)


# ---- every container, both shapes -----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", slow_except(FORMATS, "mp3"))
def test_json_shape_every_format(client, jfk, fmt):
    data = make_audio(jfk, fmt)
    r = post_json(client, data, DECLARED[fmt], language="en")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == fmt
    assert "x-audio-format-mismatch" not in r.headers
    assert r.headers["x-generation-id"].startswith("gen-")
    # the measured duration is the clip's, whatever the codec (AAC adds up to one 1024-sample frame)
    assert abs(r.json()["usage"]["seconds"] - 11.0) < 0.1


@pytest.mark.parametrize("fmt", slow_except(FORMATS, "webm"))
def test_multipart_shape_every_format(client, jfk, fmt):
    data = make_audio(jfk, fmt)
    r = post_form(client, data, f"speech.{DECLARED[fmt]}")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == fmt
    assert "x-audio-format-mismatch" not in r.headers
    assert r.json()["usage"]["type"] == "duration"
    assert abs(r.json()["usage"]["seconds"] - 11.0) < 0.1


def test_multipart_on_the_openrouter_path(client, jfk):
    r = post_form(client, make_audio(jfk, "ogg"), "speech.ogg", path="/api/v1/audio/transcriptions")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == "ogg"


def test_translation_endpoint_decodes_webm(client, jfk):
    r = post_form(client, make_audio(jfk, "webm"), "speech.webm", path="/v1/audio/translations")
    assert_jfk(r)


# ---- the dev set's own encodings ------------------------------------------------------------------------
ONE_TWO_THREE = [
    "sr_english.wav",                               # 16-bit 44.1 kHz
    "sr_onetwothree_mono-8-bit-44100Hz.wav",        # unsigned 8-bit
    "sr_onetwothree_mono-24-bit-44100Hz.wav",       # 24-bit
    "sr_onetwothree_mono-32-bit-44100Hz.wav",       # 32-bit
    "sr_onetwothree_stereo-24-bit-44100Hz.wav",     # stereo 24-bit
    "sr_onetwothree_mono-16-bit-44100Hz.aiff",      # AIFF (big-endian)
    "sr_onetwothree_stereo-16-bit-44100Hz.aiff",    # stereo AIFF
    "sr_onetwothree_mono-24-bit-44100Hz.flac",      # 24-bit FLAC
    "sr_onetwothree_stereo-16-bit-44100Hz.flac",    # stereo FLAC
]


@pytest.mark.parametrize("name", slow_except(ONE_TWO_THREE, "sr_onetwothree_stereo-24-bit-44100Hz.wav"))
def test_dev_set_encodings(client, manifest, name):
    entry = next(m for m in manifest if m["file"] == name)
    data = (DEV_AUDIO / name).read_bytes()
    ext = name.rsplit(".", 1)[1]
    r = post_json(client, data, ext, language="en")
    assert r.status_code == 200, r.text
    assert normalize(r.json()["text"]) == "one two three"
    assert r.headers["x-audio-format-detected"] == ext
    assert abs(r.json()["usage"]["seconds"] - entry["duration_s"]) < 0.01


RATES = [
    ("common_voice_en_16814.mp3", ("old man", "read the book")),            # 48 kHz mp3
    ("ljspeech_LJ002-0035.wav", ("press yard",)),                           # 22.05 kHz wav
    ("asterisk_en_vm-msgforwarded.wav", ("message", "forwarded")),          # 8 kHz telephone wav
]


@pytest.mark.parametrize("name,words", slow_except(RATES, RATES[2]))
def test_dev_set_rates_multipart(client, name, words):
    r = post_form(client, (DEV_AUDIO / name).read_bytes(), name)
    assert r.status_code == 200, r.text
    text = normalize(r.json()["text"])
    for w in words:
        assert w in text, (w, text)


# ---- sniffing beats the declared format -----------------------------------------------------------------
@pytest.mark.parametrize("real,declared", slow_except([("flac", "mp3"), ("mp3", "wav"), ("ogg", "m4a"), ("wav", "pcm"),
                                                        ("webm", "flac")], ("ogg", "m4a")))
def test_declared_format_wrong_json(client, jfk, real, declared):
    r = post_json(client, make_audio(jfk, real), declared, language="en")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == real
    assert r.headers["x-audio-format-mismatch"] == f"declared {declared}, decoded as {real}"


def test_declared_format_wrong_multipart(client, jfk):
    r = post_form(client, make_audio(jfk, "opus"), "recording.mp3")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == "opus"
    assert r.headers["x-audio-format-mismatch"] == "declared mp3, decoded as opus"


@pytest.mark.parametrize("real,declared", slow_except([("m4a", "mp4"), ("mp4", "m4a"), ("opus", "ogg"),
                                                        ("flac", "audio/x-flac"), ("wav", "WAV"), ("mp3", "mpeg")],
                                                       ("opus", "ogg")))
def test_equivalent_declared_names_are_no_mismatch(client, jfk, real, declared):
    r = post_json(client, make_audio(jfk, real), declared, language="en")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == real
    assert "x-audio-format-mismatch" not in r.headers


def test_unknown_extension_is_detected(client, jfk):
    r = post_form(client, make_audio(jfk, "m4a"), "blob")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == "m4a"
    assert "x-audio-format-mismatch" not in r.headers


def test_unknown_declared_name_is_decoded_by_the_bytes(client, jfk):
    r = post_json(client, make_audio(jfk, "flac"), "lossless-thing", language="en")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == "flac"
    assert r.headers["x-audio-format-mismatch"] == "declared lossless-thing, decoded as flac"


def test_headerless_pcm_multipart_by_extension(client, jfk):
    r = post_form(client, make_audio(jfk, "pcm"), "speech.pcm")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == "pcm"


# ---- base64 variants ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", slow_except(["data_uri", "data_uri_codecs", "line_breaks", "urlsafe_unpadded"],
                                                "urlsafe_unpadded"))
def test_base64_variants(client, jfk, variant):
    raw = make_audio(jfk, "opus" if variant == "data_uri_codecs" else "mp3")
    b64 = base64.b64encode(raw).decode()
    if variant == "data_uri":
        b64 = "data:audio/mpeg;base64," + b64
    elif variant == "data_uri_codecs":
        b64 = "data:audio/ogg;codecs=opus;base64," + b64
    elif variant == "line_breaks":
        b64 = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76)) + "\n"
    else:
        b64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert "-" in b64 or "_" in b64
    fmt = "opus" if variant == "data_uri_codecs" else "mp3"
    r = post_json(client, b64, fmt, language="en")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == fmt


# ---- silence --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zeros", "low_noise"])
@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_silence_gives_empty_text(client, kind, fmt):
    samples = silence(5.0) if kind == "zeros" else noise(5.0)
    r = post_json(client, make_audio(samples, fmt), fmt, response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == ""
    assert body["segments"] == []
    assert abs(body["usage"]["seconds"] - 5.0) < 0.1


def test_silence_text_format_is_empty(client):
    r = post_form(client, make_audio(silence(5.0), "flac"), "quiet.flac", response_format="text")
    assert r.status_code == 200, r.text
    assert r.text.strip() == ""


def test_speech_after_silence_is_kept(client, jfk):
    """VAD drops the silence, not the speech that follows it."""
    import numpy as np
    samples = np.concatenate([silence(4.0), jfk])
    r = post_json(client, make_audio(samples, "wav"), "wav", language="en", response_format="verbose_json")
    assert_jfk(r)
    assert r.json()["segments"][0]["start"] >= 3.0
    assert abs(r.json()["usage"]["seconds"] - 15.0) < 0.05


def test_mismatch_header_absent_on_errors(client):
    r = post_json(client, b"definitely not audio, just some text" * 10, "wav")
    assert r.status_code == 400
    assert "x-audio-format-mismatch" not in r.headers
    assert json.loads(r.text)["error"]["metadata"]["param"] == "input_audio.data"


def _strip_id3(data: bytes) -> bytes:
    assert data[:3] == b"ID3"
    size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
    return data[10 + size:]


def test_mp3_without_id3_tag_is_sniffed_from_its_frames(client, jfk):
    frames = _strip_id3(make_audio(jfk, "mp3"))
    assert frames[0] == 0xFF
    r = post_json(client, frames, "wav", language="en")
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == "mp3"
    assert r.headers["x-audio-format-mismatch"] == "declared wav, decoded as mp3"


def test_cache_hit_still_reports_the_format(client, jfk):
    """A second identical request may be answered from the transcript cache without decoding; it still says
    what the bytes are and that the declared format was wrong."""
    b64 = base64.b64encode(make_audio(jfk[: 16000 * 6], "flac")).decode()
    body = {"model": MODEL, "language": "en", "input_audio": {"data": b64, "format": "ogg"}}
    for _ in range(2):
        r = client.post("/api/v1/audio/transcriptions", json=body)
        assert r.status_code == 200, r.text
        assert r.headers["x-audio-format-detected"] == "flac"
        assert r.headers["x-audio-format-mismatch"] == "declared ogg, decoded as flac"


# ---- damaged files: any mutation of a real file is decoded or refused with a 400, never a 5xx ------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SHORT = load_clip("sr_english.wav")[: 16000 * 2]
DAMAGE_SOURCES = {fmt: make_audio(_SHORT, fmt) for fmt in ("wav", "mp3", "flac", "m4a", "ogg", "opus", "webm", "aac")}


@st.composite
def damaged(draw):
    fmt = draw(st.sampled_from(sorted(DAMAGE_SOURCES)))
    data = bytearray(DAMAGE_SOURCES[fmt])
    for _ in range(draw(st.integers(0, 6))):  # flip some bytes, often in the header
        i = draw(st.integers(0, min(len(data) - 1, draw(st.sampled_from([64, 512, len(data) - 1])))))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from([None, 1, 4, 12, 44, 100, 1000, len(data) // 3, len(data) - 7]))
    if cut is not None:
        data = data[:cut]
    return fmt, bytes(data)


@pytest.mark.slow  # 40 damaged files, each decoded and (when it decodes) transcribed
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=damaged())
def test_damaged_files_never_break_the_server(client, case):
    fmt, data = case
    r = post_json(client, data, fmt, language="en")
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        err = r.json()["error"]
        assert err["metadata"]["param"] == "input_audio.data", err
    else:
        assert "x-audio-format-detected" in r.headers


def test_part_content_type_is_the_hint_when_the_name_has_none(client, jfk):
    """Browsers upload MediaRecorder output as "blob" with the type on the part."""
    data = make_audio(jfk, "webm")
    r = client.post("/v1/audio/transcriptions", data={"model": MODEL, "language": "en"},
                    files={"file": ("blob", data, "audio/webm;codecs=opus")}, headers=NO_STORE)
    assert_jfk(r)
    assert r.headers["x-audio-format-detected"] == "webm"
    assert "x-audio-format-mismatch" not in r.headers
    r = client.post("/v1/audio/transcriptions", data={"model": MODEL, "language": "en"},
                    files={"file": ("blob", data, "audio/mpeg")}, headers=NO_STORE)
    assert_jfk(r)
    assert r.headers["x-audio-format-mismatch"] == "declared mp3, decoded as webm"
