"""Cost = catalog price x measured units. One place, used for estimates and for settlement."""
from __future__ import annotations

from ..core.types import Usage
from .catalog import Pricing


def transcription_cost(p: Pricing, usage: Usage) -> float:
    cost = p.per_request
    if p.per_second is not None and usage.seconds is not None:
        cost += p.per_second * max(usage.seconds, p.minimum_seconds)
    if p.per_million_input_tokens is not None and usage.input_tokens:
        cost += p.per_million_input_tokens * usage.input_tokens / 1e6
    if p.per_million_output_tokens is not None and usage.output_tokens:
        cost += p.per_million_output_tokens * usage.output_tokens / 1e6
    return cost


def speech_cost(p: Pricing, usage: Usage) -> float:
    cost = p.per_request
    if p.per_million_characters is not None and usage.characters is not None:
        cost += p.per_million_characters * usage.characters / 1e6
    if p.per_million_input_tokens is not None and usage.input_tokens:
        cost += p.per_million_input_tokens * usage.input_tokens / 1e6
    if p.per_million_output_tokens is not None and usage.output_tokens:
        cost += p.per_million_output_tokens * usage.output_tokens / 1e6
    return cost


def estimate_text_tokens(text: str) -> int:
    """Rough token count (about 4 characters a token) for token-priced speech when the provider reports none."""
    return max(1, (len(text) + 3) // 4)
