"""No fragment of a provider key reaches a client or the ledger, wherever in an upstream's error text the
key sits: an OpenAI-shaped fake answers 401 with the key echoed at every offset around the 300-character
cut of the upstream message, and the gateway's answer and its stored generation row are searched for any
6 consecutive characters of the key's random part."""
from __future__ import annotations

import secrets

import httpx
import pytest

from conftest import ServerProcess
from fakes.harness import gateway_env, write_catalog
from fakes.openai_fake import OpenAIFake
from fakes.runner import ALWAYS
from test_disconnect import final_status

RANDOM = secrets.token_hex(16)
KEY = "sk-echo-" + RANDOM  # 40 characters


def fragments(text: str, n: int = 6) -> list[str]:
    """The pieces of the key's random part (n characters or more) found in `text`."""
    return [RANDOM[i:i + n] for i in range(len(RANDOM) - n + 1) if RANDOM[i:i + n] in text]


@pytest.fixture(scope="module")
def fake():
    f = OpenAIFake(KEY).start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secrets")
    providers = {"echo": {"name": "Echo", "adapter": "openai", "base_url": fake.base_url, "api_key": KEY}}
    models = [{"id": "echo/tts", "name": "echo", "kind": "speech", "voices": ["alloy"],
               "endpoints": [{"provider": "echo", "upstream_model": "tts-1", "output_formats": ["mp3"]}]}]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    s = ServerProcess(env=gateway_env(cat, tmp, AUDIOROUTER_RETRY_ATTEMPTS="1",
                                      AUDIOROUTER_BREAKER_THRESHOLD="1000000"), tmp=tmp).start()
    yield s
    s.stop()


def test_key_echoed_at_every_offset_around_the_cut_never_leaks(gw, fake):
    with httpx.Client(base_url=gw.url, timeout=60) as c:
        # "A"*n + "key=" + KEY: the key straddles character 300 for n from 257 to 295
        for n in range(250, 302):
            fake.clear()
            fake.fail(401, "A" * n + "key=" + KEY + " was refused", times=ALWAYS)
            r = c.post("/api/v1/audio/speech", json={"model": "echo/tts", "input": "hi", "voice": "alloy"})
            assert r.status_code == 502, r.text
            assert r.json()["error"]["metadata"]["provider_name"] == "echo"
            assert not fragments(r.text), (n, r.text)
            g = final_status(c, r.headers["x-generation-id"])
            assert g["status"] == "error" and "AAAA" in str(g), g  # the upstream's text is there, scrubbed
            assert not fragments(str(g)), (n, g)
    assert not fragments(gw.log_path.read_text(errors="replace"))
