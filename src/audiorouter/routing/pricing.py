"""Cost = catalog price x measured units. One place, used for estimates (provider.max_price, provider.sort=price,
the spend reservation) and for settlement."""
from __future__ import annotations

import math

from ..core.types import SpeechRequest, TranscriptionRequest, Usage
from .catalog import Pricing

# Token rates of token-priced endpoints, for estimates only: settlement uses the counts the provider reports.
# Source: OpenAI's audio token accounting (Realtime API cost guide: user audio is 1 token per 100 ms, the
# model's audio 1 token per 50 ms). They reproduce OpenAI's own per-minute estimates exactly:
#   gpt-4o-transcribe      600 audio tokens x $6/M + 240 text tokens x $10/M = $0.0060 a minute (listed $0.006)
#   gpt-4o-mini-transcribe 600 x $3/M + 240 x $5/M                            = $0.0030 a minute (listed $0.003)
#   gpt-4o-mini-tts        1200 audio tokens x $12/M                          = $0.0144 a minute (listed $0.015)
# Other token-priced endpoints (Gemini TTS, the OpenRouter routes) are estimated with the same rates: an estimate
# only has to rank candidates and size the spend reservation.
STT_INPUT_TOKENS_PER_SECOND = 10.0   # audio tokens in, per second of audio
STT_OUTPUT_TOKENS_PER_SECOND = 4.0   # text tokens out, per second of speech (~150 words a minute)
TTS_OUTPUT_TOKENS_PER_SECOND = 20.0  # audio tokens out, per second of speech
SPEECH_CHARACTERS_PER_SECOND = 15.0  # ~150 words a minute of ~6 characters (space included)
TTS_OUTPUT_TOKENS_PER_CHARACTER = TTS_OUTPUT_TOKENS_PER_SECOND / SPEECH_CHARACTERS_PER_SECOND


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


def estimated_usage(req: TranscriptionRequest | SpeechRequest, seconds: float | None) -> Usage:
    """The units a request is expected to use, before it is sent: the measured audio seconds (transcription)
    or the text length (speech), and the tokens a token-priced endpoint would count for them (rounded up)."""
    if isinstance(req, TranscriptionRequest):
        s = seconds or 0.0
        return Usage(seconds=s, input_tokens=math.ceil(s * STT_INPUT_TOKENS_PER_SECOND),
                     output_tokens=math.ceil(s * STT_OUTPUT_TOKENS_PER_SECOND))
    n = len(req.input)
    return Usage(characters=n, input_tokens=estimate_text_tokens(req.input),
                 output_tokens=math.ceil(n * TTS_OUTPUT_TOKENS_PER_CHARACTER))


def estimate_cost(p: Pricing, req: TranscriptionRequest | SpeechRequest, seconds: float | None) -> float:
    """What `req` should cost at prices `p`: the one estimator (the router's max_price and price sort, the
    ledger's spend reservation)."""
    u = estimated_usage(req, seconds)
    return transcription_cost(p, u) if isinstance(req, TranscriptionRequest) else speech_cost(p, u)
