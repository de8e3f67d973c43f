"""Provider-neutral request and result types. Every dialect parses into these, every provider consumes and
produces them, and every renderer reads them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["transcribe", "translate"]
TRANSCRIPT_FORMATS = ("json", "verbose_json", "text", "srt", "vtt", "diarized_json")
SPEECH_FORMATS = ("pcm", "mp3", "wav", "flac", "opus", "aac")


@dataclass
class RoutingPrefs:
    """The request's `provider` object (OpenRouter's provider preferences)."""
    order: list[str] | None = None
    only: list[str] | None = None
    ignore: list[str] | None = None
    allow_fallbacks: bool = True
    sort: str | None = None
    max_price: dict[str, float] | None = None
    data_collection: str | None = None
    zdr: bool | None = None
    require_parameters: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Audio:
    """Input audio as received: the raw bytes plus what the client said and what we detected. `path`: the
    audio is a file on disk instead (data empty until a use case reads what it needs: jobs/transcription.py)."""
    data: bytes
    declared_format: str | None = None
    detected_format: str | None = None
    filename: str | None = None
    path: str | None = None

    @property
    def format(self) -> str | None:
        return self.detected_format or self.declared_format


@dataclass
class TranscriptionRequest:
    model: str
    audio: Audio
    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    response_format: str = "json"
    timestamp_granularities: list[str] = field(default_factory=lambda: ["segment"])
    provider: RoutingPrefs = field(default_factory=RoutingPrefs)
    models: list[str] | None = None
    session_id: str | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def want_words(self) -> bool:
        return "word" in self.timestamp_granularities


@dataclass
class SpeechTurn:
    """One turn of multi-speaker speech (OpenRouter's SpeechTurn): its text, and its voice and delivery
    instructions where they differ from the request's."""
    text: str
    voice: str | None = None
    instructions: str | None = None


@dataclass
class SpeechRequest:
    model: str
    input: str
    voice: str | None = None
    response_format: str = "pcm"
    voice_object: bool = False  # voice came as {"id": ...}: the provider's own voice id, not a catalog name
    speed: float = 1.0
    instructions: str | None = None
    stream_format: str = "audio"
    provider: RoutingPrefs = field(default_factory=RoutingPrefs)
    models: list[str] | None = None
    session_id: str | None = None
    user: str | None = None
    timestamps: str | None = None  # "word": each word's start and end with the audio (jobs/speech_timings.py)
    turns: list[SpeechTurn] | None = None  # multi-speaker input (input as a list of turns); `input` is their text

    @property
    def speakers(self) -> list[str | None]:
        """The distinct voices of a multi-speaker request, in order of first turn (a turn without its own voice
        speaks in the request's); [] for plain input."""
        return list(dict.fromkeys(t.voice or self.voice for t in self.turns or []))


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None
    speaker: str | None = None


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    seek: int = 0
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] = field(default_factory=list)
    speaker: str | None = None


@dataclass
class Transcript:
    text: str
    language: str | None = None
    duration: float | None = None
    segments: list[Segment] = field(default_factory=list)
    task: Task = "transcribe"
    input_tokens: int | None = None
    output_tokens: int | None = None
    logprobs: list[dict[str, Any]] | None = None  # include[]=logprobs: [{token, logprob, bytes}] (OpenAI's shape)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


@dataclass
class Usage:
    seconds: float | None = None
    characters: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float = 0.0

    def as_stt_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        if self.input_tokens is not None or self.output_tokens is not None:
            i, o = self.input_tokens or 0, self.output_tokens or 0
            out.update(total_tokens=i + o, input_tokens=i, output_tokens=o)
        out["cost"] = round(self.cost, 10)
        return out


@dataclass
class Attempt:
    provider: str
    endpoint: str
    status: int
    latency_ms: float
    error: str | None = None
