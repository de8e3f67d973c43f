"""Groq (https://api.groq.com/openai/v1): OpenAI's audio API for Whisper large-v3(-turbo). Its
transcriptions and translations take response_format json, text or verbose_json (no srt/vtt, which we
render ourselves anyway); verbose_json carries segments, words and an `x_groq` id we ignore."""
from __future__ import annotations

from .openai_compatible import OpenAICompatibleProvider


class GroqProvider(OpenAICompatibleProvider):
    key_required = True
    upstream_formats = ("json", "text", "verbose_json")
    default_input_formats = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm")
