"""The OpenRouter Python SDK (`openrouter` package) against the gateway: api_keys, credits, generations,
analytics (activity) and byok calls parse our answers into its own models, on SQLite and on PostgreSQL."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from openrouter import OpenRouter, errors
from openrouter.utils import BackoffStrategy, RetryConfig

from test_keys_support import TTS_PRICE_PER_CHAR, gw  # noqa: F401

NO_RETRY = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)


def sdk(gw, key: str) -> OpenRouter:
    return OpenRouter(api_key=key, server_url=gw.url + "/api/v1", retry_config=NO_RETRY, timeout_ms=60_000)


def test_api_keys_lifecycle_with_the_sdk(gw):
    admin = sdk(gw, gw.mgmt)
    expires = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    made = admin.api_keys.create(name="sdk key", limit=0.5, limit_reset="monthly", expires_at=expires,
                                 include_byok_in_limit=True)
    assert made.key.startswith("sk-ar-v1-")
    assert made.data.name == "sdk key" and made.data.limit == 0.5 and made.data.limit_reset == "monthly"
    assert made.data.include_byok_in_limit is True and made.data.expires_at == expires
    h = made.data.hash

    listed = admin.api_keys.list()
    assert h in [k.hash for k in listed.data]
    got = admin.api_keys.get(hash=h)
    assert got.data.label == made.data.label and got.data.usage == 0

    upd = admin.api_keys.update(hash=h, name="renamed", limit=1.25, disabled=True)
    assert upd.data.name == "renamed" and upd.data.limit == 1.25 and upd.data.disabled is True
    assert h not in [k.hash for k in admin.api_keys.list().data]
    assert h in [k.hash for k in admin.api_keys.list(include_disabled=True).data]
    with pytest.raises(errors.OpenRouterError) as e:  # the SDK has no typed 403 for this call
        sdk(gw, made.key).api_keys.get_current_key_metadata()
    assert e.value.status_code == 403 and "disabled" in str(e.value)
    admin.api_keys.update(hash=h, disabled=False)

    me = sdk(gw, made.key).api_keys.get_current_key_metadata()
    assert me.data.label == made.data.label and me.data.is_management_key is False
    assert me.data.limit == 1.25 and me.data.limit_remaining == 1.25

    assert admin.api_keys.delete(hash=h).DELETED is True
    with pytest.raises(errors.UnauthorizedResponseError) as e:
        sdk(gw, made.key).api_keys.get_current_key_metadata()
    assert "invalid API key" in str(e.value)
    with pytest.raises(errors.NotFoundResponseError):
        admin.api_keys.get(hash=h)
    with pytest.raises(errors.BadRequestResponseError):
        admin.api_keys.create(name="x", limit=-3)


def test_credits_generation_and_activity_with_the_sdk(gw):
    admin = sdk(gw, gw.mgmt)
    made = admin.api_keys.create(name="spender", limit=0.2)
    user = sdk(gw, made.key)
    text = "Spoken for the SDK."
    r = gw.speak(made.key, text)
    assert r.status_code == 200
    gen_id = r.headers["x-generation-id"]
    cost = len(text) * TTS_PRICE_PER_CHAR

    gen = user.generations.get_generation(id=gen_id)
    assert gen.data.id == gen_id and gen.data.api_type == "tts" and gen.data.total_cost == pytest.approx(cost)
    assert gen.data.provider_name == "Local (built-in)" and gen.data.is_byok is False
    assert gen.data.provider_responses and gen.data.provider_responses[0].status == 200
    with pytest.raises(errors.NotFoundResponseError):
        user.generations.get_generation(id="gen-does-not-exist")

    credits = user.credits.get_credits()
    assert credits.data.total_credits == pytest.approx(0.2) and credits.data.total_usage == pytest.approx(cost)
    everyone = admin.credits.get_credits()
    assert everyone.data.total_usage >= cost

    mine = user.analytics.get_user_activity()
    assert len(mine.data) == 1
    row = mine.data[0]
    assert row.model == "test/priced-tts" and row.requests == 1 and row.usage == pytest.approx(cost)


def test_byok_with_the_sdk(gw):
    admin = sdk(gw, gw.mgmt)
    made = admin.byok.create(provider="openai", key="sk-upstream-" + "9" * 24, name="team key")
    if gw.backend == "sqlite":  # no AUDIOROUTER_SECRET_KEY: one was made in the data dir, private
        secret_file = gw.tmp / "data" / "secret.key"
        assert secret_file.exists() and secret_file.stat().st_mode & 0o777 == 0o600
    assert made.data.provider == "openai" and made.data.name == "team key" and "9999" in made.data.label
    page = admin.byok.list()
    assert made.data.id in [k.id for k in page.result.data] and page.result.total_count >= 1
    got = admin.byok.get(id=made.data.id)
    assert got.data.label == made.data.label
    upd = admin.byok.update(id=made.data.id, disabled=True, name="renamed")
    assert upd.data.disabled is True and upd.data.name == "renamed"
    assert admin.byok.delete(id=made.data.id).DELETED is True
    with pytest.raises(errors.NotFoundResponseError):
        admin.byok.get(id=made.data.id)
