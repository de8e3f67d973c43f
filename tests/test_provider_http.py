"""The shared HTTP adapter plumbing (providers/http.py), in process: every HTTP adapter scrubs its
credentials out of upstream errors (the base class does it, so no adapter can forget), and `drain`."""
from __future__ import annotations

import secrets

import httpx
import pytest

from audiorouter.core.errors import GatewayError, UpstreamError
from audiorouter.providers.http import HTTPProvider
from audiorouter.providers.openai_compatible import malformed
from audiorouter.providers.registry import ADAPTERS, adapter_class
from audiorouter.routing.catalog import Provider

KEY = "sk-test-" + secrets.token_hex(16)
TOKEN = "ya29.test-" + secrets.token_hex(12)


def http_adapters() -> list[str]:
    return [name for name in ADAPTERS if name != "local" and issubclass(adapter_class(name), HTTPProvider)]


def make(name: str, monkeypatch) -> HTTPProvider:
    monkeypatch.setenv("AR_TEST_ACCESS_TOKEN", TOKEN)
    spec = Provider(name=name, adapter=name, base_url="http://127.0.0.1:9", api_key=KEY,
                    options={"access_token_env": "AR_TEST_ACCESS_TOKEN"} if name == "google" else {})
    return adapter_class(name)(name, spec, None)


# an upstream echoing the key, in each provider family's error envelope
ECHOES = {
    "openai": (401, {"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error"}}),
    "deepgram": (401, {"err_code": "INVALID_AUTH", "err_msg": f"Invalid credentials for token {KEY}."}),
    "elevenlabs": (401, {"detail": {"status": "invalid_api_key", "message": f"Invalid API key: {KEY}"}}),
    "validation": (422, {"detail": [{"loc": ["body", "xi-api-key"], "msg": f"{KEY} is not a key"}]}),
    "google": (400, {"error": {"code": 400, "message": f"API key not valid: {KEY}", "status": "INVALID_ARGUMENT",
                               "details": [{"reason": "API_KEY_INVALID"}]}}),
    "token": (401, {"error": {"message": f"Request had invalid credentials {TOKEN}", "status": "UNAUTHENTICATED"}}),
    "server": (503, {"message": f"overloaded; retry with {KEY}"}),
}


def test_every_http_adapter_is_covered():
    assert {"openai", "groq", "mistral", "openrouter", "openai_compatible", "google", "deepgram",
            "elevenlabs"} <= set(http_adapters())


@pytest.mark.parametrize("name,envelope", [(n, e) for n in http_adapters() for e in ECHOES
                                           if e != "token" or n == "google"])  # only Google sends that token
def test_upstream_error_never_carries_the_key(name, envelope, monkeypatch):
    adapter = make(name, monkeypatch)
    status, body = ECHOES[envelope]
    e = adapter.upstream_error(httpx.Response(status, json=body))
    assert isinstance(e, GatewayError)
    for text in (e.message, str(e), repr(e.args)):
        assert KEY not in text and TOKEN not in text
    assert "***" in e.message and e.metadata["provider_name"] == name


def test_plain_text_errors_and_short_keys(monkeypatch):
    adapter = make("deepgram", monkeypatch)
    e = adapter.upstream_error(httpx.Response(500, text=f"<html>key {KEY} refused</html>"))
    assert KEY not in e.message and "***" in e.message
    adapter.spec.api_key = "ab"  # too short to scrub without mangling the message
    assert adapter.scrub("about a tab") == "about a tab"


def key_fragments(text: str, key: str = KEY, n: int = 5) -> list[str]:
    body = key.split("-", 2)[-1]  # the random part
    return [body[i:i + n] for i in range(len(body) - n + 1) if body[i:i + n] in text]


@pytest.mark.parametrize("name", http_adapters())
def test_key_straddling_the_message_cut_is_scrubbed_whole(name, monkeypatch):
    """The upstream text is cut at 300 characters: the scrub comes first, so no cut leaves 31 of 32
    characters of the key behind, wherever the key sits (envelope or plain text)."""
    adapter = make(name, monkeypatch)
    for n in range(240, 310):
        text = "A" * n + "key=" + KEY + " refused"
        for resp in (httpx.Response(401, json={"error": {"message": text}}), httpx.Response(500, text=text)):
            e = adapter.upstream_error(resp)
            assert not key_fragments(e.message), (n, e.message)
            assert e.message.count("A") >= min(n, 250)  # the upstream's text is kept, not thrown away


def test_scrub_removes_fragments_a_cut_left_at_either_end(monkeypatch):
    adapter = make("openai", monkeypatch)
    assert adapter.scrub("refused: " + KEY[:12]) == "refused: ***"  # an upstream cut it off
    assert adapter.scrub(KEY[-9:] + " refused") == "*** refused"
    assert adapter.scrub("refused: " + KEY[:3]) == "refused: " + KEY[:3]  # 3 characters say nothing
    for limit in range(1, 60):
        out = adapter.scrub("x" * 10 + KEY + " tail", limit)
        assert len(out) <= limit + 3 and not key_fragments(out, n=4), (limit, out)


def test_openai_family_passes_retry_after_on(monkeypatch):
    adapter = make("openai", monkeypatch)
    e = adapter.upstream_error(httpx.Response(429, json={"error": {"message": "slow down"}},
                                              headers={"retry-after": "30"}))
    assert isinstance(e, UpstreamError) and e.headers["Retry-After"] == "30"
    e = make("deepgram", monkeypatch).upstream_error(httpx.Response(429, json={"err_msg": "slow down"},
                                                                    headers={"retry-after": "30"}))
    assert e.retry_after == 30 and "Retry-After" not in e.headers


# ---- drain ---------------------------------------------------------------------------------------------
def streamed(*chunks: bytes) -> httpx.Response:
    async def body():
        for c in chunks:
            yield c
    return httpx.Response(200, content=body())


async def collect(it) -> list[bytes]:
    return [b async for b in it]


async def test_drain_skips_empty_chunks_and_closes(monkeypatch):
    adapter = make("elevenlabs", monkeypatch)
    resp = streamed(b"ab", b"", b"cd")
    assert await collect(adapter.drain(resp)) == [b"ab", b"cd"]
    assert resp.is_closed


@pytest.mark.parametrize("custom", [False, True])
async def test_drain_empty_body_error(monkeypatch, custom):
    adapter = make("openai", monkeypatch)
    kw = {"empty_error": malformed(adapter.slug, "empty audio body")} if custom else {}
    with pytest.raises(UpstreamError) as ei:
        await collect(adapter.drain(streamed(b""), **kw))
    why = "malformed upstream reply (empty audio body)" if custom else "malformed upstream response (empty audio)"
    assert ei.value.message == f"openai: {why}" and ei.value.retryable


async def test_drain_may_accept_an_empty_body(monkeypatch):
    adapter = make("deepgram", monkeypatch)
    assert await collect(adapter.drain(streamed(), require_audio=False)) == []

