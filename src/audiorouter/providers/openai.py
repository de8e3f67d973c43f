"""OpenAI (https://api.openai.com/v1): the reference shape of the OpenAI-compatible base. whisper-1 takes
verbose_json with segment and word timestamps; the gpt-4o(-mini)-transcribe models take json/text only
(catalog capability verbose_json: false), report token usage, and answer `include[]=logprobs` (json only) and
`chunking_strategy`; gpt-4o-transcribe-diarize answers `diarized_json` (segments with a speaker, "A", "B", ...
or the `known_speaker_names[]` given with `known_speaker_references[]`) and takes no prompt. Multipart fields
are encoded as the openai SDK encodes them (lists as `name[]`, objects as `name[key]`). Speech streams the
requested format; a custom voice goes as {"id": "voice_..."} (gpt-4o-mini-tts)."""
from __future__ import annotations

from .openai_compatible import OpenAICompatibleProvider


class OpenAIProvider(OpenAICompatibleProvider):
    key_required = True
    # gpt-4o-transcribe-diarize answers diarized_json (speaker-labelled segments); asked for when the request
    # wants diarization and the endpoint has it
    upstream_formats = ("json", "verbose_json", "text", "srt", "vtt", "diarized_json")
    default_input_formats = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "ogg", "wav", "webm")
