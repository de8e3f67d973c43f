"""Observability: GET /metrics over HTTP (who may read it, and what it says after real requests through a fake
OpenAI upstream: requests by route, model, provider and status, latency histograms, upstream attempts by
outcome, bytes in and out, circuit state, ledger writer gauges), metrics switched off, and JSON log lines
carrying the generation id."""
from __future__ import annotations

import io
import json
import logging
import secrets
import tempfile
import wave

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakes.harness import start_gateway
from fakes.openai_fake import OpenAIFake

MGMT = "sk-mgmt-" + secrets.token_hex(24)


def small_wav(seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * int(16000 * seconds))
    return buf.getvalue()


@pytest.fixture(scope="module")
def fake():
    f = OpenAIFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"}}
    models = [{"id": "test/stt", "name": "stt", "kind": "transcription",
               "endpoints": [{"provider": "openai", "upstream_model": "whisper-1"}]},
              {"id": "test/tts", "name": "tts", "kind": "speech", "voices": ["alloy"],
               "endpoints": [{"provider": "openai", "upstream_model": "tts-1", "output_formats": ["mp3", "pcm"]}]}]
    yield from start_gateway(tmp_path_factory.mktemp("metrics"), {"providers": providers, "models": models},
                             OPENAI_API_KEY=fake.api_key, AUDIOROUTER_MANAGEMENT_KEY=MGMT,
                             AUDIOROUTER_LOG_FORMAT="json")


@pytest.fixture(scope="module")
def key(gw) -> str:
    r = httpx.post(gw.url + "/api/v1/keys", json={"name": "metrics-test"}, headers={"Authorization": f"Bearer {MGMT}"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def scrape(gw) -> dict[tuple[str, frozenset], float]:
    r = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {MGMT}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_need_the_management_key(gw, key):
    r = httpx.get(gw.url + "/metrics")
    assert r.status_code == 401 and r.json()["error"]["metadata"]["type"] == "missing_api_key"
    r = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"]["metadata"]["type"] == "management_key_required"
    r = httpx.get(gw.url + "/metrics", headers={"Authorization": "Bearer sk-ar-v1-" + "0" * 64})
    assert r.status_code == 401
    assert "audiorouter_requests_total" not in r.text
    assert httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {MGMT}"}).status_code == 200


def test_requests_upstream_attempts_and_bytes_are_counted(gw, key, fake):
    auth = {"Authorization": f"Bearer {key}"}
    before = scrape(gw)
    wav = small_wav()
    ok = [httpx.post(gw.url + "/v1/audio/transcriptions", headers=auth, timeout=60,
                     files={"file": ("a.wav", wav, "audio/wav")}, data={"model": "test/stt"}) for _ in range(3)]
    assert [r.status_code for r in ok] == [200, 200, 200], ok[0].text
    sp = httpx.post(gw.url + "/v1/audio/speech", headers=auth, timeout=60,
                    json={"model": "test/tts", "input": "Hello there.", "voice": "alloy", "response_format": "mp3"})
    assert sp.status_code == 200 and sp.content
    fake.fail(503, "overloaded", times=5)
    bad = httpx.post(gw.url + "/v1/audio/transcriptions", headers=auth, timeout=60,
                     files={"file": ("a.wav", wav, "audio/wav")}, data={"model": "test/stt"})
    assert bad.status_code >= 500
    fake.clear()
    after = scrape(gw)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    tx = {"route": "/v1/audio/transcriptions", "model": "test/stt", "provider": "openai", "status": "200"}
    assert delta("audiorouter_requests_total", **tx) == 3
    assert delta("audiorouter_request_duration_seconds_count", **tx) == 3
    assert delta("audiorouter_request_duration_seconds_bucket", **tx, le="+Inf") == 3
    assert delta("audiorouter_request_duration_seconds_sum", **tx) > 0
    assert delta("audiorouter_requests_total", route="/v1/audio/speech", model="test/tts", provider="openai",
                 status="200") == 1
    assert delta("audiorouter_requests_total", route="/v1/audio/transcriptions", status=str(bad.status_code)) == 1
    assert delta("audiorouter_upstream_attempts_total", provider="openai", outcome="ok") == 4
    assert delta("audiorouter_upstream_attempts_total", provider="openai", outcome="server_error") >= 1
    assert delta("audiorouter_upstream_duration_seconds_count", provider="openai") >= 5
    assert delta("audiorouter_request_bytes_total", route="/v1/audio/transcriptions") >= 4 * len(wav)
    assert delta("audiorouter_response_bytes_total", route="/v1/audio/speech") == len(sp.content)
    # the management call that created the key: ids in paths never become labels
    assert all("sk-" not in dict(ls).get("route", "") for (_, ls) in after)
    # read at scrape time
    assert any(n == "audiorouter_circuit_state" for (n, _) in after)
    assert ("audiorouter_ledger_pending_writes", frozenset()) in after
    assert ("audiorouter_ledger_writer_lag_seconds", frozenset()) in after


def test_log_lines_are_json_with_the_generation_id(gw, key):
    r = httpx.post(gw.url + "/v1/audio/speech", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "nope/unknown", "input": "x"})
    assert r.status_code in (400, 404)
    lines = [ln for ln in gw.log_path.read_text().splitlines() if ln.strip()]
    assert lines, "the server wrote no log line"
    for ln in lines:
        rec = json.loads(ln)  # every line is one JSON object
        assert {"ts", "level", "logger", "message", "generation_id"} <= rec.keys()


def test_json_formatter_and_generation_id_in_process():
    from audiorouter.core import metrics
    from audiorouter.core.logs import GenerationIdFilter, JsonFormatter

    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(JsonFormatter())
    h.addFilter(GenerationIdFilter())
    lg = logging.getLogger("audiorouter.test-json")
    lg.addHandler(h)
    lg.propagate = False
    try:
        tok = metrics.generation_id.set("gen-1-abc")
        try:
            lg.warning("upstream %s failed", "openai", extra={"provider": "openai"})
        finally:
            metrics.generation_id.reset(tok)
        lg.warning("outside a request")
    finally:
        lg.removeHandler(h)
    first, second = (json.loads(x) for x in buf.getvalue().splitlines())
    assert first["generation_id"] == "gen-1-abc" and first["message"] == "upstream openai failed"
    assert first["provider"] == "openai" and first["level"] == "warning"
    assert second["generation_id"] is None


def test_metrics_off_has_no_route_and_records_nothing():
    from audiorouter.api.app import create_app
    from audiorouter.config import Settings
    from audiorouter.core import metrics

    try:
        app = create_app(Settings(data_dir=tempfile.mkdtemp(), cache_ttl_s=0, metrics=False, preload=False))
        assert "/metrics" not in [getattr(r, "path", "") for r in app.routes]
        before = metrics.UPSTREAM.count(("x", "ok"))
        metrics.upstream_attempt("x", "ok")
        assert metrics.UPSTREAM.count(("x", "ok")) == before
        metrics.set_enabled(True)
        metrics.upstream_attempt("x", "ok")
        assert metrics.UPSTREAM.count(("x", "ok")) == before + 1
    finally:
        metrics.set_enabled(True)


def test_route_labels_are_bounded():
    from audiorouter.api.metrics import route_label

    assert route_label("/v1/audio/transcriptions") == "/v1/audio/transcriptions"
    assert route_label("/api/v1/keys/" + "ab" * 32) == "/api/v1/keys/{id}"
    assert route_label("/api/v1/batches/gen-1765136401-3f9a00") == "/api/v1/batches/{id}"


def test_every_metric_of_the_grafana_dashboard_is_exported(gw, key):
    """docs/grafana-dashboard.json queries only metrics that /metrics declares."""
    import re
    from pathlib import Path

    dash = json.loads((Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"audiorouter_\w+", t["expr"])}
    assert len(used) >= 12
    text = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {MGMT}"}).text
    declared = set(re.findall(r"^# TYPE (\w+) (\w+)", text, re.MULTILINE))
    names = set()
    for name, kind in declared:
        names.add(name)
        if kind == "counter":
            names.add(name + "_total")
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
    assert used <= names, f"the dashboard queries metrics /metrics does not declare: {sorted(used - names)}"


def test_histogram_buckets_are_cumulative_and_inclusive():
    from prometheus_client import generate_latest

    from audiorouter.core import metrics

    fam = metrics.Family("audiorouter_test_seconds", "test", ("k",), (0.001, 0.01, 1.0))
    try:
        for v in (0.001, 0.002, 0.5, 7.0):  # 0.001 is in the le="0.001" bucket: bounds are inclusive
            fam.observe(("a",), v)
        samples = {(s.name, s.labels.get("le")): s.value
                   for f in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode())
                   if f.name == "audiorouter_test_seconds" for s in f.samples}
    finally:
        metrics.REGISTRY.unregister(fam)
    assert samples[("audiorouter_test_seconds_bucket", "0.001")] == 1
    assert samples[("audiorouter_test_seconds_bucket", "0.01")] == 2
    assert samples[("audiorouter_test_seconds_bucket", "1.0")] == 3
    assert samples[("audiorouter_test_seconds_bucket", "+Inf")] == 4
    assert samples[("audiorouter_test_seconds_count", None)] == 4
    assert abs(samples[("audiorouter_test_seconds_sum", None)] - 7.503) < 1e-9
