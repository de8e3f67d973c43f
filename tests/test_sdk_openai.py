"""The official `openai` SDKs against the running server, with only the base URL changed: the Python SDK, and
the npm SDK (tests/js, pinned in tests/js/package.json, installed into tests/js/node_modules on first use)."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import av
import openai
import pytest
from openai import OpenAI

from conftest import DEV_AUDIO
from wer import normalize, wer

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
SPANISH = DEV_AUDIO / "asterisk_es_confbridge-lock-extended.wav"


@pytest.fixture(scope="module")
def oai(server) -> OpenAI:
    with OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0, timeout=300) as c:
        yield c


def _srt_times(t: str) -> float:
    h, m, rest = t.split(":")
    s, ms = re.split(r"[,.]", rest)
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_transcription_json(oai):
    with open(JFK, "rb") as f:
        r = oai.audio.transcriptions.create(model="openai/whisper-1", file=f, response_format="json")
    assert isinstance(r, openai.types.audio.Transcription)
    assert wer([JFK_TEXT], [r.text]).wer < 0.1, r.text
    usage = r.usage.model_dump() if r.usage is not None else {}
    assert usage.get("type") == "duration" and abs(usage["seconds"] - 11.0) < 0.05


def test_transcription_default_format_and_model_by_slug(oai):
    with open(JFK, "rb") as f:
        r = oai.audio.transcriptions.create(model="whisper-1", file=f)  # OpenAI's bare model name
    assert "ask not what your country" in r.text.lower()


def test_transcription_text(oai):
    with open(JFK, "rb") as f:
        r = oai.audio.transcriptions.create(model="openai/whisper-1", file=f, response_format="text")
    assert isinstance(r, str)
    assert not r.lstrip().startswith("{")
    assert wer([JFK_TEXT], [r]).wer < 0.1, r


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_transcription_subtitles(oai, fmt):
    with open(JFK, "rb") as f:
        r = oai.audio.transcriptions.create(model="openai/whisper-1", file=f, response_format=fmt)
    assert isinstance(r, str)
    if fmt == "vtt":
        assert r.startswith("WEBVTT")
    sep = "," if fmt == "srt" else r"\."
    stamp = rf"(\d\d:\d\d:\d\d{sep}\d\d\d)"
    cues = re.findall(stamp + r" --> " + stamp, r)
    assert cues, r
    prev_end = 0.0
    for a, b in cues:
        start, end = _srt_times(a), _srt_times(b)
        assert prev_end - 0.01 <= start < end <= 11.0 + 0.05
        prev_end = end
    if fmt == "srt":
        numbers = re.findall(r"^(\d+)\n\d\d:", r, flags=re.M)
        assert numbers == [str(i) for i in range(1, len(cues) + 1)]
    text_lines = [ln for ln in r.splitlines() if ln and "-->" not in ln and not ln.isdigit() and ln != "WEBVTT"]
    assert wer([JFK_TEXT], [" ".join(text_lines)]).wer < 0.1


def test_transcription_verbose_json_words(oai):
    with open(JFK, "rb") as f:
        r = oai.audio.transcriptions.create(model="openai/whisper-1", file=f, response_format="verbose_json",
                                            timestamp_granularities=["word"])
    assert isinstance(r, openai.types.audio.TranscriptionVerbose)
    assert r.language == "english"
    assert abs(r.duration - 11.0) < 0.05
    words = r.words or []
    assert len(words) >= 20
    prev_start = 0.0
    for w in words:
        assert w.word.strip()
        assert 0.0 <= w.start <= w.end <= r.duration + 0.05, w
        assert w.start >= prev_start - 1e-6, "word starts must not go backwards"
        prev_start = w.start
    assert words[-1].end > r.duration / 2
    joined = " ".join(w.word for w in words)
    assert normalize(joined) == normalize(r.text)


def test_transcription_verbose_json_segments(oai):
    with open(JFK, "rb") as f:
        r = oai.audio.transcriptions.create(model="openai/whisper-1", file=f, response_format="verbose_json",
                                            timestamp_granularities=["segment"])
    assert r.segments and not r.words
    for s in r.segments:
        assert 0.0 <= s.start < s.end <= r.duration + 0.05
    assert normalize("".join(s.text for s in r.segments)) == normalize(r.text)


def test_transcription_stream(oai):
    with open(JFK, "rb") as f:
        stream = oai.audio.transcriptions.create(model="openai/gpt-4o-mini-transcribe", file=f, stream=True)
        events = list(stream)
    assert events and events[-1].type == "transcript.text.done"
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert deltas
    assert normalize("".join(deltas)) == normalize(events[-1].text)
    assert wer([JFK_TEXT], [events[-1].text]).wer < 0.1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_to_english(oai):
    with open(SPANISH, "rb") as f:
        r = oai.audio.translations.create(model="openai/whisper-1", file=f, response_format="verbose_json")
    assert r.language == "english"
    words = set(normalize(r.text).split())
    assert "conference" in words, r.text
    assert len(words & {"the", "to", "a", "or", "only", "can", "is", "when"}) >= 2, r.text
    assert not words & {"conferencia", "para", "cuando", "una", "solo"}, r.text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_translation_json(oai):
    with open(SPANISH, "rb") as f:
        r = oai.audio.translations.create(model="openai/whisper-1", file=f)
    assert "conference" in r.text.lower()


def test_speech_streaming_mp3(oai, tmp_path):
    with oai.audio.speech.with_streaming_response.create(
            model="openai/tts-1", voice="alloy", input="Hello! This is a streamed speech test.") as resp:
        assert resp.headers["content-type"].startswith("audio/mpeg")
        path = tmp_path / "speech.mp3"
        resp.stream_to_file(path)
    data = path.read_bytes()
    with av.open(io.BytesIO(data), format="mp3") as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.name in ("mp3", "mp3float")
        samples = sum(f.samples for f in c.decode(stream))
        duration = samples / stream.rate
    assert 0.8 < duration < 10


def test_speech_wav_round_trip(oai):
    text = "Please call me back tomorrow morning."
    r = oai.audio.speech.create(model="openai/gpt-4o-mini-tts", voice="coral", input=text, response_format="wav")
    audio = r.read()
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    t = oai.audio.transcriptions.create(model="openai/whisper-1", file=("speech.wav", audio, "audio/wav"))
    assert wer([text], [t.text]).wer <= 0.2, t.text


def test_speech_bad_voice_is_a_400_naming_voice(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.audio.speech.create(model="openai/tts-1", voice="no-such-voice", input="hi")
    err = ei.value.body
    assert ei.value.status_code == 400
    assert err.get("param") == "voice", err


def test_transcription_bad_file_is_a_400_naming_file(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.audio.transcriptions.create(model="openai/whisper-1", file=("notes.wav", b"not audio at all" * 8))
    assert ei.value.status_code == 400
    assert ei.value.body.get("param") == "file", ei.value.body


def test_unknown_model_is_a_404(oai):
    with open(JFK, "rb") as f, pytest.raises(openai.NotFoundError) as ei:
        oai.audio.transcriptions.create(model="openai/whisper-9", file=f)
    assert ei.value.body.get("param") == "model"


def test_models_list(oai):
    models = list(oai.models.list())
    ids = {m.id for m in models}
    assert {"openai/whisper-1", "openai/tts-1", "local/whisper-base", "local/hibari"} <= ids
    for m in models:
        assert m.object == "model"
        assert m.owned_by == m.id.split("/")[0]
        assert isinstance(m.created, int) and m.created > 0
    m = oai.models.retrieve("openai/whisper-1")
    assert m.id == "openai/whisper-1" and m.owned_by == "openai"


# ---- the openai npm SDK -------------------------------------------------------------------------------------
JS_DIR = Path(__file__).parent / "js"


def _npm_install() -> str | None:
    """Install tests/js's pinned dependencies if missing; returns why it could not, or None."""
    if (JS_DIR / "node_modules" / "openai" / "package.json").exists():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    cmd = [npm, "ci" if (JS_DIR / "package-lock.json").exists() else "install", "--no-audit", "--no-fund"]
    try:
        p = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "npm timed out (registry unreachable?)"
    if p.returncode != 0:
        return f"npm failed (registry unreachable?): {p.stderr.strip()[-500:]}"
    return None


def test_openai_npm_sdk(server, tmp_path):
    must_run = os.environ.get("CI", "").lower() == "true"
    why = "node is not installed" if shutil.which("node") is None else _npm_install()
    if why:
        if must_run:
            pytest.fail(f"the npm SDK test cannot run under CI: {why}")
        pytest.skip(f"openai npm SDK not available: {why}")
    p = subprocess.run(["node", str(JS_DIR / "sdk_test.mjs"), str(JFK), str(SPANISH), str(tmp_path)],
                       cwd=JS_DIR, env={**os.environ, "AUDIOROUTER_URL": server.url},
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])

    assert wer([JFK_TEXT], [out["json"]["text"]]).wer < 0.1, out["json"]
    assert out["json"]["usage"]["type"] == "duration" and abs(out["json"]["usage"]["seconds"] - 11.0) < 0.05
    assert isinstance(out["text"], str) and not out["text"].lstrip().startswith("{")
    assert normalize(out["text"]) == normalize(out["json"]["text"])

    v = out["verbose"]
    assert v["language"] == "english" and abs(v["duration"] - 11.0) < 0.05
    prev = 0.0
    for w in v["words"]:
        assert prev - 1e-6 <= w["start"] <= w["end"] <= v["duration"] + 0.05
        prev = w["start"]
    assert normalize(" ".join(w["word"] for w in v["words"])) == normalize(v["text"])

    assert "conference" in normalize(out["translation"]).split(), out["translation"]

    assert out["speech_content_type"].startswith("audio/mpeg")
    mp3 = (tmp_path / "output.mp3").read_bytes()
    assert len(mp3) == out["speech_bytes"]
    with av.open(io.BytesIO(mp3), format="mp3") as c:
        s = c.streams.audio[0]
        assert 1.0 < sum(f.samples for f in c.decode(s)) / s.rate < 10

    assert wer(["Please call me back tomorrow morning."], [out["round_trip"]]).wer <= 0.2, out["round_trip"]
    assert out["bad_voice"]["status"] == 400 and out["bad_voice"]["param"] == "voice", out["bad_voice"]
    assert {"openai/whisper-1", "openai/tts-1-hd", "local/hibari"} <= set(out["models"])
