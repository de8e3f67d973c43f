"""The one cost estimator (routing/pricing.py): its token rates reproduce the providers' own per-minute
estimates, and the router (max_price, sort=price) and the ledger's spend reservation both use it."""
from __future__ import annotations

import pytest

from audiorouter.core.types import Audio, SpeechRequest, TranscriptionRequest
from audiorouter.routing.catalog import Pricing
from audiorouter.routing.pricing import estimate_cost, estimated_usage


def stt(seconds: float, **prices: float) -> float:
    return estimate_cost(Pricing(**prices), TranscriptionRequest(model="m", audio=Audio(b"")), seconds)


def tts(text: str, **prices: float) -> float:
    return estimate_cost(Pricing(**prices), SpeechRequest(model="m", input=text, voice="alloy"), None)


def test_token_priced_transcription_matches_openai_per_minute_estimates():
    # gpt-4o-transcribe lists ~$0.006 a minute, gpt-4o-mini-transcribe ~$0.003
    assert stt(60, per_million_input_tokens=6.0, per_million_output_tokens=10.0) == pytest.approx(0.006)
    assert stt(60, per_million_input_tokens=3.0, per_million_output_tokens=5.0) == pytest.approx(0.003)


def test_token_priced_speech_counts_the_audio_it_will_produce():
    # a minute of speech (~900 characters) from gpt-4o-mini-tts: ~$0.015 listed; input tokens alone are ~$0.0001
    cost = tts("x" * 900, per_million_input_tokens=0.6, per_million_output_tokens=12.0)
    assert 0.0140 < cost < 0.0160


def test_duration_and_character_prices_use_the_measured_units():
    assert stt(12.5, per_second=0.0001) == pytest.approx(0.00125)
    assert stt(3, per_second=0.0001, minimum_seconds=10, per_request=0.001) == pytest.approx(0.002)
    assert tts("hello", per_million_characters=15.0) == pytest.approx(5 * 15e-6)


def test_estimated_tokens_round_up():
    u = estimated_usage(TranscriptionRequest(model="m", audio=Audio(b"")), 0.05)
    assert (u.input_tokens, u.output_tokens) == (1, 1)
    assert estimated_usage(TranscriptionRequest(model="m", audio=Audio(b"")), None).seconds == 0.0


def test_router_and_ledger_share_the_estimator():
    from audiorouter.api import generations
    from audiorouter.routing import router
    assert router.estimate_cost is estimate_cost
    assert generations.estimate_cost is estimate_cost
