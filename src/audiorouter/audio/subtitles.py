"""SRT and WebVTT from a neutral transcript. Cues are built from word timings when there are any (readable
cues: at most two lines of ~42 characters and ~7 s each), else from segments. A diarized transcript's cues
never mix speakers and carry the speaker (core.speakers labels): "[A] text" in SRT, "<v A>text</v>" in VTT."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.speakers import SpeakerLabels
from ..core.text import pack
from ..core.types import Transcript, Word

LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0


@dataclass
class Cue:
    start: float
    end: float
    text: str
    speaker: str | None = None  # diarized transcripts: the label shown (core.speakers), "A" or a known name


def _wrap(text: str, width: int = LINE_CHARS) -> list[str]:
    return pack(text.split(), width)


def _cues_from_words(words: list[Word]) -> list[Cue]:
    cues: list[Cue] = []
    cur: list[Word] = []
    limit = LINE_CHARS * MAX_LINES

    def flush() -> None:
        if cur:
            cues.append(Cue(cur[0].start, cur[-1].end, " ".join(w.word.strip() for w in cur)))
            cur.clear()

    for w in words:
        token = w.word.strip()
        if not token:
            continue
        if cur:
            text = " ".join(x.word.strip() for x in cur) + " " + token
            too_long = len(_wrap(text)) > MAX_LINES or len(text) > limit
            too_slow = w.end - cur[0].start > MAX_CUE_SECONDS
            if too_long or too_slow:
                flush()
        cur.append(w)
        if token[-1] in ".?!" and len(" ".join(x.word.strip() for x in cur)) > LINE_CHARS // 2:
            flush()
    flush()
    return cues


def _split_segment(start: float, end: float, text: str) -> list[Cue]:
    """A long segment without word timings: split at word boundaries, timing by character share."""
    text = text.strip()
    if not text:
        return []
    dur = max(end - start, 0.0)
    pieces: list[str] = []
    cur = ""
    for tok in text.split():
        cand = f"{cur} {tok}" if cur else tok
        if cur and len(_wrap(cand)) > MAX_LINES:
            pieces.append(cur)
            cur = tok
        else:
            cur = cand
    if cur:
        pieces.append(cur)
    total = sum(len(p) for p in pieces) or 1
    while True:  # timing goes by character share: halve the longest piece until every cue fits in time
        i = max((k for k in range(len(pieces)) if " " in pieces[k]), key=lambda k: len(pieces[k]), default=None)
        if i is None or dur * len(pieces[i]) / total <= MAX_CUE_SECONDS:
            break
        toks = pieces[i].split()
        pieces[i:i + 1] = [" ".join(toks[:len(toks) // 2]), " ".join(toks[len(toks) // 2:])]
        total = sum(len(p) for p in pieces) or 1
    cues, t = [], start
    for p in pieces:
        d = dur * len(p) / total
        cues.append(Cue(t, t + d, p))
        t += d
    return cues


def _speaker_cues(transcript: Transcript) -> list[Cue] | None:
    """Cues that never mix speakers, each with its label, when the transcript is diarized; else None."""
    if not any(s.speaker is not None or any(w.speaker is not None for w in s.words) for s in transcript.segments):
        return None
    labels = SpeakerLabels()
    out: list[Cue] = []
    for s in transcript.segments:
        if s.words:
            run: list[Word] = []
            for w in [*s.words, None]:
                spk = (w.speaker or s.speaker) if w is not None else None
                if run and (w is None or spk != (run[0].speaker or s.speaker)):
                    label = labels(run[0].speaker or s.speaker)
                    out.extend(Cue(c.start, c.end, c.text, label) for c in _cues_from_words(run))
                    run = []
                if w is not None:
                    run.append(w)
        elif s.text.strip():
            label = labels(s.speaker)
            out.extend(Cue(c.start, c.end, c.text, label) for c in _split_segment(s.start, s.end, s.text))
    return out


def cues(transcript: Transcript) -> list[Cue]:
    diarized = _speaker_cues(transcript)
    if diarized is not None:
        return diarized
    words = transcript.words
    if words:
        return _cues_from_words(words)
    out: list[Cue] = []
    for s in transcript.segments:
        out.extend(_split_segment(s.start, s.end, s.text))
    if not out and transcript.text.strip():
        out = _split_segment(0.0, transcript.duration or 0.0, transcript.text)
    return out


def _ts(t: float, sep: str) -> str:
    ms = round(max(t, 0.0) * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(transcript: Transcript) -> str:
    blocks = []
    for i, c in enumerate(cues(transcript), 1):
        text = f"[{c.speaker}] {c.text}" if c.speaker else c.text  # the usual SRT speaker convention
        blocks.append(f"{i}\n{_ts(c.start, ',')} --> {_ts(c.end, ',')}\n" + "\n".join(_wrap(text)) + "\n")
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = ["WEBVTT\n"]
    for c in cues(transcript):
        lines = _wrap(c.text)
        if c.speaker:  # WebVTT's voice span, on each line of the cue
            lines = [f"<v {c.speaker}>{ln}</v>" for ln in lines]
        blocks.append(f"{_ts(c.start, '.')} --> {_ts(c.end, '.')}\n" + "\n".join(lines) + "\n")
    return "\n".join(blocks)
