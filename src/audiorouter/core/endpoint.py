"""What a catalog endpoint is (provider, upstream model, pricing, limits, capabilities) and a provider's
catalog entry: the description every floor reads (routing selects by it, providers speak by it, the ledger
prices by it). routing/catalog.py loads and validates the catalog files made of these."""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pricing(Strict):
    """USD. Exactly the units the provider bills in."""
    per_second: float | None = None
    per_minute: float | None = None
    per_million_characters: float | None = None
    per_million_input_tokens: float | None = None
    per_million_output_tokens: float | None = None
    # chat models: audio tokens are billed apart from text tokens (per_million_input/output_tokens)
    per_million_audio_input_tokens: float | None = None
    per_million_audio_output_tokens: float | None = None
    per_request: float = 0.0
    minimum_seconds: float = 0.0  # some providers bill a minimum duration per request
    source: str | None = None     # where the price was read, and when ("<url> (YYYY-MM-DD)")

    @model_validator(mode="after")
    def _minute_to_second(self) -> Pricing:
        if self.per_minute is not None and self.per_second is None:
            self.per_second = self.per_minute / 60.0
        return self

    @property
    def unit(self) -> str:
        if self.per_second is not None:
            return "seconds"
        if self.per_million_characters is not None:
            return "characters"
        if self.per_million_input_tokens is not None or self.per_million_output_tokens is not None:
            return "tokens"
        return "requests"


class Limits(Strict):
    max_bytes: int | None = None
    max_seconds: float | None = None
    max_characters: int | None = None


class Capabilities(Strict):
    translation: bool = False
    verbose_json: bool = True
    word_timestamps: bool = False
    diarization: bool = False
    prompt: bool = False
    keyterms: bool = False
    temperature: bool = True
    language: bool = True
    speed: bool = False
    instructions: bool = False
    streaming: bool = False
    logprobs: bool = False           # include[]=logprobs: token log probabilities in the json answer
    chunking_strategy: bool = False  # the upstream takes OpenAI's chunking_strategy ("auto" / server_vad)
    known_speakers: bool = False     # known_speaker_names[] / known_speaker_references[] (diarization)
    custom_voices: bool = False      # speech: a voice object {"id": ...} naming the provider's own voice
    multi_speaker: bool = False      # speech: input as turns in two voices, one dialogue (Gemini TTS)
    audio_input: bool = False   # chat: input_audio parts
    audio_output: bool = False  # chat: modalities ["text", "audio"]


class Cascade(Strict):
    """A chat endpoint served by three catalog models in turn: speech to text, a (text) chat model, text to
    speech (e.g. local/whisper-base -> local/smollm2-135m-instruct -> local/hibari)."""
    transcription: str
    chat: str
    speech: str
    system_prompt: str | None = None
    # provider options for the transcription step, as a request's provider.options (e.g. {local: {beam_size: 1}}:
    # the local Whisper decodes a spoken question greedily, a fifth faster than its beam search)
    transcription_options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Endpoint(Strict):
    provider: str
    upstream_model: str
    pricing: Pricing = Field(default_factory=Pricing)
    input_formats: list[str] | None = None    # transcription: containers the provider accepts (None = any)
    output_formats: list[str] | None = None   # speech: formats it can produce natively
    limits: Limits = Field(default_factory=Limits)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    zdr: bool = False
    data_collection: Literal["allow", "deny"] = "deny"
    substitute: bool = False  # a local engine standing in for a model whose upstream is not configured
    voice_map: dict[str, str] = Field(default_factory=dict)  # public voice name -> provider voice name
    cascade: Cascade | None = None  # chat: served by three models in turn instead of one upstream

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.upstream_model}"


class Provider(Strict):
    name: str
    adapter: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    options: dict[str, Any] = Field(default_factory=dict)

    def resolved_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        return os.environ.get(self.api_key_env) if self.api_key_env else None
