"""What a provider adapter is: one class per provider, speaking only that provider's wire protocol, with
one typed method per capability. Adapters know nothing of HTTP routes or dialects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol, runtime_checkable

import numpy as np

from ..core.types import SpeechRequest, Transcript, TranscriptionRequest

if TYPE_CHECKING:
    from ..routing.catalog import Endpoint, Provider as ProviderSpec


@dataclass
class PreparedAudio:
    """Input audio, measured by the gateway: the original bytes and container, plus 16 kHz mono samples."""
    data: bytes
    format: str
    samples: np.ndarray
    duration: float


@dataclass
class SpeechStream:
    """Synthesized audio as it is produced. encoding "f32": numpy float32 mono chunks at `rate`;
    otherwise bytes already encoded in that format (one of core.types.SPEECH_FORMATS)."""
    chunks: AsyncIterator[Any]
    encoding: str
    rate: int
    input_tokens: int | None = None
    output_tokens: int | None = None


@runtime_checkable
class Transcriber(Protocol):
    async def transcribe(self, req: TranscriptionRequest, audio: PreparedAudio, endpoint: "Endpoint",
                         options: dict[str, Any]) -> Transcript: ...


@runtime_checkable
class Synthesizer(Protocol):
    async def synthesize(self, req: SpeechRequest, endpoint: "Endpoint", voice: str,
                         options: dict[str, Any]) -> SpeechStream: ...


class ProviderAdapter:
    """Common state: the provider's catalog entry and settings. Subclasses add transcribe/synthesize."""

    def __init__(self, slug: str, spec: "ProviderSpec", settings: Any):
        self.slug = slug
        self.spec = spec
        self.settings = settings

    @property
    def api_key(self) -> str | None:
        return self.spec.resolved_key()

    def available(self) -> bool:
        """Whether this provider can be a candidate (e.g. it has an API key)."""
        return bool(self.api_key)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
