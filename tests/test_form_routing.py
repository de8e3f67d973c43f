"""Routing preferences on multipart uploads, as the official openai SDKs send them: `extra_body` (Python) or
extra params (npm) become bracketed form fields (`provider[order][]=B`, `provider[allow_fallbacks]=false`,
`models[]=m1`, `models[]=m2`). They must steer routing exactly as the same JSON would, on /v1 and /api/v1,
against strict fake upstreams; a bad value is a 400 naming the field in the dialect's envelope."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from conftest import DEV_AUDIO
from fakes.harness import api_client, parse_attempts, start_gateway
from fakes.openai_fake import GroqFake, OpenAIFake
from fakes.runner import ALWAYS

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"  # 11.0 s
JS_DIR = Path(__file__).parent / "js"
DIALECTS = ["/v1", "/api/v1"]


@pytest.fixture(scope="module")
def fakes():
    f = {"alpha": OpenAIFake("sk-alpha-4f1c9e27").start(), "beta": OpenAIFake("sk-beta-0b8d63a5").start(),
         "gamma": GroqFake("gsk-gamma-c27e904b").start()}
    yield f
    for x in f.values():
        x.stop()


@pytest.fixture(scope="module")
def gw(fakes, tmp_path_factory):
    def ep(tag: str, per_second: float) -> dict:
        return {"provider": tag, "upstream_model": "whisper-large-v3" if tag == "gamma" else "whisper-1",
                "pricing": {"per_second": per_second}}
    providers = {tag: {"name": tag.title(), "adapter": "groq" if tag == "gamma" else "openai",
                       "base_url": f.base_url, "api_key": f.api_key} for tag, f in fakes.items()}
    models = [{"id": "route/stt", "name": "three providers", "kind": "transcription",
               "endpoints": [ep("alpha", 0.0001), ep("beta", 0.00005), ep("gamma", 0.00017)]}]
    models += [{"id": f"route/m{i}", "name": tag, "kind": "transcription", "endpoints": [ep(tag, 0.0001)]}
               for i, tag in enumerate(("alpha", "beta", "gamma"), 1)]
    yield from start_gateway(tmp_path_factory.mktemp("form-routing"), {"providers": providers, "models": models})


@pytest.fixture
def api(gw, fakes):
    yield from api_client(gw, *fakes.values())


def sdk(gw, dialect: str) -> OpenAI:
    return OpenAI(base_url=gw.url + dialect, api_key="sk-test", max_retries=0, timeout=60)


def transcribe(gw, dialect: str, model: str, **extra_body):
    """Through the Python SDK: (x-provider, x-model, attempts) of a 200."""
    with sdk(gw, dialect) as c, open(JFK, "rb") as f:
        raw = c.audio.transcriptions.with_raw_response.create(model=model, file=f, extra_body=extra_body)
    assert raw.parse().text
    return raw.headers["x-provider"], raw.headers["x-model"], parse_attempts(raw.headers["x-route-attempts"])


def refused(gw, dialect: str, model: str, **extra_body) -> openai.APIStatusError:
    with sdk(gw, dialect) as c, open(JFK, "rb") as f, pytest.raises(openai.APIStatusError) as ei:
        c.audio.transcriptions.create(model=model, file=f, extra_body=extra_body)
    return ei.value


def param_of(dialect: str, body: dict) -> str:
    return body["param"] if dialect == "/v1" else body["metadata"]["param"]


def calls(fakes) -> dict[str, int]:
    return {k: len(f.calls) for k, f in fakes.items()}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_models_fallbacks_in_order(api, gw, fakes, dialect):
    fakes["alpha"].fail(503, "alpha is overloaded", times=ALWAYS)
    got = transcribe(gw, dialect, "route/m1", models=["route/m1", "route/m2", "route/m3"])
    assert got == ("beta", "route/m2", [("alpha", 503), ("beta", 200)])
    assert calls(fakes) == {"alpha": 1, "beta": 1, "gamma": 0}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_provider_order(api, gw, fakes, dialect):
    assert transcribe(gw, dialect, "route/stt", provider={"order": ["gamma", "beta"]})[0] == "gamma"
    assert transcribe(gw, dialect, "route/stt", provider={"order": ["beta"]})[0] == "beta"
    assert calls(fakes) == {"alpha": 0, "beta": 1, "gamma": 1}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_allow_fallbacks_false(api, gw, fakes, dialect):
    fakes["alpha"].fail(500, "alpha is down", times=ALWAYS)
    e = refused(gw, dialect, "route/stt", provider={"allow_fallbacks": False})
    assert e.status_code == 502
    assert calls(fakes) == {"alpha": 1, "beta": 0, "gamma": 0}
    # "true" is read as true: the fallback serves it
    assert transcribe(gw, dialect, "route/stt", provider={"allow_fallbacks": True})[0] == "beta"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_numbers_and_booleans_from_form_strings(api, gw, fakes, dialect):
    # per second: alpha 0.0001, beta 0.00005, gamma 0.00017; the SDK sends 6e-05 as the string "6e-05"
    assert transcribe(gw, dialect, "route/stt", provider={"max_price": {"audio": 0.00006}})[0] == "beta"
    assert transcribe(gw, dialect, "route/stt", provider={"sort": "price"})[0] == "beta"
    assert transcribe(gw, dialect, "route/stt", temperature=0.5, provider={"only": ["gamma"]})[0] == "gamma"
    assert fakes["gamma"].calls[-1].f1("temperature") == "0.5"


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("extra, param", [
    ({"provider": {"order": [{"slug": "beta"}]}}, "provider.order[0]"),
    ({"provider": {"allow_fallbacks": "maybe"}}, "provider.allow_fallbacks"),
    ({"provider": {"max_price": {"audio": "cheap"}}}, "provider.max_price.audio"),
    ({"provider": {"max_price": {"audio": -1}}}, "provider.max_price.audio"),
    ({"provider": {"zdr": 2}}, "provider.zdr"),
    ({"models": [["route/m2"]]}, "models[0]"),
    ({"temperature": "warm"}, "temperature"),
    ({"provider": "{not json"}, "provider"),
])
def test_bad_values_are_a_400_naming_the_field(api, gw, fakes, dialect, extra, param):
    e = refused(gw, dialect, "route/stt", **extra)
    assert e.status_code == 400, e.body
    assert param_of(dialect, e.body) == param, e.body
    assert param in (e.body["message"])
    assert calls(fakes) == {"alpha": 0, "beta": 0, "gamma": 0}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_json_string_fields(api, gw, fakes, dialect):
    fakes["alpha"].fail(503, "alpha is overloaded", times=ALWAYS)
    form = {"model": "route/m1", "models": json.dumps(["route/m1", "route/m2", "route/m3"]),
            "provider": json.dumps({"allow_fallbacks": True, "order": ["alpha", "beta"]})}
    r = api.post(dialect + "/audio/transcriptions", data=form, files={"file": ("a.flac", JFK.read_bytes())})
    assert r.status_code == 200, r.text
    assert (r.headers["x-provider"], r.headers["x-model"]) == ("beta", "route/m2")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_same_name_twice_and_mixed_notations(api, gw, fakes, dialect):
    files = {"file": ("a.flac", JFK.read_bytes())}
    # a repeated plain name is a list, as models[] is
    r = api.post(dialect + "/audio/transcriptions", files=files,
                 data={"model": "route/stt", "provider[only]": ["gamma", "beta"], "provider[sort]": "price"})
    assert r.status_code == 200 and r.headers["x-provider"] == "beta", r.text
    # a scalar sent twice is not silently reduced to one of its values
    r = api.post(dialect + "/audio/transcriptions", files=files, data={"model": ["route/m1", "route/m2"]})
    assert r.status_code == 400 and param_of(dialect, r.json()["error"]) == "model", r.text
    # provider as a JSON string and as bracketed fields at once
    r = api.post(dialect + "/audio/transcriptions", files=files,
                 data={"model": "route/stt", "provider": '{"order": ["beta"]}', "provider[order][]": "gamma"})
    assert r.status_code == 400 and param_of(dialect, r.json()["error"]) == "provider", r.text
    r = api.post(dialect + "/audio/transcriptions", files=files, data={"model": "route/stt", "provider[order": "x"})
    assert r.status_code == 400 and param_of(dialect, r.json()["error"]) == "provider[order", r.text
    assert calls(fakes)["alpha"] == 0 and calls(fakes)["gamma"] == 0


# ---- the openai npm SDK ----------------------------------------------------------------------------------
def _npm_sdk() -> None:
    """tests/js's pinned openai package, installed when missing (as test_sdk_openai does); a skip outside CI."""
    from test_sdk_openai import _npm_install
    why = "node is not installed" if shutil.which("node") is None else _npm_install()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the npm SDK test cannot run under CI: {why}")
        pytest.skip(f"openai npm SDK not available: {why}")


def test_npm_sdk_extra_params(api, gw, fakes, tmp_path):
    _npm_sdk()
    fakes["alpha"].fail(503, "alpha is overloaded", times=ALWAYS)
    p = subprocess.run(["node", str(JS_DIR / "routing_test.mjs"), str(JFK)], cwd=JS_DIR,
                       env={**os.environ, "AUDIOROUTER_URL": gw.url}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for dialect in DIALECTS:
        got = out[dialect]
        assert got["models"] == {"provider": "beta", "model": "route/m2"}, got
        assert got["order"] == {"provider": "gamma", "model": "route/stt"}, got
        assert got["no_fallbacks"]["status"] == 503, got  # alpha's own 503, no fallback tried
        assert got["max_price"] == {"provider": "beta", "model": "route/stt"}, got
        assert got["bad_order"]["status"] == 400 and got["bad_order"]["param"] == "provider.order[0]", got
        assert got["bad_bool"]["status"] == 400 and got["bad_bool"]["param"] == "provider.allow_fallbacks", got
    # alpha was called once per dialect for `models` and once for `no_fallbacks`; gamma once for `order`
    assert calls(fakes) == {"alpha": 4, "beta": 4, "gamma": 2}
