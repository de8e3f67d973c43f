"""Neutral transcript -> response body, the same for every provider."""
from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..audio.subtitles import to_srt, to_vtt
from ..core.types import Transcript, Usage

LANGUAGE_NAMES = {
    "en": "english", "de": "german", "es": "spanish", "fr": "french", "it": "italian", "ru": "russian",
    "ja": "japanese", "zh": "chinese", "pt": "portuguese", "nl": "dutch", "ko": "korean", "ar": "arabic",
    "hi": "hindi", "pl": "polish", "tr": "turkish", "sv": "swedish", "uk": "ukrainian", "cs": "czech",
    "el": "greek", "fi": "finnish", "da": "danish", "no": "norwegian", "he": "hebrew", "id": "indonesian",
    "vi": "vietnamese", "th": "thai", "ro": "romanian", "hu": "hungarian", "ca": "catalan", "fa": "persian",
}


def _usage(usage: Usage, dialect: str) -> dict[str, Any]:
    u = usage.as_stt_dict()
    if dialect == "openai":
        u["type"] = "tokens" if "total_tokens" in u else "duration"
        if u["type"] == "duration":
            u["seconds"] = u.get("seconds", 0.0)
    return u


def transcript_payload(t: Transcript, usage: Usage, fmt: str, dialect: str, want_words: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"text": t.text}
    if fmt == "verbose_json":
        lang = t.language or ""
        if dialect == "openai" or t.task == "translate":
            lang = LANGUAGE_NAMES.get(lang, lang) if t.task != "translate" else "english"
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
    body["usage"] = _usage(usage, dialect)
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
