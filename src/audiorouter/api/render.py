"""Neutral transcript -> response body, the same for every provider."""
from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..audio.subtitles import to_srt, to_vtt
from ..core import languages
from ..core.speakers import SpeakerLabels
from ..core.types import Transcript, Usage, Word


def usage_payload(usage: Usage, dialect: str) -> dict[str, Any]:
    u = usage.as_stt_dict()
    if dialect == "openai":
        u["type"] = "tokens" if "total_tokens" in u else "duration"
        if u["type"] == "duration":
            u["seconds"] = u.get("seconds", 0.0)
    return u


def speaker_turns(t: Transcript) -> list[tuple[str | None, float, float, str]]:
    """(speaker, start, end, text) turns: a segment whose words carry more than one speaker is cut at each
    change; a segment without a speaker takes its words' (or the previous turn's)."""
    turns: list[tuple[str | None, float, float, str]] = []
    for s in t.segments:
        spk = {w.speaker for w in s.words if w.speaker is not None}
        if len(spk) > 1 or (s.speaker is None and spk):
            run: list[Word] = []
            for w in [*s.words, None]:
                if run and (w is None or (w.speaker is not None and w.speaker != run[0].speaker)):
                    turns.append((run[0].speaker, run[0].start, run[-1].end, " ".join(x.word for x in run)))
                    run = []
                if w is not None:
                    run.append(w)
            continue
        if s.text.strip():
            turns.append((s.speaker, s.start, s.end, s.text.strip()))
    return turns


def diarized_payload(t: Transcript, usage: Usage, dialect: str) -> dict[str, Any]:
    """response_format=diarized_json in OpenAI's shape (TranscriptionDiarized: task, duration, text, segments
    [{type: "transcript.text.segment", id, start, end, text, speaker}], usage), the one normalisation for every
    provider that diarizes; labels normalised by core.speakers (A, B, C... or the known speaker names)."""
    labels = SpeakerLabels()
    segments: list[dict[str, Any]] = []
    for spk, start, end, text in speaker_turns(t):
        label = labels(spk)
        segments.append({"type": "transcript.text.segment", "id": f"seg_{len(segments):03d}",
                         "start": round(start, 3), "end": round(end, 3), "text": text, "speaker": label})
    duration: float = t.duration if t.duration is not None else (float(segments[-1]["end"]) if segments else 0.0)
    return {"task": "transcribe", "duration": round(duration, 3), "text": t.text, "segments": segments,
            "usage": usage_payload(usage, dialect)}


def transcript_payload(t: Transcript, usage: Usage, fmt: str, dialect: str, want_words: bool) -> dict[str, Any]:
    if fmt == "diarized_json":
        return diarized_payload(t, usage, dialect)
    body: dict[str, Any] = {"text": t.text}
    if fmt == "verbose_json":
        lang = t.language or ""
        if dialect == "openai" or t.task == "translate":
            lang = languages.name(lang) if t.task != "translate" else "english"
        body = {
            "task": t.task,
            "language": lang,
            "duration": round(t.duration or 0.0, 3),
            "text": t.text,
            "segments": [
                {"id": s.id, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text, "tokens": s.tokens,
                 "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                 "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob,
                 **({"speaker": s.speaker} if s.speaker is not None else {})}
                for s in t.segments],
        }
        if want_words:
            body["words"] = [{"word": w.word, "start": w.start, "end": w.end,
                              **({"speaker": w.speaker} if w.speaker is not None else {})} for w in t.words]
    if t.logprobs is not None and fmt == "json":  # include[]=logprobs, where the serving engine had them
        body["logprobs"] = t.logprobs
    body["usage"] = usage_payload(usage, dialect)
    return body


def render_transcript(t: Transcript, usage: Usage, fmt: str, dialect: str, want_words: bool,
                      headers: dict[str, str]) -> Response:
    if fmt == "text":
        return Response(t.text + "\n" if t.text else "", media_type="text/plain; charset=utf-8", headers=headers)
    if fmt == "srt":
        return Response(to_srt(t), media_type="application/x-subrip; charset=utf-8", headers=headers)
    if fmt == "vtt":
        return Response(to_vtt(t), media_type="text/vtt; charset=utf-8", headers=headers)
    return Response(orjson.dumps(transcript_payload(t, usage, fmt, dialect, want_words)),
                    media_type="application/json", headers=headers)
