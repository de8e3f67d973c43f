"""API keys over HTTP, on SQLite and on PostgreSQL: auth modes, the key lifecycle (create / list / get /
update / disable / expire / delete), management-only endpoints, bad input, and the CLI."""
from __future__ import annotations

import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conftest import ServerProcess, free_port
from test_keys_support import clean_environ, cli, gateway_env, gw  # noqa: F401  (gw is a fixture)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_health_open_and_missing_key_in_both_dialects(gw):
    assert gw.client.get("/health").status_code == 200
    assert gw.client.get("/api/v1/models").status_code == 200  # the catalog is public
    r = gw.client.get("/api/v1/key")
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == 401 and "Authorization" in err["message"] and err["metadata"]["type"] == "missing_api_key"
    assert r.headers["x-generation-id"].startswith("gen-")
    r = gw.client.post("/v1/audio/speech", json={"model": "test/priced-tts", "input": "hi"})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["param"] == "Authorization"
    r = gw.client.get("/api/v1/key", headers={"Authorization": "Bearer sk-ar-v1-" + "0" * 64})
    assert r.status_code == 401 and r.json()["error"]["metadata"]["type"] == "invalid_api_key"
    r = gw.client.get("/api/v1/key", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]


def test_key_lifecycle(gw):
    secret, data = gw.create_key(name="lifecycle", limit=1.5, limit_reset="weekly")
    h = data["hash"]
    assert secret.startswith("sk-ar-v1-") and len(secret) == len("sk-ar-v1-") + 64
    assert data["name"] == "lifecycle" and data["limit"] == 1.5 and data["limit_remaining"] == 1.5
    assert data["limit_reset"] == "weekly" and data["disabled"] is False and data["usage"] == 0
    assert secret not in str(data) and data["label"].startswith("sk-ar-v1-")

    # the new key works, and sees itself
    me = gw.key_info(secret)
    assert me["label"] == data["label"] and me["is_management_key"] is False and me["limit"] == 1.5

    listed = gw.client.get("/api/v1/keys", headers=gw.auth()).json()["data"]
    assert h in [k["hash"] for k in listed] and secret not in str(listed)
    got = gw.client.get(f"/api/v1/keys/{h}", headers=gw.auth())
    assert got.status_code == 200 and got.json()["data"]["name"] == "lifecycle"

    # rename and change the limit
    r = gw.client.patch(f"/api/v1/keys/{h}", json={"name": "renamed", "limit": 2, "limit_reset": None},
                        headers=gw.auth())
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "renamed" and r.json()["data"]["limit"] == 2
    assert r.json()["data"]["limit_reset"] is None and r.json()["data"]["updated_at"]

    # disable -> 403 at once; not listed unless asked; enable -> works again
    assert gw.client.patch(f"/api/v1/keys/{h}", json={"disabled": True}, headers=gw.auth()).status_code == 200
    r = gw.client.get("/api/v1/key", headers=gw.auth(secret))
    assert r.status_code == 403 and "disabled" in r.json()["error"]["message"]
    assert h not in [k["hash"] for k in gw.client.get("/api/v1/keys", headers=gw.auth()).json()["data"]]
    assert h in [k["hash"] for k in gw.client.get("/api/v1/keys?include_disabled=true", headers=gw.auth()).json()["data"]]
    assert gw.client.patch(f"/api/v1/keys/{h}", json={"disabled": False}, headers=gw.auth()).status_code == 200
    assert gw.client.get("/api/v1/key", headers=gw.auth(secret)).status_code == 200

    # delete -> the key no longer authenticates
    r = gw.client.delete(f"/api/v1/keys/{h}", headers=gw.auth())
    assert r.status_code == 200 and r.json() == {"deleted": True}
    assert gw.client.get("/api/v1/key", headers=gw.auth(secret)).status_code == 401
    assert gw.client.get(f"/api/v1/keys/{h}", headers=gw.auth()).status_code == 404
    assert gw.client.delete(f"/api/v1/keys/{h}", headers=gw.auth()).status_code == 404


def test_key_changes_apply_to_the_very_next_request(gw):
    """Keys are cached per process; a change through the API drops the cached copy at once."""
    secret, data = gw.create_key(limit=1)
    h = data["hash"]
    assert gw.speak(secret, "Hello there.").status_code == 200
    assert gw.client.patch(f"/api/v1/keys/{h}", json={"limit": 0}, headers=gw.auth()).status_code == 200
    r = gw.speak(secret, "Hello there.")
    assert r.status_code == 402, r.text
    assert gw.client.patch(f"/api/v1/keys/{h}", json={"limit": None, "rate_limit_rpm": 1},
                           headers=gw.auth()).status_code == 200
    assert gw.speak(secret, "Hello there.").status_code == 200
    assert gw.client.get("/api/v1/key", headers=gw.auth(secret)).status_code == 429
    soon = _iso(datetime.now(UTC) + timedelta(seconds=2))  # whole seconds: 1 to 2 s from now
    assert gw.client.patch(f"/api/v1/keys/{h}", json={"expires_at": soon, "rate_limit_rpm": None},
                           headers=gw.auth()).status_code == 200
    assert gw.client.get("/api/v1/key", headers=gw.auth(secret)).status_code == 200
    time.sleep(2.1)  # expiry is checked on every request, whatever is cached
    r = gw.client.get("/api/v1/key", headers=gw.auth(secret))
    assert r.status_code == 401 and r.json()["error"]["metadata"]["type"] == "key_expired"


def test_expired_key_gets_401_with_a_clear_message(gw):
    expiry = datetime.now(UTC) + timedelta(seconds=2)
    secret, data = gw.create_key(expires_at=_iso(expiry))
    assert data["expires_at"].startswith(_iso(expiry)[:19])
    deadline = time.time() + 30
    while True:
        r = gw.client.get("/api/v1/key", headers=gw.auth(secret))
        if r.status_code != 200 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"] and r.json()["error"]["metadata"]["type"] == "key_expired"
    hashes = lambda q: [k["hash"] for k in gw.client.get("/api/v1/keys" + q, headers=gw.auth()).json()["data"]]  # noqa: E731
    assert data["hash"] not in hashes("") and data["hash"] in hashes("?include_expired=true")


def test_management_only_endpoints_and_inference_with_management_key(gw):
    secret, _ = gw.create_key()
    for method, path in (("GET", "/api/v1/keys"), ("POST", "/api/v1/keys"), ("GET", "/api/v1/byok")):
        r = gw.client.request(method, path, headers=gw.auth(secret), json={"name": "x"} if method == "POST" else None)
        assert r.status_code == 403, (path, r.text)
        assert "management key" in r.json()["error"]["message"]
    r = gw.speak(gw.mgmt, "Hello.")
    assert r.status_code == 403 and "management keys cannot" in r.json()["error"]["message"]
    r = gw.client.post("/v1/audio/speech", json={"model": "test/priced-tts", "input": "Hello."}, headers=gw.auth())
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize("body, field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": 5}, "name"),
    ({"name": "x", "limit": "ten"}, "limit"),
    ({"name": "x", "limit": -1}, "limit"),
    ({"name": "x", "limit_reset": "hourly"}, "limit_reset"),
    ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "x", "rate_limit_rpm": 0}, "rate_limit_rpm"),
    ({"name": "x", "max_concurrency": "two"}, "max_concurrency"),
    ({"name": "x", "include_byok_in_limit": "yes"}, "include_byok_in_limit"),
])
def test_create_key_bad_input_is_400_naming_the_field(gw, body, field):
    r = gw.client.post("/api/v1/keys", json=body, headers=gw.auth())
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["metadata"]["param"] == field and field in err["message"]


def test_update_and_lookup_bad_input(gw):
    _, data = gw.create_key()
    h = data["hash"]
    r = gw.client.patch(f"/api/v1/keys/{h}", json={"colour": "red"}, headers=gw.auth())
    assert r.status_code == 400 and "No update fields provided" in r.json()["error"]["message"]
    r = gw.client.patch(f"/api/v1/keys/{h}", json={"disabled": "no"}, headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "disabled"
    r = gw.client.patch(f"/api/v1/keys/{h}", content=b"{not json", headers={**gw.auth(), "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "body"
    r = gw.client.get("/api/v1/keys/not-a-hash", headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "hash"
    r = gw.client.patch("/api/v1/keys/" + "f" * 64, json={"name": "x"}, headers=gw.auth())
    assert r.status_code == 404
    r = gw.client.get("/api/v1/keys?offset=minus", headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "offset"
    r = gw.client.get("/api/v1/keys?include_disabled=maybe", headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "include_disabled"
    r = gw.client.get("/api/v1/generation", headers=gw.auth())
    assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "id"
    r = gw.client.get("/api/v1/generation?id=gen-nope", headers=gw.auth())
    assert r.status_code == 404


def test_secrets_are_stored_hashed_and_never_logged(gw):
    secret, data = gw.create_key(name="hashed")
    assert gw.key_info(secret)["label"] == data["label"]
    rows = gw.db.query(f"SELECT * FROM ar_api_keys WHERE hash = '{data['hash']}'")
    assert len(rows) == 1
    assert all(secret not in str(v) for v in rows[0])
    assert any(v == data["hash"] for v in rows[0])
    log = gw.log()
    assert secret not in log and gw.mgmt not in log


def test_cli_create_list_disable_share_the_store(gw):
    env = {k: v for k, v in gw.env.items() if k != "AUDIOROUTER_MANAGEMENT_KEY"}
    made = cli(env, "keys", "create", "--name", "from-cli", "--limit", "3", "--limit-reset", "monthly")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("sk-ar-v1-") and "hash" in made.stderr
    me = gw.key_info(secret)
    assert me["limit"] == 3 and me["limit_reset"] == "monthly"
    listed = cli(env, "keys", "list")
    assert listed.returncode == 0 and "from-cli" in listed.stdout and secret not in listed.stdout
    off = cli(env, "keys", "disable", me["hash"][:12])
    assert off.returncode == 0, off.stderr
    assert gw.client.get("/api/v1/key", headers=gw.auth(secret)).status_code == 403
    bad = cli(env, "keys", "create", "--limit-reset", "hourly")
    assert bad.returncode != 0 and "--limit-reset" in (bad.stderr + bad.stdout)
    cur = cli(env, "db", "current")
    assert cur.returncode == 0 and "0003" in cur.stdout  # the latest migration (0003: chat audio ids)


# ---- auth modes (their own servers) -------------------------------------------------------------------
def test_no_keys_serves_loopback_without_a_key(tmp_path):
    s = ServerProcess(env=gateway_env(tmp_path), tmp=tmp_path).start()
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            r = c.get("/api/v1/key")
            assert r.status_code == 200 and r.json()["data"]["label"].startswith("anonymous")
            # SDKs always send some token: with no keys it is ignored
            r = c.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": "Hi."},
                       headers={"Authorization": "Bearer whatever"})
            assert r.status_code == 200 and len(r.content) > 0
            gen = c.get(f"/api/v1/generation?id={r.headers['x-generation-id']}")
            assert gen.status_code == 200 and gen.json()["data"]["api_key_hash"] is None
            # the first key turns auth on
            made = c.post("/api/v1/keys", json={"name": "first", "is_management_key": True})
            assert made.status_code == 201
            assert c.get("/api/v1/key").status_code == 401
            assert c.get("/api/v1/key", headers={"Authorization": f"Bearer {made.json()['key']}"}).status_code == 200
    finally:
        s.stop()


def test_require_auth_without_any_key(tmp_path):
    s = ServerProcess(env=gateway_env(tmp_path, AUDIOROUTER_REQUIRE_AUTH="true"), tmp=tmp_path).start()
    try:
        r = httpx.post(s.url + "/api/v1/audio/speech", json={"model": "local/hibari", "input": "Hi."}, timeout=30)
        assert r.status_code == 401
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
    finally:
        s.stop()


def _serve(env, *args):
    port = free_port()
    return port, subprocess.Popen([sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(port), *args],
                                  env={**clean_environ(), **env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)


def _wait_up(port: int, proc: subprocess.Popen) -> bool:
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


def test_non_loopback_without_auth_refuses_to_start_unless_forced(tmp_path):
    env = gateway_env(tmp_path)
    port, proc = _serve(env, "--host", "0.0.0.0")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "refusing to serve 0.0.0.0 without authentication" in out and "--insecure-no-auth" in out

    port, proc = _serve(env, "--host", "0.0.0.0", "--insecure-no-auth")
    try:
        assert _wait_up(port, proc)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)

    mgmt = "sk-ar-test-" + secrets.token_hex(20)
    port, proc = _serve({**env, "AUDIOROUTER_MANAGEMENT_KEY": mgmt}, "--host", "0.0.0.0")
    try:
        assert _wait_up(port, proc)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/key", timeout=10).status_code == 401
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/key", headers={"Authorization": f"Bearer {mgmt}"}, timeout=10)
        assert r.status_code == 200 and r.json()["data"]["is_management_key"] is True
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert mgmt not in out


@pytest.mark.parametrize("env, says", [
    ({"AUDIOROUTER_DATABASE_URL": "mysql://nobody@127.0.0.1/x"}, "unsupported database"),
    ({"AUDIOROUTER_DATABASE_URL": f"postgresql://nobody:hunter2secret@127.0.0.1:{free_port()}/x"}, "migration failed"),
    ({"AUDIOROUTER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, "cannot reach Redis"),
])
def test_unusable_store_fails_fast_with_a_clear_message(tmp_path, env, says):
    _port, proc = _serve({**gateway_env(tmp_path), **env})
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode != 0 and says in out
    assert "hunter2secret" not in out  # a password in the URL is never printed


def test_start_sweeps_nothing_it_should_not(gw):
    """A gateway restart over the same store keeps keys and their usage."""
    secret, _data = gw.create_key(limit=1)
    r = gw.speak(secret, "Keep me.")
    assert r.status_code == 200
    before = gw.key_info(secret)
    gw.restart()
    after = gw.key_info(secret)
    assert after["usage"] == before["usage"] > 0 and after["limit_remaining"] == before["limit_remaining"]
