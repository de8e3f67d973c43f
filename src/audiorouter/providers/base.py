"""What a provider adapter is: one class per provider, speaking only that provider's wire protocol, with
one typed method per capability. Adapters know nothing of HTTP routes or dialects."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from ..core.audio import PreparedAudio, SpeechStream
from ..core.endpoint import Endpoint
from ..core.endpoint import Provider as ProviderSpec
from ..core.errors import GatewayError
from ..core.text import redact

__all__ = ["BYOK_KEYS", "PreparedAudio", "ProviderAdapter", "SpeechStream"]


# The caller's own provider keys (BYOK) for the request being served: provider slug -> key. Set by the
# ledger (api/generations.py track()) in the request's context before the router runs; TranscriptionRequest
# also carries them as req.extra["byok"].
BYOK_KEYS: ContextVar[dict[str, str] | None] = ContextVar("audiorouter_byok_keys", default=None)


class ProviderAdapter:
    """Common state: the provider's catalog entry and settings. Subclasses add transcribe/synthesize."""

    def __init__(self, slug: str, spec: ProviderSpec, settings: Any):
        self.slug = slug
        self.spec = spec
        self.settings = settings

    @property
    def api_key(self) -> str | None:
        """The key for the request being served: the caller's own (BYOK) key for this provider when it
        stored one, else the gateway's."""
        return self.api_key_for(None)

    def api_key_for(self, req: Any = None) -> str | None:
        extra = getattr(req, "extra", None)
        byok = extra.get("byok") if isinstance(extra, dict) else None
        if byok is None:
            byok = BYOK_KEYS.get()
        return (byok or {}).get(self.slug) or self.spec.resolved_key()

    def available(self) -> bool:
        """Whether this provider can be a candidate (e.g. it has an API key)."""
        return bool(self.api_key)

    def max_audio_seconds(self, endpoint: Endpoint) -> float | None:
        """The longest audio one call of this adapter takes whatever the catalog says (None: no limit of its
        own). The transcription job cuts longer audio into chunks that fit, as it does for limits.max_seconds."""
        return None

    def max_input_characters(self, endpoint: Endpoint) -> int | None:
        """The most text one synthesis call of this adapter takes whatever the catalog says (None: no limit of
        its own). The speech job splits longer text, as it does for limits.max_characters."""
        return None

    async def start(self) -> None:
        return None

    # ---- credentials never reach a client --------------------------------------------------------------
    def secrets(self) -> list[str | None]:
        """What must never appear in an error a client (or the log, or the ledger) sees: the request's API
        key, plus whatever other credential an adapter sends (override to add it)."""
        return [self.api_key]

    def scrub(self, text: str, limit: int | None = None, *, edges: bool = True) -> str:
        """`text` with every secret, and any fragment of one a cut left at either end, replaced by ***,
        then cut to `limit` characters (core.text.redact). Upstreams sometimes echo the key they were
        given in their error text; cut such text only through here, never before."""
        return redact(text, self.secrets(), limit, edges=edges)

    def scrubbed(self, e: GatewayError) -> GatewayError:
        """`e` with every whole secret removed from its message. The message is ours around upstream text
        that upstream_message already redacted at its cut, so its ends are not checked for fragments."""
        e.message = self.scrub(e.message, edges=False)
        e.args = (e.message,)
        return e

    async def aclose(self) -> None:
        return None
