"""Provider-neutral chat types: an OpenAI-style chat request whose messages may carry audio, what a provider
answers (whole or as deltas), and chat usage with its audio token details. The API dialects parse into
ChatRequest, every chat provider consumes it, and the renderers read ChatReply / ChatDelta / ChatUsage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .types import Audio, RoutingPrefs, Usage

# What the chat endpoints accept as input_audio.format (OpenAI's names plus the containers we sniff) and
# produce as audio.format (OpenAI's list; pcm16 is raw 16-bit little-endian mono at 24 kHz).
CHAT_INPUT_FORMATS = ("wav", "mp3", "ogg", "flac", "m4a", "webm", "aac", "pcm16")
CHAT_OUTPUT_FORMATS = ("wav", "mp3", "flac", "opus", "pcm16")
PCM16_RATE = 24000


@dataclass
class InputAudioPart:
    """One input_audio part, decoded from base64, with the JSON path it came from (for 400s)."""
    audio: Audio
    path: str  # e.g. messages[1].content[0].input_audio


@dataclass
class ChatMessage:
    role: str
    # the message as the client sent it, minus decoded audio: content is a string, None, or a list of parts in
    # which an input_audio part is {"type": "input_audio", "input_audio": InputAudioPart}
    content: Any = None
    name: str | None = None
    audio_id: str | None = None  # an assistant message's {"audio": {"id": ...}} from an earlier answer
    extra: dict[str, Any] = field(default_factory=dict)  # tool_calls, tool_call_id, refusal, ...

    def text(self) -> str:
        """The message's text parts joined (what a text-only step of a cascade sees)."""
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content
                           if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
        return ""

    def audio_parts(self) -> list[InputAudioPart]:
        if not isinstance(self.content, list):
            return []
        return [p["input_audio"] for p in self.content
                if isinstance(p, dict) and isinstance(p.get("input_audio"), InputAudioPart)]


@dataclass
class ChatRequest:
    model: str
    messages: list[ChatMessage]
    modalities: list[str] = field(default_factory=lambda: ["text"])
    voice: str | None = None
    audio_format: str | None = None  # requested output audio format (with "audio" in modalities)
    stream: bool = False
    max_tokens: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, stop, seed, ... as sent
    provider: RoutingPrefs = field(default_factory=RoutingPrefs)
    models: list[str] | None = None
    session_id: str | None = None
    user: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the body as sent, minus messages (relayed as is)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_audio(self) -> bool:
        return "audio" in self.modalities

    def audio_parts(self) -> list[InputAudioPart]:
        return [p for m in self.messages for p in m.audio_parts()]

    @property
    def has_audio_input(self) -> bool:
        return bool(self.audio_parts())

    def text_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)


@dataclass
class ChatUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_audio_tokens: int = 0
    completion_audio_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    audio_seconds_in: float | None = None
    cost: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
                "prompt_tokens_details": {"audio_tokens": self.prompt_audio_tokens,
                                          "cached_tokens": self.cached_tokens},
                "completion_tokens_details": {"audio_tokens": self.completion_audio_tokens,
                                              "reasoning_tokens": self.reasoning_tokens},
                "cost": round(self.cost, 10)}

    def ledger(self) -> Usage:
        """The ledger's neutral usage (tokens in and out, seconds of input audio, cost)."""
        return Usage(seconds=self.audio_seconds_in, input_tokens=self.prompt_tokens,
                     output_tokens=self.completion_tokens, cost=self.cost)


@dataclass
class ChatDelta:
    """One piece of a streamed answer. `audio`: bytes of the answer's audio in the requested format (the
    gateway base64-encodes them); `transcript`: the text those bytes speak."""
    text: str | None = None
    audio: bytes | None = None
    transcript: str | None = None
    finish_reason: str | None = None
    usage: ChatUsage | None = None
    upstream_audio_id: str | None = None
    upstream_expires_at: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other delta fields (tool_calls, refusal) relayed


@dataclass
class ChatReply:
    text: str | None
    audio: bytes | None = None
    transcript: str | None = None
    finish_reason: str = "stop"
    usage: ChatUsage = field(default_factory=ChatUsage)
    upstream_audio_id: str | None = None
    upstream_expires_at: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other message fields (tool_calls, refusal)
