"""SRT and WebVTT from real transcripts: valid syntax, cues of at most two lines of ~42 characters and at
most ~7 s, in order without overlap, inside the audio, and no word lost or added. Over HTTP
(response_format srt / vtt, cues from word timings) and, for the segments-only path (transcripts without
word timings, as some providers return), audio/subtitles.py on the segments of real verbose_json answers."""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import pytest

from audiorouter.audio.subtitles import LINE_CHARS, MAX_CUE_SECONDS, MAX_LINES, to_srt, to_vtt
from audiorouter.core.types import Segment, Transcript, Word
from conftest import DEV_AUDIO, slow_except
from wer import normalize

CLIPS = [
    ("librispeech_test-other_2609-156975-0007.flac", "en"),   # 20 s, long sentences
    ("librispeech_test-other_3080-5032-0009.flac", "en"),     # 23 s
    ("fasterwhisper_multilingual_en_de.mp3", None),           # 60 s, English then German
]
TS = r"(\d{2}):([0-5]\d):([0-5]\d)[,.](\d{3})"
TIMING = re.compile(rf"^{TS} --> {TS}$")


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_srt(text: str) -> list[Cue]:
    assert text.endswith("\n")
    cues = []
    blocks = list(text.strip("\n").split("\n\n"))
    for i, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(i), block  # sequential numbering from 1
        m = TIMING.match(lines[1])
        assert m and "," in lines[1] and "." not in lines[1], lines[1]  # SRT uses a comma before the ms
        cues.append(Cue(_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), lines[2:]))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    assert text.startswith("WEBVTT\n"), text[:20]
    body = text[len("WEBVTT\n"):].strip("\n")
    cues = []
    for block in (body.split("\n\n") if body else []):
        lines = block.split("\n")
        m = TIMING.match(lines[0])
        assert m and "." in lines[0] and "," not in lines[0], lines[0]  # WebVTT uses a full stop
        cues.append(Cue(_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), lines[1:]))
    return cues


def check_cues(cues: list[Cue], duration: float, words: str) -> None:
    assert cues
    prev_end = 0.0
    for c in cues:
        assert 1 <= len(c.lines) <= MAX_LINES, c
        for line in c.lines:
            assert line and line == line.strip(), c
            assert len(line) <= LINE_CHARS or " " not in line, c  # only a single over-long word may exceed
        assert c.end > c.start, c
        assert c.end - c.start <= MAX_CUE_SECONDS + 0.001, c
        assert c.start >= prev_end - 0.001, (c, prev_end)  # in order, no overlap
        prev_end = c.end
    assert prev_end <= duration + 0.5
    assert normalize(" ".join(" ".join(c.lines) for c in cues)) == normalize(words)


class Transcripts(dict):
    """verbose_json with word timings for each clip, straight from the server; each clip transcribed when a
    test first asks for it (`make test-fast` runs the checks on the first clip only)."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def __missing__(self, name: str) -> dict:
        import httpx
        lang = dict(CLIPS)[name]
        body = {"model": "local/whisper-base", "response_format": "verbose_json",
                "timestamp_granularities": ["word", "segment"],
                "input_audio": {"data": base64.b64encode((DEV_AUDIO / name).read_bytes()).decode(),
                                "format": name.rsplit(".", 1)[1]}}
        if lang:
            body["language"] = lang
        r = httpx.post(self.url + "/api/v1/audio/transcriptions", json=body, timeout=600)
        assert r.status_code == 200, r.text
        self[name] = r.json()
        return self[name]


@pytest.fixture(scope="module")
def transcripts(server) -> Transcripts:
    return Transcripts(server.url)


def _post_subtitles(client, name, lang, fmt, path):
    data = (DEV_AUDIO / name).read_bytes()
    if path.startswith("/v1/"):
        fields = {"model": "whisper-1", "response_format": fmt, **({"language": lang} if lang else {})}
        return client.post(path, data=fields, files={"file": (name, data)})
    body = {"model": "local/whisper-base", "response_format": fmt,
            "input_audio": {"data": base64.b64encode(data).decode(), "format": name.rsplit(".", 1)[1]}}
    if lang:
        body["language"] = lang
    return client.post(path, json=body)


@pytest.mark.parametrize("name,lang", slow_except(CLIPS, CLIPS[0]))
@pytest.mark.parametrize("path", ["/api/v1/audio/transcriptions", "/v1/audio/transcriptions"])
def test_srt_over_http(client, transcripts, name, lang, path):
    r = _post_subtitles(client, name, lang, "srt", path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-subrip")
    t = transcripts[name]
    words = " ".join(w["word"] for w in t["words"])
    check_cues(parse_srt(r.text), t["duration"], words)


@pytest.mark.parametrize("name,lang", slow_except(CLIPS, CLIPS[0]))
def test_vtt_over_http(client, transcripts, name, lang):
    r = _post_subtitles(client, name, lang, "vtt", "/api/v1/audio/transcriptions")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/vtt")
    t = transcripts[name]
    words = " ".join(w["word"] for w in t["words"])
    cues = parse_vtt(r.text)
    check_cues(cues, t["duration"], words)
    # the word-timed cues follow the words: each starts at one of the words' start times
    starts = {round(w["start"], 3) for w in t["words"]}
    assert all(round(c.start, 3) in starts for c in cues)


def _segments_only(t: dict) -> Transcript:
    segs = [Segment(id=s["id"], start=s["start"], end=s["end"], text=s["text"]) for s in t["segments"]]
    return Transcript(text=t["text"], language=t["language"], duration=t["duration"], segments=segs)


@pytest.mark.parametrize("name,lang", slow_except(CLIPS, CLIPS[0]))
def test_segment_cues_from_real_transcripts(transcripts, name, lang):
    t = transcripts[name]
    transcript = _segments_only(t)
    assert not transcript.words
    for text, parse in ((to_srt(transcript), parse_srt), (to_vtt(transcript), parse_vtt)):
        cues = parse(text)
        check_cues(cues, t["duration"], t["text"])
        # cues stay within the segment they were cut from
        for c in cues:
            assert any(s["start"] - 0.001 <= c.start and c.end <= s["end"] + 0.001 for s in t["segments"]), c


def test_long_segment_with_uneven_halves_is_split_under_the_limits(transcripts):
    """One long segment (as a provider without word timings may return) whose text splits into a long and
    a short piece: every cue must still be <= 7 s and <= 2 lines."""
    t = transcripts["librispeech_test-other_3080-5032-0009.flac"]
    long_seg = Segment(id=0, start=0.0, end=13.0, text=" ".join(t["text"].split()[:18]))
    transcript = Transcript(text=long_seg.text, duration=13.0, segments=[long_seg])
    check_cues(parse_srt(to_srt(transcript)), 13.0, long_seg.text)


def test_empty_transcript_gives_empty_but_valid_files(client):
    from audio_factory import make_audio, silence
    data = make_audio(silence(3.0), "wav")
    r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1", "response_format": "vtt"},
                    files={"file": ("quiet.wav", data)})
    assert r.status_code == 200
    assert parse_vtt(r.text) == []
    r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1", "response_format": "srt"},
                    files={"file": ("quiet.wav", data)})
    assert r.status_code == 200
    assert r.text.strip() == ""


# ---- fixed expected files: timestamps past an hour ------------------------------------------------------
LATE = Transcript(text="Back after the break. And we are done.", duration=36_005.0, segments=[
    Segment(0, 3725.0, 3727.25, " Back after the break."),
    Segment(1, 35_999.5, 36_001.0, " And we are done."),
])
LATE_WORDS = Transcript(text="Still here.", duration=7200.0, segments=[
    Segment(0, 3599.9995, 3601.5, " Still here.",
            words=[Word(" Still", 3599.9995, 3600.4), Word(" here.", 3600.4, 3601.5)]),
])


def test_srt_hours_are_carried():
    assert to_srt(LATE) == ("1\n01:02:05,000 --> 01:02:07,250\nBack after the break.\n\n"
                            "2\n09:59:59,500 --> 10:00:01,000\nAnd we are done.\n")
    # from word timings; 3599.9995 s rounds to the next hour, not to 00:59:60,000
    assert to_srt(LATE_WORDS) == "1\n01:00:00,000 --> 01:00:01,500\nStill here.\n"


def test_vtt_hours_are_carried():
    assert to_vtt(LATE) == ("WEBVTT\n\n01:02:05.000 --> 01:02:07.250\nBack after the break.\n\n"
                            "09:59:59.500 --> 10:00:01.000\nAnd we are done.\n")
    assert to_vtt(LATE_WORDS) == "WEBVTT\n\n01:00:00.000 --> 01:00:01.500\nStill here.\n"
