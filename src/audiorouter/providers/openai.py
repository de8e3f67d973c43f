"""OpenAI (https://api.openai.com/v1): the reference shape of the OpenAI-compatible base. whisper-1 takes
verbose_json with segment and word timestamps; the gpt-4o(-mini)-transcribe models take json/text only
(catalog capability verbose_json: false) and report token usage. Speech streams the requested format."""
from __future__ import annotations

from .openai_compatible import OpenAICompatibleProvider


class OpenAIProvider(OpenAICompatibleProvider):
    key_required = True
    default_input_formats = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "ogg", "wav", "webm")
