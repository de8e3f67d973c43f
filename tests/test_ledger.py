"""The usage ledger over HTTP, on SQLite and on PostgreSQL: one generation row per request in OpenRouter's
generation shape, per-day activity, a replica killed mid-request leaving an `incomplete` row, crashed
reservations released by the sweeper, retries/fallbacks charged once, BYOK keys encrypted at rest and used
in preference to the gateway's (a fake upstream stands in for the provider)."""
from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import DEV_AUDIO
from test_keys_support import TTS_PRICE_PER_CHAR, PgDatabase, gw, start_gateway  # noqa: F401

TEXT = "The ledger keeps one row per request."


def generation(gw, gen_id: str, key: str | None = None, *, final: bool = True) -> dict:
    deadline = time.time() + 30
    while True:
        r = gw.client.get(f"/api/v1/generation?id={gen_id}", headers=gw.auth(key))
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if not final or data["status"] != "incomplete" or time.time() > deadline:
            return data
        time.sleep(0.2)


def test_generation_row_in_openrouter_shape(gw):
    key, data = gw.create_key(limit=1)
    r = gw.speak(key, TEXT, user="user-7", session_id="sess-42")
    assert r.status_code == 200 and len(r.content) > 1000
    g = generation(gw, r.headers["x-generation-id"], key)
    assert g["id"] == r.headers["x-generation-id"] and g["api_type"] == "tts" and g["status"] == "success"
    assert g["model"] == "test/priced-tts" and g["provider"] == "local" and g["endpoint"] == "local/hibari"
    assert g["total_cost"] == pytest.approx(len(TEXT) * TTS_PRICE_PER_CHAR) == g["usage"]
    assert g["characters"] == len(TEXT) and g["streamed"] is True and g["is_byok"] is False
    assert g["external_user"] == "user-7" and g["session_id"] == "sess-42" and g["api_key_hash"] == data["hash"]
    assert g["finish_reason"] == "stop" and g["cancelled"] is False and g["latency"] > 0
    assert g["generation_time"] >= g["latency"] and g["created_at"].endswith("Z")
    assert [(p["status"], p["endpoint_id"]) for p in g["provider_responses"]] == [(200, "local/hibari")]
    # a key sees only its own generations; a management key sees all
    other, _ = gw.create_key()
    assert gw.client.get(f"/api/v1/generation?id={g['id']}", headers=gw.auth(other)).status_code == 404
    assert gw.client.get(f"/api/v1/generation?id={g['id']}", headers=gw.auth()).status_code == 200


def test_failed_requests_are_recorded_too(gw):
    key, _ = gw.create_key(limit=1)
    r = gw.client.post("/api/v1/audio/speech", json={"model": "test/no-such-model", "input": "Hi."},
                       headers=gw.auth(key))
    assert r.status_code == 404
    g = generation(gw, r.headers["x-generation-id"], key)
    assert g["status"] == "error" and g["error"]["status"] == 404 and g["total_cost"] == 0
    assert gw.key_info(key)["usage"] == 0


def test_activity_aggregates_per_day_and_model(gw):
    key, data = gw.create_key(limit=1)
    texts = ["One two three.", "Four five six seven."]
    for t in texts:
        assert gw.speak(key, t).status_code == 200
    deadline = time.time() + 20
    while True:
        r = gw.client.get("/api/v1/activity", headers=gw.auth(key))
        assert r.status_code == 200
        rows = r.json()["data"]
        if sum(x["requests"] for x in rows) >= 2 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(rows) == 1
    row = rows[0]
    assert row["model"] == "test/priced-tts" and row["endpoint_id"] == "local/hibari" and row["requests"] == 2
    assert row["date"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert row["usage"] == pytest.approx(sum(len(t) for t in texts) * TTS_PRICE_PER_CHAR)
    assert row["characters"] == sum(len(t) for t in texts)
    mine = gw.client.get(f"/api/v1/activity?api_key_hash={data['hash']}", headers=gw.auth()).json()["data"]
    assert mine == rows
    everyone = gw.client.get("/api/v1/activity", headers=gw.auth()).json()["data"]
    assert sum(x["requests"] for x in everyone) >= 2
    assert gw.client.get("/api/v1/activity?date=yesterday", headers=gw.auth()).status_code == 400
    assert gw.client.get("/api/v1/activity?api_key_hash=" + "0" * 64, headers=gw.auth(key)).status_code == 403


def test_recent_generations_newest_first_and_scoped_to_the_key(gw):
    """GET /api/v1/generations (the web app's Activity list): newest first, a regular key sees only its own,
    a management key everyone's; a bad limit is a 400 naming it."""
    key, _ = gw.create_key(limit=1)
    other, _ = gw.create_key(limit=1)
    ids = [gw.speak(key, t).headers["x-generation-id"] for t in ("First.", "Second.")]
    mine_other = gw.speak(other, "Someone else.").headers["x-generation-id"]
    r = gw.client.get("/api/v1/generations?limit=5", headers=gw.auth(key))
    assert r.status_code == 200, r.text
    assert [g["id"] for g in r.json()["data"]] == ids[::-1]
    everyone = [g["id"] for g in gw.client.get("/api/v1/generations?limit=100", headers=gw.auth()).json()["data"]]
    assert {*ids, mine_other} <= set(everyone) and everyone.index(mine_other) < everyone.index(ids[0])
    assert len(gw.client.get("/api/v1/generations?limit=1", headers=gw.auth(key)).json()["data"]) == 1
    for bad in ("0", "101", "x", "\u00b2"):
        r = gw.client.get("/api/v1/generations", params={"limit": bad}, headers=gw.auth(key))
        assert r.status_code == 400 and "limit" in r.json()["error"]["message"], (bad, r.text)


def test_rows_and_usage_are_readable_right_after_the_answer(gw):
    """The ledger writes behind the request (group commit), but a read flushes what this process queued."""
    key, _ = gw.create_key(limit=1)
    for _ in range(3):
        r = gw.speak(key, TEXT)
        assert r.status_code == 200
        g = generation(gw, r.headers["x-generation-id"], key, final=False)  # one read, no polling
        assert g["status"] == "success" and g["total_cost"] == pytest.approx(len(TEXT) * TTS_PRICE_PER_CHAR)
    r = gw.transcribe(key)
    assert r.status_code == 200, r.text
    g = generation(gw, r.headers["x-generation-id"], key, final=False)
    assert g["status"] == "success" and g["api_type"] == "stt" and g["total_cost"] > 0
    info = gw.key_info(key)
    assert info["usage"] == pytest.approx(3 * len(TEXT) * TTS_PRICE_PER_CHAR + g["total_cost"])
    assert info["limit_reserved"] == 0
    credits = gw.client.get("/api/v1/credits", headers=gw.auth(key)).json()["data"]
    assert credits["total_usage"] == pytest.approx(info["usage"])


# ---- a replica killed mid-request --------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def killable(request, tmp_path):
    pg = PgDatabase().create() if request.param == "postgres" else None
    g = start_gateway(request.param, tmp_path, pg=pg)
    yield g
    g.stop()
    if pg is not None:
        pg.drop()


def test_sigkill_mid_request_leaves_an_incomplete_row(killable):
    gw = killable
    key, _data = gw.create_key(limit=100)
    long_text = "A long answer that is still being spoken when the process dies. " * 50
    with httpx.Client(base_url=gw.url, timeout=120) as c:
        with c.stream("POST", "/api/v1/audio/speech", json={"model": "test/priced-tts", "input": long_text},
                      headers=gw.auth(key)) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()
            assert next(chunks)
            gen_id = r.headers["x-generation-id"]
            # the charge is queued when the audio starts and written by the ledger's group commit within
            # milliseconds (a kill inside that window loses it: docs/deployment.md); kill once it is written
            deadline = time.time() + 5
            while not gw.db.query(f"SELECT id FROM ar_generations WHERE id = '{gen_id}' AND cost_nano > 0"):
                assert time.time() < deadline, "the charge was not written within 5 s"
                time.sleep(0.005)
            os.kill(gw.proc.proc.pid, signal.SIGKILL)
            gw.proc.proc.wait(30)
    gw.restart()
    g = generation(gw, gen_id, key, final=False)
    assert g["status"] == "incomplete" and g["finish_reason"] is None and g["completed_at"] is None
    assert g["total_cost"] == pytest.approx(len(long_text) * TTS_PRICE_PER_CHAR)  # the text went upstream
    info = gw.key_info(key)
    assert info["usage"] == pytest.approx(len(long_text) * TTS_PRICE_PER_CHAR) and info["limit_reserved"] == 0
    rows = gw.db.query(f"SELECT status, settled FROM ar_generations WHERE id = '{gen_id}'")
    assert [(s, bool(x)) for s, x in rows] == [("incomplete", True)]


def test_sigkill_during_transcription_then_the_sweeper_releases_the_reservation(killable):
    gw = killable
    key, data = gw.create_key(limit=100)
    audio = DEV_AUDIO / "jfk_inaugural_excerpt.flac"
    body = {"model": "test/priced-whisper", "input_audio": {"data": base64.b64encode(audio.read_bytes()).decode(),
                                                            "format": "flac"}}

    def send():
        try:
            httpx.post(gw.url + "/api/v1/audio/transcriptions", json=body, headers=gw.auth(key), timeout=120)
        except httpx.HTTPError:
            pass

    t = threading.Thread(target=send, daemon=True)
    t.start()
    deadline = time.time() + 60
    rows = []
    while time.time() < deadline and not rows:
        rows = gw.db.query(f"SELECT id, reserved_nano FROM ar_generations WHERE key_hash = '{data['hash']}' "
                           "AND status = 'incomplete'")
        time.sleep(0.02)
    assert rows, "the request never reached the ledger"
    os.kill(gw.proc.proc.pid, signal.SIGKILL)
    gw.proc.proc.wait(30)
    t.join(30)
    gen_id, reserved = rows[0]
    assert reserved > 0
    # after a restart the row is still there, incomplete; with a short TTL the sweeper frees the reservation
    gw.env["AUDIOROUTER_RESERVATION_TTL_S"] = "1"
    time.sleep(1.1)
    gw.restart()
    g = generation(gw, gen_id, key, final=False)
    assert g["status"] == "incomplete" and g["total_cost"] == 0 and g["error"]["type"] == "abandoned"
    info = gw.key_info(key)
    assert info["limit_reserved"] == 0 and info["usage"] == 0 and info["limit_remaining"] == 100


# ---- fake upstream: BYOK and fallbacks ----------------------------------------------------------------
class FakeUpstream:
    """OpenAI-style speech upstream: /ok answers PCM, /fail answers 500. Records the Authorization headers."""

    def __init__(self) -> None:
        self.auth: list[str] = []
        seen = self.auth

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                seen.append(self.headers.get("authorization") or "")
                if self.path.startswith("/ok/") and self.path.endswith("/audio/transcriptions"):
                    body = json.dumps({"text": "hello from the byok upstream"}).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                elif self.path.startswith("/fail/"):
                    body = json.dumps({"error": {"message": "upstream exploded", "type": "server_error"}}).encode()
                    self.send_response(500)
                    self.send_header("content-type", "application/json")
                else:
                    body = b"\x00\x01" * 4800
                    self.send_response(200)
                    self.send_header("content-type", "audio/pcm")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def upstream_catalog(fake: FakeUpstream) -> str:
    return f"""
providers:
  byokup:
    name: BYOK Upstream
    adapter: openai
    base_url: {fake.url}/ok/v1
    api_key_env: AUDIOROUTER_TEST_UNSET_KEY_{os.getpid()}
  failing:
    name: Failing Upstream
    adapter: openai_compatible
    base_url: {fake.url}/fail/v1
    api_key: gateway-own-upstream-key
models:
  - id: test/byok-tts
    name: BYOK speech (test)
    kind: speech
    endpoints:
      - provider: byokup
        upstream_model: tts-1
        pricing: {{per_million_characters: 1000}}
  - id: test/byok-stt
    name: BYOK transcription (test)
    kind: transcription
    endpoints:
      - provider: byokup
        upstream_model: whisper-1
        pricing: {{per_minute: 0.006}}
        capabilities: {{verbose_json: false}}
  - id: test/fallback-tts
    name: fallback speech (test)
    kind: speech
    endpoints:
      - provider: failing
        upstream_model: tts-1
        pricing: {{per_million_characters: 1000}}
      - provider: local
        upstream_model: hibari
        pricing: {{per_million_characters: 1000}}
        capabilities: {{speed: true, streaming: true}}
"""


def assert_no_provider(r, model: str) -> None:
    """The answer for a model whose only provider has no key this caller may use: a 503 naming the model."""
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["metadata"]["type"] == "no_available_provider" and err["metadata"]["param"] == "model", err
    assert err["metadata"]["model"] == model and err["message"].startswith("model: no provider for " + model), err


@pytest.fixture(params=["sqlite", "postgres"])
def upstream_gw(request, tmp_path):
    from audiorouter.providers.registry import adapter_class
    if adapter_class("openai") is None or adapter_class("openai_compatible") is None:
        pytest.skip("the openai adapters are not part of this tree")
    fake = FakeUpstream()
    cat = tmp_path / "upstream.yaml"
    cat.write_text(upstream_catalog(fake), encoding="utf-8")
    pg = PgDatabase().create() if request.param == "postgres" else None
    g = start_gateway(request.param, tmp_path, pg=pg, AUDIOROUTER_SECRET_KEY="test-secret-" + request.param,
                      AUDIOROUTER_BYOK_FEE="0.05", AUDIOROUTER_RETRY_BACKOFF_S="0.01")
    g.env["AUDIOROUTER_CATALOG"] = str(cat)
    g.restart()
    g.fake = fake
    yield g
    g.stop()
    fake.close()
    if pg is not None:
        pg.drop()


def test_byok_key_is_encrypted_used_first_and_billed_the_fee(upstream_gw):
    gw = upstream_gw
    key, _data = gw.create_key(limit=1)
    # without a provider key of its own the model has no provider here
    r = gw.client.post("/api/v1/audio/speech", json={"model": "test/byok-tts", "input": TEXT}, headers=gw.auth(key))
    assert_no_provider(r, "test/byok-tts")
    assert gw.fake.auth == []
    byok_secret = "sk-byok-" + os.urandom(12).hex()
    made = gw.client.post("/api/v1/byok", json={"provider": "byokup", "key": byok_secret, "name": "mine"},
                          headers=gw.auth())
    assert made.status_code == 201, made.text
    entry = made.json()["data"]
    assert byok_secret not in made.text and entry["label"].endswith(byok_secret[-4:])
    stored = gw.db.query(f"SELECT encrypted_key FROM ar_byok_keys WHERE id = '{entry['id']}'")
    assert stored and byok_secret not in stored[0][0]

    r = gw.client.post("/api/v1/audio/speech", json={"model": "test/byok-tts", "input": TEXT}, headers=gw.auth(key))
    assert r.status_code == 200, r.text
    assert gw.fake.auth[-1] == f"Bearer {byok_secret}"
    price = len(TEXT) * TTS_PRICE_PER_CHAR
    assert float(r.headers["x-cost"]) == pytest.approx(price * 0.05)
    g = generation(gw, r.headers["x-generation-id"], key)
    assert g["is_byok"] is True and g["total_cost"] == pytest.approx(price * 0.05)
    assert g["upstream_inference_cost"] == pytest.approx(price) and g["provider_responses"][0]["is_byok"] is True
    info = gw.key_info(key)
    assert info["usage"] == pytest.approx(price * 0.05) and info["byok_usage"] == pytest.approx(price)
    assert byok_secret not in gw.log()

    # restricted to another key: not used for this one
    _other, other_data = gw.create_key()
    r = gw.client.patch(f"/api/v1/byok/{entry['id']}", json={"allowed_api_key_hashes": [other_data["hash"]]},
                        headers=gw.auth())
    assert r.status_code == 200 and r.json()["data"]["allowed_api_key_hashes"] == [other_data["hash"]]
    n = len(gw.fake.auth)
    r = gw.client.post("/api/v1/audio/speech", json={"model": "test/byok-tts", "input": TEXT}, headers=gw.auth(key))
    assert_no_provider(r, "test/byok-tts")
    assert len(gw.fake.auth) == n
    assert gw.client.delete(f"/api/v1/byok/{entry['id']}", headers=gw.auth()).json() == {"deleted": True}

    # bad input names the field
    for body, field in (({"key": "x"}, "provider"), ({"provider": "nope", "key": "x"}, "provider"),
                        ({"provider": "local", "key": "x"}, "provider"), ({"provider": "byokup"}, "key"),
                        ({"provider": "byokup", "key": "x", "allowed_api_key_hashes": ["f" * 64]},
                         "allowed_api_key_hashes")):
        r = gw.client.post("/api/v1/byok", json=body, headers=gw.auth())
        assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == field, (body, r.text)


def test_byok_only_transcription_model_is_served_with_the_callers_key(upstream_gw):
    """The caller's BYOK key must count when the audio is planned (chunk limits), not only when it is sent."""
    gw = upstream_gw
    key, _ = gw.create_key(limit=1)
    wav = sorted(DEV_AUDIO.glob("*.wav"))[0].read_bytes()
    body = {"model": "test/byok-stt", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}
    r = gw.client.post("/api/v1/audio/transcriptions", json=body, headers=gw.auth(key))
    assert_no_provider(r, "test/byok-stt")
    assert gw.fake.auth == []
    byok_secret = "sk-byok-" + os.urandom(12).hex()
    made = gw.client.post("/api/v1/byok", json={"provider": "byokup", "key": byok_secret}, headers=gw.auth())
    assert made.status_code == 201, made.text
    r = gw.client.post("/api/v1/audio/transcriptions", json=body, headers=gw.auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "hello from the byok upstream"
    assert gw.fake.auth[-1] == f"Bearer {byok_secret}"
    g = generation(gw, r.headers["x-generation-id"], key)
    assert g["is_byok"] is True and g["provider_name"] == "BYOK Upstream"


def test_a_store_failure_on_the_request_path_is_a_503_not_a_500(tmp_path):
    """The caller's BYOK keys are read from the database once the short cache lapses: a database that fails
    there answers 503 store_unavailable with Retry-After (and the next request works again)."""
    g = start_gateway("sqlite", tmp_path, AUDIOROUTER_KEY_CACHE_TTL_S="0.1")
    try:
        key, _ = g.create_key()
        body = {"model": "local/hibari", "input": "Hello.", "response_format": "pcm"}
        assert g.client.post("/api/v1/audio/speech", json=body, headers=g.auth(key)).status_code == 200
        g.db.query("ALTER TABLE ar_byok_keys RENAME TO ar_byok_keys_away")
        time.sleep(0.3)
        r = g.client.post("/api/v1/audio/speech", json=body, headers=g.auth(key))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["metadata"]["type"] == "store_unavailable" and r.headers["retry-after"] == "2"
        g.db.query("ALTER TABLE ar_byok_keys_away RENAME TO ar_byok_keys")
        time.sleep(0.3)
        assert g.client.post("/api/v1/audio/speech", json=body, headers=g.auth(key)).status_code == 200
    finally:
        g.stop()


def test_fallback_after_upstream_failures_is_charged_once(upstream_gw):
    gw = upstream_gw
    key, _ = gw.create_key(limit=1)
    r = gw.client.post("/api/v1/audio/speech", json={"model": "test/fallback-tts", "input": TEXT},
                       headers=gw.auth(key))
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "local"
    g = generation(gw, r.headers["x-generation-id"], key)
    statuses = [p["status"] for p in g["provider_responses"]]
    assert statuses[-1] == 200 and len(statuses) >= 2 and all(s >= 500 for s in statuses[:-1])
    assert any(a == "Bearer gateway-own-upstream-key" for a in gw.fake.auth)
    price = len(TEXT) * TTS_PRICE_PER_CHAR
    assert g["total_cost"] == pytest.approx(price) and g["is_byok"] is False
    assert gw.key_info(key)["usage"] == pytest.approx(price)
