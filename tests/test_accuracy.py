"""Accuracy through the HTTP API: pooled WER of local/whisper-base on the dev set's English clips with exact
references, and a hibari -> Whisper round trip (speech endpoint, then transcription endpoint)."""
from __future__ import annotations

import base64

import pytest

from wer import normalize, wer

WER_LIMIT = 0.12          # plain faster-whisper base (beam 5, VAD) measures about 10.4 % on these clips
ROUND_TRIP_LIMIT = 0.05
NO_CACHE = {"Cache-Control": "no-store"}  # measure the model, not the transcript cache


def _english_exact(manifest: list[dict]) -> list[dict]:
    return [e for e in manifest if e["language"] == "en" and e.get("reference_quality") == "exact" and e["text"]]


def test_normaliser_makes_conventions_agree():
    # the reference conventions of the dev set (LibriSpeech upper case, LJ Speech numbers as words) against
    # what Whisper writes
    assert normalize("MISTER HALE SAID I DON'T") == normalize("Mr. Hale said, \"I don't.\"")
    assert normalize("IN EIGHTEEN THIRTEEN") == normalize("In 1813.")
    assert normalize("EIGHT THE PRESS YARD") == normalize("8. The press-yard.")
    assert normalize("the twenty first") == normalize("the 21st")
    assert normalize("one thousand two hundred people") == normalize("1,200 people")
    assert normalize("ask not") != normalize("ask now")


@pytest.mark.slow
def test_pooled_wer_english_exact(clip_texts, manifest, record_property):
    entries = _english_exact(manifest)
    assert len(entries) >= 40, "the dev manifest should list about 47 English clips with exact references"
    # each clip transcribed whole by the shared server, no-store (conftest.ClipTexts; test_longform's
    # clip-by-clip baselines read the same transcripts)
    hyps = clip_texts(entries)
    refs = [e["text"] for e in entries]
    result = wer(refs, hyps)
    record_property("wer", round(result.wer, 4))
    print(f"\nlocal/whisper-base on {len(entries)} English dev clips: {result}")
    worst = sorted(((wer([r], [h]).wer, e["file"], normalize(r), normalize(h))
                    for r, h, e in zip(refs, hyps, entries)), reverse=True)[:5]
    detail = "\n".join(f"  {w:.0%} {f}\n    ref: {r}\n    hyp: {h}" for w, f, r, h in worst)
    print(detail)
    assert result.wer < WER_LIMIT, f"{result}; worst clips:\n{detail}"


PARAGRAPH = ("The weather was calm on the morning we left the harbor. A small boat carried us past the lighthouse, "
             "and the captain told us stories about the island while the sun came up over the water. "
             "By noon we could see the green hills and the white houses of the village.")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_hibari_whisper_round_trip(client, fmt, record_property):
    r = client.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": PARAGRAPH,
                                                   "response_format": fmt})
    assert r.status_code == 200, r.text
    audio = r.content
    assert len(audio) > 10_000
    r = client.post("/api/v1/audio/transcriptions", headers=NO_CACHE, json={
        "model": "local/whisper-base", "input_audio": {"data": base64.b64encode(audio).decode(), "format": fmt}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["seconds"] > 10  # a paragraph of ~50 words
    result = wer([PARAGRAPH], [body["text"]])
    record_property(f"round_trip_wer_{fmt}", round(result.wer, 4))
    print(f"\nhibari -> whisper ({fmt}): {result}\n  hyp: {body['text']}")
    assert result.wer < ROUND_TRIP_LIMIT, f"{result}: {body['text']!r}"
