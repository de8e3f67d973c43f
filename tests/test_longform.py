"""Long audio: server-side chunking at silences and stitching (jobs/transcription.py, audio/chunking.py).

A file of >= 4 minutes is built from dev clips with exact references and sent to servers whose chunk limit
is deliberately small, so it is cut into many chunks. Checked: accuracy (pooled WER within CHUNKED_WER_MARGIN
of the same clips transcribed one by one), timestamps (monotonic, inside the file, words too), every response
format (json, verbose_json, text, srt, vtt; the last three on the file's first two minutes, still 6+ chunks),
multipart and JSON input, and the same orchestration against an upstream provider (a fake OpenAI) whose
catalog limit forces chunks: each chunk within the limit, the previous chunk's text sent as prompt, results
stitched with offsets. Every transcription of the local engine here is `slow` (minutes of Whisper on 2 cores);
the clip-by-clip baselines are the session's shared ones (conftest.ClipTexts)."""
from __future__ import annotations

import io
import json
import re

import av
import httpx
import numpy as np
import openai
import pytest

from audio_factory import load_clip, make_audio
from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import b64, gateway_env, write_catalog
from fakes.openai_fake import OpenAIFake
from fakes.runner import probe
from wer import normalize, wer

CHUNK_SECONDS = 20  # deliberately small: a 4+ minute file becomes 12+ chunks
GAP_S = 0.6
MIN_TOTAL_S = 245.0
MID_TOTAL_S = 120.0
# Chunked minus clip-by-clip pooled WER is not zero: a chunk gives Whisper other context than a lone clip, and
# CTranslate2's CPU kernels (DNNL AVX-512 or AVX2, MKL; picked by the CPU) change which words that flips.
# Measured on these files (issue 11, CT2_USE_MKL / ONEDNN_MAX_CPU_ISA): +0.5 to +1.1 points on the 20 s
# chunk file (559 words), +0.5 (AVX-512) and +2.0 (AVX2) on the LibriSpeech upload (~650 words). 3 points is
# above that spread; losing speech costs more (issue 11: +4.8 points), and the per-utterance check of
# test_long_upload_loses_no_utterance catches a lost sentence whatever the pooled figure.
CHUNKED_WER_MARGIN = 0.03


def exact_english_clips(min_total_s: float) -> list[dict]:
    """English clips with exact references, shortest-named first, until >= min_total_s of speech and gaps."""
    with open(DEV_AUDIO / "manifest.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    good = [r for r in rows if r.get("reference_quality") == "exact" and r.get("language") == "en"
            and r.get("text") and not r["file"].startswith("long_concat") and r["duration_s"] <= 35]
    good.sort(key=lambda r: r["file"])
    out, total = [], 0.0
    for r in good:
        out.append(r)
        total += r["duration_s"] + GAP_S
        if total >= min_total_s:
            break
    assert total >= min_total_s, f"only {total:.0f} s of exact English clips"
    return out


def joined(clips: list[dict], gap_s: float = GAP_S) -> dict:
    """The clips joined with short silences, as one 16 kHz FLAC; and where each clip lies."""
    parts, spans, t = [], [], 0.0
    gap = np.zeros(int(gap_s * 16000), np.float32)
    for r in clips:
        s = load_clip(r["file"])
        parts += [s, gap]
        spans.append((t, t + len(s) / 16000))
        t += (len(s) + len(gap)) / 16000
    samples = np.concatenate(parts)
    return {"data": make_audio(samples, "flac"), "duration": len(samples) / 16000, "spans": spans,
            "refs": [r["text"] for r in clips], "rows": clips}


@pytest.fixture(scope="module")
def clips() -> list[dict]:
    return exact_english_clips(MIN_TOTAL_S)


@pytest.fixture(scope="module")
def long_file(clips) -> dict:
    return joined(clips)


@pytest.fixture(scope="module")
def mid_file() -> dict:
    """The first two minutes of the same clips: 6+ chunks at CHUNK_SECONDS, for the checks of each response
    format, where the number of chunks matters and not the length (each format is transcribed afresh)."""
    return joined(exact_english_clips(MID_TOTAL_S))


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("longform")
    s = ServerProcess(env={"AUDIOROUTER_CHUNK_SECONDS": str(CHUNK_SECONDS),
                           "AUDIOROUTER_CACHE_PATH": str(tmp / "transcripts.db"),
                           "AUDIOROUTER_DATA_DIR": str(tmp / "data")}, tmp=tmp).start()
    yield s
    s.stop()


@pytest.fixture
def client(gw):
    with httpx.Client(base_url=gw.url, timeout=900) as c:
        yield c


def post_json(client, data: bytes, fmt: str = "flac", headers: dict | None = None, **extra) -> httpx.Response:
    return client.post("/api/v1/audio/transcriptions", headers=headers,
                       json={"model": "local/whisper-base", "input_audio": {"data": b64(data), "format": fmt}, **extra})


NO_STORE = {"Cache-Control": "no-store"}  # the long file again: transcribed again, not served from the cache


def assert_transcribed_in_chunks(headers) -> None:
    assert headers.get("x-cache") in (None, "BYPASS", "MISS"), headers
    assert int(headers.get("x-chunks", 0)) >= 5, headers  # a cache hit never cuts the audio


def assert_monotonic_within(items: list[dict], duration: float, what: str) -> None:
    prev = 0.0
    for x in items:
        assert 0.0 <= x["start"] <= x["end"] <= duration + 1e-3, f"{what} outside the file: {x}"
        assert x["start"] >= prev - 1e-3, f"{what} starts go backwards at {x}"
        prev = x["start"]


@pytest.mark.slow
def test_chunked_wer_matches_clip_by_clip(client, long_file, clips, clip_texts):
    r = post_json(client, long_file["data"], headers=NO_STORE)
    assert r.status_code == 200, r.text
    assert int(r.headers["x-chunks"]) >= 5, r.headers
    assert abs(float(r.headers["x-audio-duration"]) - long_file["duration"]) < 0.05
    body = r.json()
    assert abs(body["usage"]["seconds"] - long_file["duration"]) < 0.05
    chunked = wer([" ".join(long_file["refs"])], [body["text"]])

    # each clip transcribed whole (shared with test_accuracy and the LibriSpeech test below: conftest.ClipTexts)
    one_by_one = wer(long_file["refs"], clip_texts(clips))
    print(f"pooled WER: chunked {chunked.wer:.4f}, clip by clip {one_by_one.wer:.4f}")
    assert chunked.wer <= one_by_one.wer + CHUNKED_WER_MARGIN, (chunked, one_by_one)


@pytest.mark.slow
def test_chunked_timestamps_words_and_segments(client, long_file):
    r = post_json(client, long_file["data"], headers=NO_STORE, response_format="verbose_json",
                  timestamp_granularities=["word", "segment"])
    assert r.status_code == 200, r.text
    body = r.json()
    dur = long_file["duration"]
    assert abs(body["duration"] - dur) < 0.05
    segs, words = body["segments"], body["words"]
    assert len(segs) >= int(r.headers["x-chunks"])
    assert [s["id"] for s in segs] == list(range(len(segs)))
    assert_monotonic_within(segs, dur, "segment")
    assert_monotonic_within(words, dur, "word")
    # speech is found throughout the file, not only in the first chunk
    assert words[-1]["end"] > dur - 20 and segs[0]["start"] < 5
    # every clip has words inside its span (nothing lost at the seams)
    for a, b in long_file["spans"]:
        if b - a > 2.0:
            assert any(a - 0.5 <= w["start"] <= b + 0.5 for w in words), f"no words in {a:.1f}-{b:.1f} s"
    joined = " ".join(w["word"] for w in words)
    assert wer([body["text"]], [joined]).wer < 0.05  # the words are the text


SRT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)$")


def parse_cues(text: str) -> list[tuple[float, float, list[str]]]:
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [x for x in block.splitlines() if x.strip()]
        for i, line in enumerate(lines):
            m = SRT_TIME.match(line.strip())
            if m:
                g = [int(x) for x in m.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                cues.append((start, end, lines[i + 1:]))
                break
    return cues


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_chunked_subtitles(client, mid_file, fmt):
    r = post_json(client, mid_file["data"], response_format=fmt, headers=NO_STORE)
    assert r.status_code == 200, r.text
    assert_transcribed_in_chunks(r.headers)
    text = r.text
    if fmt == "vtt":
        assert text.startswith("WEBVTT")
    cues = parse_cues(text)
    assert len(cues) > mid_file["duration"] / 12  # (was > 20 on the ~250 s file: the same density)
    prev_end = 0.0
    for start, end, lines in cues:
        assert start >= prev_end - 1e-3 and end >= start and end <= mid_file["duration"] + 1e-3
        assert end - start <= 7.5, (start, end, lines)
        assert 1 <= len(lines) <= 2, lines
        assert all(len(x) <= 42 or " " not in x for x in lines), lines
        prev_end = end
    assert cues[-1][1] > mid_file["duration"] - 25


@pytest.mark.slow
def test_chunked_multipart_text_with_openai_sdk(gw, mid_file):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", timeout=900)
    raw = client.audio.transcriptions.with_raw_response.create(
        model="local/whisper-base", response_format="text", extra_headers=NO_STORE,
        file=("long.flac", io.BytesIO(mid_file["data"]), "audio/flac"))
    assert_transcribed_in_chunks(raw.headers)
    out = raw.parse()
    text = out if isinstance(out, str) else out.text
    assert wer([" ".join(mid_file["refs"])], [text]).wer < 0.25


# ---- no speech lost: LibriSpeech read one after another, as one upload, at the default chunk size ---------
UTTERANCE_GAP_S = 0.5
MIN_UTTERANCE_RECALL = 0.5


@pytest.fixture(scope="module")
def librispeech_file() -> dict:
    with open(DEV_AUDIO / "manifest.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    utts = [r for r in rows if r["file"].startswith("librispeech_") and r.get("reference_quality") == "exact"]
    assert len(utts) >= 30, len(utts)
    return joined(utts, UTTERANCE_GAP_S)


@pytest.mark.slow
def test_long_upload_loses_no_utterance(server, librispeech_file, clip_texts):
    """Every utterance of a long multipart upload is in the transcript (issue 11: two stretches of 7 s and
    20 s of clear speech were missing with no warning), and chunking costs no more than noise in WER."""
    rows, spans = librispeech_file["rows"], librispeech_file["spans"]
    with httpx.Client(base_url=server.url, timeout=900, headers=NO_STORE) as c:
        r = c.post("/v1/audio/transcriptions", data={"model": "local/whisper-base", "response_format": "verbose_json"},
                   files={"file": ("long.flac", librispeech_file["data"], "audio/flac")})
        assert r.status_code == 200, r.text
        assert_transcribed_in_chunks(r.headers)
        segments = r.json()["segments"]
    hyps = clip_texts(rows)  # each utterance transcribed whole by the same server (conftest.ClipTexts)
    refs = [row["text"] for row in rows]
    lost = []
    for row, (a, b) in zip(rows, spans):
        heard = set(normalize(" ".join(s["text"] for s in segments if s["start"] < b + 1.0 and s["end"] > a - 1.0)).split())
        words = normalize(row["text"]).split()
        recall = sum(w in heard for w in words) / len(words)
        if recall < MIN_UTTERANCE_RECALL:
            lost.append(f"{a:.1f}-{b:.1f} s {row['utt_id']}: {recall:.0%} of {words}")
    assert not lost, "utterances missing from the transcript:\n" + "\n".join(lost)
    chunked = wer([" ".join(refs)], [" ".join(s["text"] for s in segments)])
    one_by_one = wer(refs, hyps)
    print(f"pooled WER: chunked {chunked}, clip by clip {one_by_one}")
    assert chunked.wer <= one_by_one.wer + CHUNKED_WER_MARGIN, (chunked, one_by_one)


# ---- upstream providers: the same chunking against a fake OpenAI --------------------------------------
@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    fake = OpenAIFake().start()
    tmp = tmp_path_factory.mktemp("longform-upstream")
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"}}
    models = [{"id": "test/whisper-30s", "name": "Whisper with a 30 s limit", "kind": "transcription",
               "endpoints": [{"provider": "openai", "upstream_model": "whisper-1", "pricing": {"per_minute": 0.006},
                              "limits": {"max_seconds": 30},
                              "capabilities": {"prompt": True, "word_timestamps": True}}]}]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    env = gateway_env(cat, tmp, OPENAI_API_KEY=fake.api_key, AUDIOROUTER_RETRY_ATTEMPTS="1")
    s = ServerProcess(env=env, tmp=tmp).start()
    yield s, fake
    s.stop()
    fake.stop()


def test_upstream_chunks_fit_limit_and_carry_context(upstream, long_file):
    gw, fake = upstream
    fake.clear()
    n = 100 * 16000
    from audio_factory import decode_bytes
    samples, _ = decode_bytes(long_file["data"])
    part = make_audio(samples[:n], "wav")
    with httpx.Client(base_url=gw.url, timeout=300) as c:
        r = c.post("/api/v1/audio/transcriptions", json={
            "model": "test/whisper-30s", "input_audio": {"data": b64(part), "format": "wav"},
            "response_format": "verbose_json", "timestamp_granularities": ["word", "segment"],
            "prompt": "Vocabulary: Thornton."})
    assert r.status_code == 200, r.text
    assert not fake.violations, fake.violations
    calls = [c for c in fake.calls if c.path.endswith("/audio/transcriptions")]
    assert len(calls) == int(r.headers["x-chunks"]) >= 4
    durations = [probe(c.files["file"][2]).duration for c in calls]
    assert all(d <= 30.0 for d in durations), durations
    assert abs(sum(durations) - 100.0) < 0.1
    # the chunks, re-encoded losslessly, are the client's samples exactly: cut without a gap or an overlap
    with av.open(io.BytesIO(part)) as src:
        sent = np.concatenate([f.to_ndarray().reshape(-1) for f in src.decode(audio=0)])
    got = []
    for c in calls:
        assert c.files["file"][0].endswith(".flac"), c.files["file"][0]
        with av.open(io.BytesIO(c.files["file"][2])) as up:
            got += [f.to_ndarray().reshape(-1) for f in up.decode(audio=0)]
    assert np.array_equal(np.concatenate(got), sent)
    script = fake.script
    # every chunk after the first is prompted with the user's prompt and the previous chunk's text
    prompts = [c.f1("prompt") for c in calls]
    assert prompts[0] == "Vocabulary: Thornton."
    assert all(p and p.startswith("Vocabulary: Thornton.") and script.split()[-1] in p for p in prompts[1:]), prompts
    body = r.json()
    assert body["text"] == " ".join([script] * len(calls))
    assert_monotonic_within(body["segments"], 100.0, "segment")
    assert_monotonic_within(body["words"], 100.0, "word")
    # words of chunk k lie inside chunk k: the fake spreads the script over each chunk it hears
    assert body["words"][-1]["start"] > 100.0 - durations[-1]
    assert abs(body["usage"]["cost"] - 0.006 * 100 / 60) < 1e-6
    for fmt in ("json", "text", "srt", "vtt"):
        with httpx.Client(base_url=gw.url, timeout=300) as c:
            r2 = c.post("/api/v1/audio/transcriptions", json={
                "model": "test/whisper-30s", "input_audio": {"data": b64(part), "format": "wav"}, "response_format": fmt})
        assert r2.status_code == 200, (fmt, r2.text)
        if fmt in ("srt", "vtt"):
            cues = parse_cues(r2.text)
            assert cues and cues[-1][1] <= 100.0 + 1e-3 and cues[-1][1] > 100.0 - 30
            assert all(b - a <= 7.5 for a, b, _ in cues)
        elif fmt == "text":
            assert r2.text.strip() == " ".join([script] * len(calls))
