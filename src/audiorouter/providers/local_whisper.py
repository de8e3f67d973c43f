"""Whisper through faster-whisper, in-process, with continuous batching across requests.

Every request is cut by the Silero VAD into windows of at most 30 s of speech (silence removed, timestamps
mapped back). Its windows go into one queue; a single decoder thread takes whatever windows are waiting
(up to `batch_size`), encodes them in one CTranslate2 call, detects the language of those that need it from
that same encoder output (plain faster-whisper encodes the first window twice for that), and beam-searches
all of them in one batched `generate`. On a CPU the decoder's small matrix products are bound by reading the
weights, so decoding four requests together costs little more than decoding one: throughput under
concurrent load goes up while a lone request still starts at once (no waiting for a batch to fill).

Windows whose result looks unreliable (too repetitive, too unlikely) are redone alone with faster-whisper's
usual temperature fallback. Requests that want word timestamps or a fixed sampling temperature take the
classic sequential path (`model.transcribe`), which shares the same model.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.chunking import speech_seconds
from ..core.malloc import big_buffers
from ..core.types import Segment, Transcript, Word

os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("audiorouter.whisper")

SAMPLE_RATE = 16000
WINDOW_S = 30
# faster-whisper's defaults for the fallback decision
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
TAIL_REDECODE_S = 1.0  # a window whose text stops this long before its end has its tail decoded again
TAIL_MIN_SPEECH_S = 0.25  # ... if the VAD hears at least this much speech in that tail
LINGER_S = 0.05  # longest wait for requests still preparing their audio to join a batch


class TranscriptionCancelled(Exception):
    """Raised in the calling thread when its `cancelled()` check turns true (the client went away): the
    request's remaining windows are dropped from the decoder's queue instead of being decoded for nobody."""


def _never() -> bool:
    return False


@dataclass
class _Window:
    """One <= 30 s window of one request's speech, waiting for (or done by) the decoder thread."""
    features: np.ndarray          # (n_mels, 3000) float32
    offset: float                 # start, seconds, on the VAD-collapsed time line
    duration: float               # seconds of real audio in the window
    task: str
    language: str | None
    prompt: str | None
    future: Future = field(default_factory=Future)
    cancelled: Callable[[], bool] = _never
    beam: int = 5                 # beam size; a batch holds windows of one beam size only


@dataclass
class _WindowResult:
    language: str
    segments: list[dict]          # start/end on the collapsed time line, text, tokens, scores


def latin_script(text: str) -> bool:
    """Whether at least 90 % of the letters in `text` are Latin (English output, as a translation must be)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return True
    latin = sum(1 for c in letters if c.isascii() or unicodedata.name(c, "").startswith("LATIN"))
    return latin >= 0.9 * len(letters)


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-level BPE alphabet (Whisper's tokens are written in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTES = _byte_decoder()


def token_bytes(tok, i: int) -> bytes:
    piece = tok.tokenizer.id_to_token(i) or ""
    return bytes(_BYTES[c] for c in piece if c in _BYTES)


def _writes_non_latin(b: bytes) -> bool:
    """Whether a token's bytes write a letter outside the Latin script, or start one: a token may hold a
    character's first bytes only (CJK takes 3 bytes, often split between tokens), and a UTF-8 lead byte from
    0xCE on starts a character past Latin, IPA and the combining marks (Greek, Cyrillic, CJK, ...)."""
    text = b.decode("utf-8", errors="ignore")
    return not latin_script(text) or any(0xCE <= x <= 0xF4 for x in b)


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class WhisperEngine:
    """Thread-safe. `transcribe` blocks its calling thread; any number of threads may call it at once."""

    def __init__(self, model_dir: Path, workers: int, beam_size: int = 5, batch_size: int = 8,
                 threads: int | None = None):
        self.model_dir = Path(model_dir)
        self.workers = workers
        self.beam_size = beam_size
        self.batch_size = max(1, batch_size)
        self.threads = threads or default_threads()
        self._model: Any = None  # faster_whisper.WhisperModel once loaded (untyped package)
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._pending: list[_Window] = []
        self._preparing = 0  # requests between arrival and queuing their first window
        self._decoder: threading.Thread | None = None
        self._tokenizers: dict[tuple[str, str], object] = {}
        self._suppress: list[int] | None = None
        self._latin: list[int] | None = None  # _suppress and the tokens outside the Latin script (translation)
        self.batches = 0          # counters, for /metrics-style introspection and the benchmark
        self.windows = 0

    @property
    def waiting(self) -> int:
        """Windows queued for the decoder's next batches (/metrics)."""
        return len(self._pending)

    # ---- loading ---------------------------------------------------------------------------------------
    def load(self):
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel
                from faster_whisper.vad import get_vad_model
                # one replica, all cores inside each (batched) call: the batch supplies the parallelism
                self._model = WhisperModel(str(self.model_dir), device="cpu", compute_type="int8",
                                           cpu_threads=self.threads, num_workers=1, local_files_only=True)
                get_vad_model()  # load the Silero VAD now, not on the first request
                self._decoder = threading.Thread(target=self._decode_loop, name="ar-whisper-batch", daemon=True)
                self._decoder.start()
        return self._model

    def _tokenizer(self, task: str, language: str):
        key = (task, language)
        tok = self._tokenizers.get(key)
        if tok is None:
            from faster_whisper.tokenizer import Tokenizer
            m = self._model
            tok = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task=task, language=language)
            self._tokenizers[key] = tok
        return tok

    # ---- public entry point ----------------------------------------------------------------------------
    def transcribe(self, samples: np.ndarray, *, task: str = "transcribe", language: str | None = None,
                   prompt: str | None = None, temperature: float | None = None, words: bool = False,
                   progress: Callable[[float], None] | None = None,
                   on_segment: Callable[[Segment], None] | None = None,
                   cancelled: Callable[[], bool] | None = None, vad: dict[str, Any] | None = None,
                   beam_size: int | None = None) -> Transcript:
        """`beam_size`: this request's (default: the engine's); 1 decodes greedily, about a fifth faster for a
        short question (bench/chat.py --phases), which is what a voice turn wants. `cancelled` is polled
        between windows and segments; once it returns True the work stops and TranscriptionCancelled is raised
        (a batch already being decoded still finishes). `vad`: Silero VAD
        settings (faster_whisper.vad.VadOptions fields: threshold, min_silence_duration_ms, speech_pad_ms)
        overriding the defaults, e.g. from OpenAI's chunking_strategy server_vad."""
        self.load()
        cancelled = cancelled or _never
        beam = max(1, int(beam_size or self.beam_size))
        with big_buffers():  # CTranslate2's per-layer buffers from the heap, not mapped anew (core/malloc.py)
            if words or temperature:
                return self._transcribe_sequential(samples, task=task, language=language, prompt=prompt,
                                                   temperature=temperature, words=words, progress=progress,
                                                   on_segment=on_segment, cancelled=cancelled, vad=vad, beam=beam)
            return self._transcribe_batched(samples, task=task, language=language, prompt=prompt,
                                            progress=progress, on_segment=on_segment, cancelled=cancelled, vad=vad,
                                            beam=beam)

    # ---- batched path ----------------------------------------------------------------------------------
    def _windows(self, samples: np.ndarray, vad: dict[str, Any] | None = None):
        """VAD -> speech chunks (sample ranges) and windows of <= 30 s of collapsed speech."""
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps
        speech = get_speech_timestamps(samples, VadOptions(max_speech_duration_s=WINDOW_S, **(vad or {})))
        if not speech:
            return [], []
        audio_chunks, meta = collect_chunks(samples, speech, max_duration=WINDOW_S)
        return speech, [(a, m) for a, m in zip(audio_chunks, meta) if a.size]

    def _features(self, audio: np.ndarray) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim
        fe = self._model.feature_extractor
        return np.ascontiguousarray(pad_or_trim(fe(audio)[..., :-1]), dtype=np.float32)

    def _transcribe_batched(self, samples, *, task, language, prompt, progress, on_segment,
                            cancelled: Callable[[], bool], vad: dict[str, Any] | None, beam: int) -> Transcript:
        from faster_whisper.vad import SpeechTimestampsMap
        duration = len(samples) / SAMPLE_RATE
        with self._cv:
            self._preparing += 1
        released = False
        try:
            speech, windows = self._windows(samples, vad)
            if not windows:
                return Transcript(text="", language=language, duration=duration, segments=[], task=task)
            if cancelled():
                raise TranscriptionCancelled()
            first = _Window(self._features(windows[0][0]), float(windows[0][1]["offset"]),
                            float(windows[0][1]["duration"]), task, language, prompt, cancelled=cancelled, beam=beam)
            self._submit([first], release=True)
            released = True
        finally:
            if not released:
                self._submit([], release=True)
        ts_map = SpeechTimestampsMap(speech, SAMPLE_RATE)

        def window(i: int, lang: str | None) -> _Window:
            audio, meta = windows[i]
            # like faster-whisper without condition_on_previous_text: the prompt conditions the first window only
            return _Window(self._features(audio), float(meta["offset"]), float(meta["duration"]), task, lang,
                           prompt if i == 0 else None, cancelled=cancelled, beam=beam)

        # The first window decides the language when none was given (as Whisper does with the first 30 s);
        # the others are queued together once it is known, and all of them batch with other requests' windows.
        rest = [window(i, language) for i in range(1, len(windows))]  # features while the first decodes
        results: list[_WindowResult | None] = [None] * len(windows)
        results[0] = first_result = first.future.result()
        if cancelled():
            raise TranscriptionCancelled()
        lang = language or first_result.language
        for w in rest:
            w.language = lang
        if rest:
            self._submit(rest)

        segments: list[Segment] = []

        def emit(r: _WindowResult) -> None:
            for s in r.segments:
                start = ts_map.get_original_time(s["start"])
                end = ts_map.get_original_time(s["end"], is_end=True)
                seg = Segment(id=len(segments), start=round(float(start), 3), end=round(float(min(end, duration)), 3),
                              text=s["text"], seek=s["seek"], tokens=s["tokens"], temperature=s["temperature"],
                              avg_logprob=s["avg_logprob"], compression_ratio=s["compression_ratio"],
                              no_speech_prob=s["no_speech_prob"])
                segments.append(seg)
                if on_segment:
                    on_segment(seg)
                if progress:
                    progress(min(seg.end, duration))

        def complete(i: int, r: _WindowResult) -> _WindowResult:
            """Whisper stops before speech it expects the next window to hold (and leaves out an unfinished
            last segment); faster-whisper's sequential loop seeks back and decodes that part again. Windows
            here are fixed, so such a tail is decoded again on its own, as often as it takes while each pass
            gets further, but only when the VAD hears speech in it: a tail of trailing silence decoded alone
            is where Whisper makes up "Thank you." or "Yes."."""
            audio, meta = windows[i]
            off, dur = float(meta["offset"]), float(meta["duration"])
            if not r.segments:  # decoded whole and judged silent: the same audio again says the same
                return r
            while True:
                done_to = r.segments[-1]["end"] - off
                if dur - done_to < TAIL_REDECODE_S:
                    return r
                rest = audio[int(done_to * SAMPLE_RATE):]
                if speech_seconds(rest) < TAIL_MIN_SPEECH_S:
                    return r
                tail = _Window(self._features(rest), off + done_to, dur - done_to, task, lang, None,
                               cancelled=cancelled, beam=beam)
                self._submit([tail], front=True)  # its request's text waits on it: ahead of the queue
                more = tail.future.result()
                if not more.segments or more.segments[-1]["end"] - off <= done_to + 0.1:
                    log.warning("whisper: %.1f s of speech at %.1f s gave no text", speech_seconds(rest),
                                ts_map.get_original_time(off + done_to))
                    return r
                r = _WindowResult(r.language, r.segments + more.segments)

        emit(complete(0, first_result))
        for i, w in enumerate(rest, start=1):
            if cancelled():
                raise TranscriptionCancelled()
            results[i] = result = w.future.result()
            emit(complete(i, result))
        text = "".join(s.text for s in segments).strip()
        return Transcript(text=text, language=lang, duration=duration, segments=segments, task=task)

    def _submit(self, ws: list[_Window], release: bool = False, front: bool = False) -> None:
        """Queue windows (`front`: ahead of the others); `release` ends the request's 'preparing' state
        (its first window is in)."""
        with self._cv:
            if release:
                self._preparing -= 1
            if front:
                self._pending[:0] = ws
            else:
                self._pending.extend(ws)
            self._cv.notify_all()

    def _take_batch(self) -> list[_Window]:
        """Whatever is waiting, up to batch_size. A lone request starts at once; while other requests are
        still cutting and featurizing their audio (a few ms), wait briefly for them to join this batch."""
        with self._cv:
            while not self._pending:
                self._cv.wait()
            deadline = time.monotonic() + LINGER_S
            while len(self._pending) < self.batch_size and self._preparing > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch: list[_Window] = []
            keep: list[_Window] = []  # windows of another beam size wait for the next batch, in their order
            while self._pending and len(batch) < self.batch_size:
                w = self._pending.pop(0)
                if w.cancelled():  # its request is gone: not decoded for nobody
                    w.future.set_exception(TranscriptionCancelled())
                elif batch and w.beam != batch[0].beam:
                    keep.append(w)
                else:
                    batch.append(w)
            self._pending[:0] = keep
            return batch

    def _decode_loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                continue
            try:
                results = self._decode(batch)  # its callers wait inside big_buffers() (transcribe)
            except BaseException as e:
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(e)
                continue
            for w, r in zip(batch, results):
                w.future.set_result(r)

    def _decode(self, batch: list[_Window]) -> list[_WindowResult]:
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
        m = self._model
        self.batches += 1
        self.windows += len(batch)
        feats = np.stack([w.features for w in batch]) if len(batch) > 1 else batch[0].features[None]
        enc = m.encode(feats)
        given = [w.language for w in batch]
        if any(lang is None for lang in given) and m.model.is_multilingual:
            detected = m.model.detect_language(enc)
            langs = [lang or det[0][0][2:-2] for lang, det in zip(given, detected)]
        else:
            langs = [lang or "en" for lang in given]  # English-only model (or every language given)
        toks = [self._tokenizer(w.task, lang) for w, lang in zip(batch, langs)]
        if self._suppress is None:
            self._suppress = get_suppressed_tokens(toks[0], [-1])
        prompts = [m.get_prompt(tok, tok.encode(" " + w.prompt.strip()) if w.prompt else [], without_timestamps=False)
                   for w, tok in zip(batch, toks)]
        out = m.model.generate(
            enc, prompts, beam_size=batch[0].beam, patience=1.0, length_penalty=1.0, max_length=m.max_length,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppress,
            max_initial_timestamp_index=round(1.0 / m.time_precision))
        results = []
        for w, tok, lang, prompt, res in zip(batch, toks, langs, prompts, out):
            tokens = res.sequences_ids[0]
            avg_logprob = res.scores[0] * len(tokens) / (len(tokens) + 1)
            ratio = get_compression_ratio(tok.decode(tokens).strip())
            no_speech = res.no_speech_prob
            temperature = 0.0
            silent = no_speech > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
            if not silent and (ratio > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD):
                tokens, avg_logprob, temperature, ratio, no_speech = self._fallback(w, tok, prompt, tokens, avg_logprob,
                                                                                    ratio, no_speech)
                silent = no_speech > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD
            text_tokens = [t for t in tokens if t < tok.eot]
            if w.task == "translate" and not silent and not latin_script(tok.decode(text_tokens)):
                tokens, avg_logprob, temperature, ratio, no_speech = self._in_latin_script(w, tok, prompt)
            segments = [] if silent else self._split(w, tok, tokens, avg_logprob, ratio, no_speech, temperature)
            results.append(_WindowResult(lang, segments))
        return results

    def _fallback(self, w: _Window, tok, prompt, tokens, avg_logprob, ratio, no_speech):
        """Redo one window with sampling at rising temperatures (faster-whisper's rule), keeping the best."""
        from faster_whisper.transcribe import get_compression_ratio
        m = self._model
        enc = m.encode(w.features[None])
        candidates = [(tokens, avg_logprob, 0.0, ratio, no_speech)]
        for t in FALLBACK_TEMPERATURES:
            res = m.model.generate(enc, [prompt], beam_size=1, num_hypotheses=5, sampling_topk=0,
                                   sampling_temperature=t, max_length=m.max_length, return_scores=True,
                                   return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppress,
                                   max_initial_timestamp_index=round(1.0 / m.time_precision))[0]
            toks = res.sequences_ids[0]
            lp = res.scores[0] * len(toks) / (len(toks) + 1)
            cr = get_compression_ratio(tok.decode(toks).strip())
            candidates.append((toks, lp, t, cr, res.no_speech_prob))
            if cr <= COMPRESSION_RATIO_THRESHOLD and lp >= LOG_PROB_THRESHOLD:
                return candidates[-1]
        good = [c for c in candidates if c[3] <= COMPRESSION_RATIO_THRESHOLD] or candidates
        return max(good, key=lambda c: c[1])

    def _latin_only(self, tok) -> list[int]:
        """Suppressed tokens plus every token that writes a letter outside the Latin script."""
        if self._latin is None:
            if self._suppress is None:
                from faster_whisper.transcribe import get_suppressed_tokens
                self._suppress = get_suppressed_tokens(tok, [-1])
            other = [i for i in range(tok.eot) if _writes_non_latin(token_bytes(tok, i))]
            self._latin = sorted(set(self._suppress) | set(other))
        return self._latin

    def _in_latin_script(self, w: _Window, tok, prompt):
        """A translation that came out in the source language's script (Whisper base with beam search does
        this for Mandarin): decoded again greedily, with tokens outside the Latin script suppressed."""
        from faster_whisper.transcribe import get_compression_ratio
        m = self._model
        res = m.model.generate(m.encode(w.features[None]), [prompt], beam_size=1, max_length=m.max_length,
                               return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                               suppress_tokens=self._latin_only(tok),
                               max_initial_timestamp_index=round(1.0 / m.time_precision))[0]
        toks = res.sequences_ids[0]
        lp = res.scores[0] * len(toks) / (len(toks) + 1)
        return toks, lp, 0.0, get_compression_ratio(tok.decode(toks).strip()), res.no_speech_prob

    def _split(self, w: _Window, tok, tokens, avg_logprob, ratio, no_speech, temperature) -> list[dict]:
        from faster_whisper.transcribe import get_compression_ratio
        m = self._model
        size = int(math.ceil(w.duration) * m.frames_per_second)
        # faster-whisper's private segmenter (pinned: tests/test_third_party_privates.py)
        split = m._split_segments_by_timestamps  # noqa: SLF001
        subs, _, _ = split(tokenizer=tok, tokens=tokens, time_offset=w.offset, segment_size=size,
                           segment_duration=w.duration, seek=0)
        # Sequential Whisper re-decodes from the last timestamp when the final segment is left open; a window
        # is decoded once here, so the open tail is kept as a last segment running to the window's end.
        covered = sum(len(s["tokens"]) for s in subs)
        tail = list(tokens[covered:])
        if any(t < tok.eot for t in tail):
            start = subs[-1]["end"] if subs else w.offset
            if tail[0] >= tok.timestamp_begin:
                start = w.offset + (tail[0] - tok.timestamp_begin) * m.time_precision
            if w.offset + w.duration - start < TAIL_REDECODE_S:  # a longer open tail is decoded again instead
                subs.append({"start": start, "end": w.offset + w.duration, "tokens": tail})
        out = []
        for s in subs:
            text_tokens = [t for t in s["tokens"] if t < tok.eot]
            text = tok.decode(text_tokens)
            if not text.strip():
                continue
            out.append({"start": s["start"], "end": min(s["end"], w.offset + w.duration), "text": text,
                        "tokens": s["tokens"], "seek": int(w.offset * m.frames_per_second),
                        "avg_logprob": float(avg_logprob), "compression_ratio": float(get_compression_ratio(text)),
                        "no_speech_prob": float(no_speech), "temperature": float(temperature)})
        return out

    # ---- sequential path (word timestamps, fixed temperature) --------------------------------------------
    def _transcribe_sequential(self, samples, *, task, language, prompt, temperature, words, progress,
                               on_segment, cancelled: Callable[[], bool],
                               vad: dict[str, Any] | None, beam: int) -> Transcript:
        model = self._model
        duration = len(samples) / SAMPLE_RATE
        temps: float | list[float] = [0.0, *FALLBACK_TEMPERATURES] if not temperature else [float(temperature)]
        # segments go out as they are decoded, so a translation is kept to the Latin script from the start
        suppress = self._latin_only(self._tokenizer("translate", "en")) if task == "translate" else [-1]
        seg_iter, info = model.transcribe(
            samples, task=task, language=language, initial_prompt=prompt or None, temperature=temps,
            beam_size=beam, vad_filter=True, vad_parameters=vad or None, word_timestamps=words,
            condition_on_previous_text=False, suppress_tokens=suppress)
        segments: list[Segment] = []
        for s in seg_iter:
            if cancelled():  # the generator decodes lazily: leaving it here stops the work
                raise TranscriptionCancelled()
            seg = Segment(
                id=len(segments), start=round(float(s.start), 3), end=round(float(s.end), 3), text=s.text, seek=s.seek,
                tokens=list(s.tokens), temperature=float(s.temperature or 0.0), avg_logprob=float(s.avg_logprob),
                compression_ratio=float(s.compression_ratio), no_speech_prob=float(s.no_speech_prob),
                words=[Word(w.word.strip(), round(float(w.start), 3), round(float(w.end), 3), float(w.probability))
                       for w in (s.words or [])])
            segments.append(seg)
            if on_segment:
                on_segment(seg)
            if progress:
                progress(min(seg.end, duration))
        text = "".join(s.text for s in segments).strip()
        return Transcript(text=text, language=info.language, duration=duration, segments=segments, task=task)
