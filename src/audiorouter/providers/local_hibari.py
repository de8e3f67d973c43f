"""hibari TTS, in-process: float32 mono at 24 kHz, one chunk per sentence, the first sentence cut after a
few words so that the first audio leaves after a short synthesis instead of a whole sentence's."""
from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.text import pack


def bundled_voices() -> list[str]:
    """Only voices whose weights ship inside the package; the others would be downloaded and fail offline."""
    with open(Path(str(resources.files("hibari"))) / "assets" / "voices.json", encoding="utf-8") as f:
        voices = json.load(f)
    return [name for name, v in voices.items() if v.get("bundled")]


# ---- the first unit --------------------------------------------------------------------------------------
# Synthesis time grows with what the model is given (on the 2-core machine ~5 ms + 0.2 ms per phoneme for
# the network, plus the waveform of every 12.5 ms frame, ~0.7 s of them padding silence): a 45-character
# sentence takes ~22 ms, its first four words ~13 ms. So a first sentence longer than FIRST_UNIT_MAX phoneme
# characters is cut in two, the head (a clause, else a few words ending at a phrase boundary) sent while the
# rest is synthesized. The sentence is phonemized whole first and cut between its tokens, so normalisation
# (numbers, money, dates) and pronunciation are those of the whole sentence and no word is lost or doubled.
FIRST_UNIT_MAX = 26
HEAD_MIN, HEAD_TARGET, HEAD_MAX = 8, 16, 24  # phoneme characters in a head cut between words (a word ~5)
CLAUSE_HEAD_MAX = 34  # a clause break (comma, semicolon, colon, dash) up to here beats a word break
TAIL_MIN = 8
_CLAUSE_END = tuple(",;:—–…")
_NO_TAIL_START = set(",;:—–….!?\"“”()")
# Penn tags (hibari's tagger) a head may end on: nouns, pronouns, numbers, verbs, adverbs, particles; never
# a determiner, adjective, preposition or conjunction, which bind to the next word.
_HEAD_END = {"NN", "NNS", "NNP", "NNPS", "PRP", "CD", "RB", "RBR", "RBS", "RP", "UH", "EX",
             "VB", "VBD", "VBG", "VBN", "VBP", "VBZ"}
_NOMINAL = {"NN", "NNS", "NNP", "NNPS", "PRP", "CD", "EX"}
_PREDICATE_START = {"VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "MD", "IN", "TO", "CC", "WDT", "WP", "WRB", "RB"}
_OBJECT_START = {"DT", "IN", "TO", "PRP", "PRP$", "CD", "PDT"}
OTHER_BREAK_COST = 6  # a break that is not a phrase boundary costs as much as this many characters off target
LATE_CLAUSE_MAX = 60  # with no good word break early on, a clause break up to here
LAST_RESORT_COST = 100  # then any break after a content word (stressed), up to CLAUSE_HEAD_MAX
_NEVER_HEAD_END = {"DT", "PDT", "IN", "TO", "CC", "PRP$", "WDT", "WP", "WP$", "POS", "MD"}
_STRESS = ("ˈ", "ˌ")
_MODEL_CLAUSE = re.compile(r"(?<=[,;:—])\s+")  # hibari.tts._CLAUSE

# Each unit the model makes starts with ~0.3 s and ends with ~0.4-0.6 s of silence (digital zero, and a decay
# from -40 to -90 dB). Inside a sentence that silence is cut down to a pause that fits the break (the model's
# own pause at a comma is ~0.15-0.2 s; between words there is none): what is kept is everything above
# SILENCE_DB (relative to the unit's peak) plus the margins below, faded over FADE_S where a cut is not at a
# zero sample. Between sentences nothing is cut.
SILENCE_DB = -60.0
WORD_SEAM_S = (0.04, 0.03)  # kept at the end of the head, at the start of the tail
CLAUSE_SEAM_S = (0.10, 0.06)
FADE_S = 0.005


def split_tokens(tokens: Sequence[tuple[str, str, bool]]) -> tuple[str, str, str | None]:
    """tokens: (phonemes, part-of-speech tag, followed by a space) of one sentence, in order; their phoneme
    string is "".join(p + " " * space).strip(). Returns (head, tail, "clause" | "word") with
    head + " " + tail == that string, or (string, "", None) when it stays whole (short, or no break).

    The head ends at the first clause break within CLAUSE_HEAD_MAX characters; else at the word break
    nearest HEAD_TARGET, phrase boundaries (subject | verb, verb | object, noun | preposition) preferred;
    else at a later clause break (up to LATE_CLAUSE_MAX); else after any content word."""
    whole = "".join(p + (" " if sp else "") for p, _, sp in tokens).strip()
    if len(whole) <= FIRST_UNIT_MAX:
        return whole, "", None
    best: tuple[float, int] | None = None
    late_clause = None
    head = ""
    for k in range(1, len(tokens)):
        p, tag, space = tokens[k - 1]
        head += p + (" " if space else "")
        n = len(head.rstrip())
        if n > LATE_CLAUSE_MAX or len(whole) - n - 1 < TAIL_MIN:
            break
        nxt_p, nxt_tag, _ = tokens[k]
        if not space or not nxt_p or nxt_p[0] in _NO_TAIL_START or n < HEAD_MIN:
            continue
        if p.endswith(_CLAUSE_END):
            if n <= CLAUSE_HEAD_MAX:
                return whole[:n], whole[n + 1:], "clause"
            late_clause = late_clause or n
            continue
        if n > CLAUSE_HEAD_MAX or not p:
            continue
        if tag in _HEAD_END and n <= HEAD_MAX:
            phrase = ((tag in _NOMINAL or tag in ("RB", "RP")) and nxt_tag in _PREDICATE_START) or \
                     (tag.startswith("VB") and nxt_tag in _OBJECT_START)
            cost = abs(n - HEAD_TARGET) + (0 if phrase else OTHER_BREAK_COST)
        elif tag not in _NEVER_HEAD_END and any(s in p for s in _STRESS):  # last resort: after a content word
            cost = abs(n - HEAD_TARGET) + LAST_RESORT_COST
        else:
            continue
        if best is None or cost < best[0]:
            best = (cost, n)
    if best is not None and best[0] < LAST_RESORT_COST:
        n, seam = best[1], "word"
    elif late_clause is not None:
        n, seam = late_clause, "clause"
    elif best is not None:
        n, seam = best[1], "word"
    else:
        return whole, "", None
    return whole[:n], whole[n + 1:], seam


def trim_silence(audio: np.ndarray, rate: int, *, lead: float | None = None,
                 trail: float | None = None) -> np.ndarray:
    """Cut the silence before the first / after the last sample above SILENCE_DB down to `lead` / `trail`
    seconds (None: keep it all), with a short fade where the cut falls on a non-zero sample."""
    if audio.size == 0:
        return audio
    mag = np.abs(audio)
    peak = float(mag.max())
    if peak == 0.0:
        return audio
    loud = np.flatnonzero(mag > peak * 10.0 ** (SILENCE_DB / 20.0))
    start = 0 if lead is None else max(0, int(loud[0]) - int(lead * rate))
    end = len(audio) if trail is None else min(len(audio), int(loud[-1]) + 1 + int(trail * rate))
    if start == 0 and end == len(audio):
        return audio
    out = audio[start:end].astype(np.float32, copy=True)
    fade = min(int(FADE_S * rate), len(out) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
        if start:
            out[:fade] *= ramp
        if end < len(audio):
            out[-fade:] *= ramp[::-1]
    return out


def _sentence_tokens(g2p, sentence: str) -> list[tuple[str, str, bool]] | None:
    """What hibari's G2P.__call__ does, keeping the tokens: (phonemes, tag, space) each; None if this hibari
    does not expose them (then the sentence is simply not cut)."""
    try:
        from hibari.g2p.normalize import normalize
        toks = g2p.phonemize_tokens(g2p.tokenize(normalize(sentence)))
        unk = g2p.unk
        return [(unk if t.phonemes is None else t.phonemes, t.tag, bool(t.whitespace)) for t in toks]
    except (ImportError, AttributeError, TypeError):
        return None


def _model_chunks(ps: str) -> list[str]:
    """hibari's own cut of a phoneme string longer than the model takes (as in Hibari.phonemize)."""
    try:
        from hibari.tts import MAX_PHONEMES as limit
    except ImportError:
        limit = 400
    if len(ps) <= limit:
        return [ps] if ps else []
    return pack(_MODEL_CLAUSE.split(ps), limit)


class HibariEngine:
    """stream() synthesizes unit by unit in the calling thread. After the first unit (which goes out as soon
    as it exists), each unit's waveform (hibari's DSP, ~1/3 of the work) is made in one helper thread while
    the network runs on the next unit, when `spare_core()` says no other local job is running: a lone
    request then finishes ~20 % sooner (x real-time), and busy machines are not oversubscribed."""
    sample_rate = 24000

    def __init__(self, cache_dir: Path, threads: int = 1):
        os.environ.setdefault("HIBARI_HOME", str(Path(cache_dir) / "hibari"))
        self.threads = threads
        self._tts: dict[str, object] = {}
        self._lock = threading.Lock()
        self._dsp: ThreadPoolExecutor | None = None

    def load(self, voice: str = "heart"):
        with self._lock:
            tts = self._tts.get(voice)
            if tts is None:
                from hibari import Hibari
                tts = Hibari(voice=voice, threads=self.threads)
                tts.g2p  # noqa: B018 - load the G2P now, not on the first sentence
                self._tts[voice] = tts
            return tts

    def warm_up(self, voice: str = "heart") -> None:
        """Load the voice and synthesize once (a cut first sentence and a whole one, both code paths), so that
        the first request does not pay for onnxruntime's first runs, the G2P's caches and the FFT plans."""
        text = "The engine warms up before the first request. Then it speaks. Quickly."
        for spare in (False, True):
            for _ in self.stream(text, voice, spare_core=(lambda: True) if spare else (lambda: False)):
                pass

    def close(self) -> None:
        if self._dsp is not None:
            self._dsp.shutdown(wait=False, cancel_futures=True)

    def units(self, tts, text: str) -> Iterator[tuple[str, tuple[float | None, float | None]]]:
        """(phonemes, (lead, trail) silence to keep in seconds, None = all) for each synthesis unit, in order:
        one per sentence (hibari cuts one over its phoneme limit at clauses), the first sentence cut by
        split_tokens. Sentences are phonemized one at a time, so the first is not held up by the rest."""
        sentences = tts.split_sentences(text)
        if not sentences:
            return
        toks = _sentence_tokens(tts.g2p, sentences[0])
        if toks is not None:
            head, tail, seam = split_tokens(toks)
            if tail:
                keep = CLAUSE_SEAM_S if seam == "clause" else WORD_SEAM_S
                yield head, (None, keep[0])
                for i, ps in enumerate(_model_chunks(tail)):
                    yield ps, (keep[1] if i == 0 else None, None)
            else:
                for ps in _model_chunks(head):
                    yield ps, (None, None)
        else:
            for ps in tts.phonemize(sentences[0]):
                yield ps, (None, None)
        for sentence in sentences[1:]:
            for ps in tts.phonemize(sentence):
                yield ps, (None, None)

    def stream(self, text: str, voice: str = "heart", speed: float = 1.0,
               cancelled: Callable[[], bool] = lambda: False,
               spare_core: Callable[[], bool] = lambda: False) -> Iterator[np.ndarray]:
        tts = self.load(voice)
        model_speed = float(min(max(speed, 0.5), 2.0))
        rest = 1.0 if model_speed == speed else speed / model_speed
        rate = self.sample_rate
        split = hasattr(tts, "sess")  # the network and the waveform as two steps (else from_ids does both)

        def finish(net, seam) -> np.ndarray:
            audio = _waveform(net) if split else net
            if rest != 1.0:
                audio = _time_scale(audio, rest)
            lead, trail = seam
            if lead is not None or trail is not None:
                audio = trim_silence(audio, rate, lead=lead, trail=trail)
            return audio.astype(np.float32, copy=False)

        pending: Future | None = None  # the previous unit's waveform, being made in the helper thread
        try:
            for i, (ps, seam) in enumerate(self.units(tts, text)):
                if cancelled():
                    return
                ids = tts.ids(ps)
                net = _network(tts, ids, model_speed) if split else tts.from_ids(ids, model_speed)
                if pending is not None:
                    yield pending.result()
                    pending = None
                if i > 0 and split and spare_core():
                    pending = self._helper().submit(finish, net, seam)
                else:
                    yield finish(net, seam)
            if pending is not None and not cancelled():
                yield pending.result()
                pending = None
        finally:
            if pending is not None:
                pending.cancel()

    def _helper(self) -> ThreadPoolExecutor:
        if self._dsp is None:
            with self._lock:
                if self._dsp is None:
                    self._dsp = ThreadPoolExecutor(1, thread_name_prefix="ar-hibari-dsp")
        return self._dsp


def _network(tts, ids: list[int], speed: float):
    """hibari's from_ids, first half: the ONNX network (frames of spectral parameters), or None when empty."""
    if len(ids) < 3:
        return None
    out = tts.sess.run(None, {"ids": np.asarray([ids], np.int64), "speed": np.asarray([speed], np.float32)})
    return [o[0] for o in out]


def _waveform(net) -> np.ndarray:
    """hibari's from_ids, second half: the vocoder DSP (numpy/scipy, releases the GIL for most of its time)."""
    if net is None:
        return np.zeros(0, np.float32)
    from hibari import dsp
    return dsp.synth(*net, np.random.default_rng())


def _time_scale(x: np.ndarray, factor: float) -> np.ndarray:
    """Speed beyond the model's range: resample (changes pitch a little, keeps it intelligible)."""
    n = max(1, round(len(x) / factor))
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)
