"""Word timings for a known text from what a recogniser heard in its audio (jobs/speech_timings.py).

The text we synthesized is known; the local Whisper's word timestamps on the generated audio say when the
words it heard were spoken. `place_words` lines the two word sequences up (difflib on case- and
punctuation-folded words): a text word matched by a heard word takes its times; a run of text words heard
differently ("25" heard as "twenty five", a name misheard) shares the span of the heard words in its place,
by character length; text words nothing was heard for share the gap between their neighbours. So every word
of the text gets a start and an end, in order, and the words are the text's own (not the recogniser's
spelling)."""
from __future__ import annotations

import difflib
import re

import av
import numpy as np

from ..core.types import Word

RATE = 16000
_TOKEN = re.compile(r"\S+")


def _fold(w: str) -> str:
    return "".join(ch for ch in w.lower() if ch.isalnum())


def known_words(text: str) -> list[str]:
    """The text's words as written: whitespace-separated, punctuation at either end left off; a token of
    punctuation alone ("—", "...") is no word."""
    out = []
    for tok in _TOKEN.findall(text):
        keep = [k for k, ch in enumerate(tok) if ch.isalnum()]
        if keep:
            out.append(tok[keep[0]:keep[-1] + 1])
    return out


def _spread(words: list[str], start: float, end: float) -> list[Word]:
    """`words` sharing [start, end] in order, each by its length."""
    end = max(end, start)
    weights = [max(1, len(_fold(w))) for w in words]
    total = float(sum(weights))
    out, t = [], start
    for w, n in zip(words, weights):
        nxt = t + (end - start) * n / total
        out.append(Word(w, round(t, 3), round(nxt, 3)))
        t = nxt
    return out


def place_words(text_words: list[str], heard: list[Word], duration: float) -> list[Word]:
    """A start and end for every one of `text_words` from the `heard` words (with their times) of the same
    audio, `duration` seconds long."""
    if not text_words:
        return []
    heard = [w for w in heard if _fold(w.word)]
    a = [_fold(w) for w in text_words]
    b = [_fold(w.word) for w in heard]
    placed: list[Word | None] = [None] * len(text_words)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        # the same words, or as many words heard as written but spelt differently: one each
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                h = heard[j1 + k]
                placed[i1 + k] = Word(text_words[i1 + k], h.start, max(h.end, h.start), h.probability)
        elif tag == "replace":
            for k, w in enumerate(_spread(text_words[i1:i2], heard[j1].start, heard[j2 - 1].end)):
                placed[i1 + k] = w
        # "delete" (text words not heard) are placed in the gaps below; "insert" (heard, not in the text) dropped
    out: list[Word] = []
    i = 0
    while i < len(placed):
        p = placed[i]
        if p is not None:
            start = max(p.start, out[-1].start if out else 0.0)  # never before the word in front of it
            out.append(Word(p.word, round(float(start), 3), round(float(max(p.end, start)), 3), p.probability))
            i += 1
            continue
        j = i
        while j < len(placed) and placed[j] is None:
            j += 1
        lo = out[-1].end if out else 0.0
        nxt = placed[j] if j < len(placed) else None
        hi = nxt.start if nxt is not None else max(duration, lo)
        out.extend(_spread(text_words[i:j], lo, max(hi, lo)))
        i = j
    return out


ONSET_DB = -35.0  # relative to the loudest 10 ms: where speech starts in synthesized audio (clean silence before)


def speech_onset(samples: np.ndarray, rate: int) -> float | None:
    """Seconds to the first 10 ms frame within ONSET_DB of the loudest one (None: silence throughout)."""
    n = max(1, rate // 100)
    frames = len(samples) // n
    if not frames:
        return None
    rms = np.sqrt(np.mean(np.square(samples[:frames * n].reshape(frames, n), dtype=np.float64), axis=1))
    peak = float(rms.max())
    if peak <= 0.0:
        return None
    return int(np.argmax(rms >= peak * 10.0 ** (ONSET_DB / 20.0))) * n / rate


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono at `rate` -> float32 mono at 16 kHz (what Whisper takes), through libav's resampler."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate == RATE or not len(samples):
        return samples
    rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    parts: list[np.ndarray] = []
    step = rate  # one second per frame
    for i in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(samples[i:i + step].reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        parts.extend(f.to_ndarray().reshape(-1) for f in rs.resample(frame))
    parts.extend(f.to_ndarray().reshape(-1) for f in rs.resample(None))
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
