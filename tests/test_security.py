"""Hardening against hostile or unlucky clients (docs/security.md): what counts as a public bind, the browser
guard (Host / Origin / CORS / Content-Type, api/guard.py) and the connection limits (read deadlines, caps;
api/protocol.py). Every server here listens on 127.0.0.1 only; waits are bounded."""
from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import orjson
import pytest

from audiorouter.store.state import is_loopback
from conftest import ServerProcess, free_port
from test_keys_support import clean_environ, gateway_env


# ---- 1. a public bind is any bind that is not loopback -----------------------------------------------------
@pytest.mark.parametrize("host", ["", " ", "0.0.0.0", "::", "[::]", "*", "example.com", "gateway.local",
                                  "192.168.1.10", "10.0.0.1", "fe80::1", "::ffff:127.0.0.1x"])
def test_every_spelling_of_all_interfaces_or_another_address_is_public(host):
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1", "[::1]"])
def test_loopback_binds(host):
    assert is_loopback(host)


def test_an_empty_host_without_keys_refuses_to_start(tmp_path):
    """`AUDIOROUTER_HOST= audiorouter serve` bound every interface with no auth; it must refuse, as 0.0.0.0 does
    (the refusal comes from the app's start-up, before uvicorn binds anything)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(port)],
                            env={**clean_environ(), **gateway_env(tmp_path), "AUDIOROUTER_HOST": ""},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it started serving every interface: the bug
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        pytest.fail("an empty AUDIOROUTER_HOST served without authentication:\n" + out[-2000:])
    assert proc.returncode != 0
    assert "refusing to serve '' (every interface) without authentication" in out and "--insecure-no-auth" in out


# ---- 6. browsers: DNS rebinding, cross-site requests, CORS ------------------------------------------------
APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def open_gw(tmp_path_factory):
    """No keys (loopback install), one allowed extra Host name and one CORS origin."""
    tmp = tmp_path_factory.mktemp("guard")
    s = ServerProcess(env=gateway_env(tmp, AUDIOROUTER_ALLOWED_HOSTS="gw.internal",
                                      AUDIOROUTER_CORS_ORIGINS=f"{APP_ORIGIN}, https://other.example/"),
                      tmp=tmp).start()
    yield s
    s.stop()


def envelope(r: httpx.Response, status: int, param: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    if r.request.url.path.startswith("/v1/"):
        assert err["param"] == param and err["type"]
    else:
        assert err["code"] == status and err["metadata"]["param"] == param
    assert param in err["message"]
    return err["message"]


@pytest.mark.parametrize("path", ["/api/v1/keys", "/api/v1/key", "/api/v1/credits", "/v1/models"])
def test_a_foreign_host_is_refused_without_keys(open_gw, path):
    r = httpx.get(open_gw.url + path, headers={"Host": "evil.example"}, timeout=30)
    assert "DNS rebinding" in envelope(r, 403, "Host")
    assert r.headers["x-generation-id"].startswith("gen-")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.9.9.9", "[::1]", "LocalHost", "gw.internal"])
def test_loopback_hosts_and_allowed_names_are_served(open_gw, host):
    for h in (host, f"{host}:{open_gw.port}"):
        r = httpx.get(open_gw.url + "/api/v1/key", headers={"Host": h}, timeout=30)
        assert r.status_code == 200, (h, r.text)


def test_the_audio_fast_path_is_guarded_too(open_gw):
    body = orjson.dumps({"model": "test/priced-tts"})  # no input: the handler itself answers 400 naming it
    for path in ("/v1/audio/speech", "/api/v1/audio/speech", "/v1/audio/transcriptions", "/api/v1/audio/translations"):
        r = httpx.post(open_gw.url + path, content=body, timeout=30,
                       headers={"Host": "evil.example", "Content-Type": "application/json"})
        envelope(r, 403, "Host")
        r = httpx.post(open_gw.url + path, content=body, timeout=30,
                       headers={"Origin": "http://evil.example", "Content-Type": "application/json"})
        envelope(r, 403, "Origin")
        r = httpx.post(open_gw.url + path, content=body, timeout=30, headers={"Content-Type": "text/plain"})
        envelope(r, 415, "Content-Type")
    r = httpx.post(open_gw.url + "/v1/audio/speech", content=body, timeout=30,
                   headers={"Content-Type": "application/json; charset=utf-8"})
    envelope(r, 400, "input")  # JSON gets through to the handler


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx"])
def test_json_endpoints_require_application_json(open_gw, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    for method, path in (("POST", "/api/v1/keys"), ("POST", "/api/v1/byok"), ("PATCH", "/api/v1/keys/" + "0" * 64),
                         ("POST", "/v1/audio/speech")):
        r = httpx.request(method, open_gw.url + path, content=b'{"name": "x"}', headers=headers, timeout=30)
        envelope(r, 415, "Content-Type")
    if ctype in (None, "text/plain", "application/x-www-form-urlencoded"):  # uploads take multipart only
        r = httpx.post(open_gw.url + "/v1/audio/transcriptions", content=b'{"model": "x"}', headers=headers, timeout=30)
        envelope(r, 415, "Content-Type")


def test_same_origin_browser_requests_work(open_gw):
    """A page served by this server (the playground) calls the API from the browser: Origin is the server's."""
    own = {"Origin": open_gw.url}
    assert httpx.get(open_gw.url + "/api/v1/key", headers=own, timeout=30).status_code == 200
    r = httpx.post(open_gw.url + "/v1/audio/speech", json={"model": "test/priced-tts"}, headers=own, timeout=30)
    envelope(r, 400, "input")
    r = httpx.get(open_gw.url + "/api/v1/key", headers={"Origin": f"http://localhost:{open_gw.port}",
                                                         "Host": f"localhost:{open_gw.port}"}, timeout=30)
    assert r.status_code == 200
    # the same host on another port is another origin
    r = httpx.get(open_gw.url + "/api/v1/key", headers={"Origin": f"http://127.0.0.1:{open_gw.port + 1}"}, timeout=30)
    envelope(r, 403, "Origin")


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://app.example.evil.com",
                                    "http://app.example"])
def test_cross_origin_requests_are_refused_unless_allowed(open_gw, origin):
    r = httpx.get(open_gw.url + "/api/v1/key", headers={"Origin": origin}, timeout=30)
    envelope(r, 403, "Origin")
    r = httpx.options(open_gw.url + "/v1/audio/speech", timeout=30, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    envelope(r, 403, "Origin")
    assert "access-control-allow-origin" not in r.headers


def test_cors_for_an_allowed_origin(open_gw):
    pre = httpx.options(open_gw.url + "/v1/audio/speech", timeout=30, headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-title"})
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert {"authorization", "content-type", "x-title"} <= {
        h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert "Origin" in pre.headers["vary"]
    r = httpx.post(open_gw.url + "/v1/audio/speech", json={"model": "test/priced-tts"}, timeout=30,
                   headers={"Origin": APP_ORIGIN, "Authorization": "Bearer whatever"})
    envelope(r, 400, "input")
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN and "Origin" in r.headers["vary"]
    assert "X-Generation-Id" in r.headers["access-control-expose-headers"]
    r = httpx.post(open_gw.url + "/v1/audio/speech", content=b"{}", timeout=30,
                   headers={"Origin": APP_ORIGIN, "Content-Type": "text/plain"})
    envelope(r, 415, "Content-Type")
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN  # the page may read why
    r = httpx.get(open_gw.url + "/api/v1/key", headers={"Origin": "https://other.example"}, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://other.example"


def test_the_rebinding_attack_of_the_report_creates_no_key(open_gw):
    """POST /api/v1/keys with Host and Origin evil.example and text/plain created a management key (201)."""
    attack = {"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": "text/plain"}
    r = httpx.post(open_gw.url + "/api/v1/keys", content=b'{"name": "pwned", "is_management_key": true}',
                   headers=attack, timeout=30)
    assert r.status_code == 403, r.text
    r = httpx.post(open_gw.url + "/api/v1/keys", content=b'{"name": "pwned", "is_management_key": true}',
                   headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 403, r.text
    listed = httpx.get(open_gw.url + "/api/v1/keys", timeout=30)
    assert listed.status_code == 200 and listed.json()["data"] == []  # still no key: auth still off


def test_with_keys_the_host_is_not_what_protects(tmp_path):
    """Once keys exist a rebound page has no key to send: any Host reaches auth (a proxy may forward its own)."""
    mgmt = "sk-ar-test-" + secrets.token_hex(20)
    s = ServerProcess(env=gateway_env(tmp_path, management_key=mgmt), tmp=tmp_path).start()
    try:
        r = httpx.get(s.url + "/api/v1/key", headers={"Host": "api.example.com"}, timeout=30)
        assert r.status_code == 401
        r = httpx.get(s.url + "/api/v1/key", headers={"Host": "api.example.com", "Authorization": f"Bearer {mgmt}"},
                      timeout=30)
        assert r.status_code == 200
    finally:
        s.stop()


def test_a_store_failure_behind_the_host_check_is_a_503(tmp_path):
    """The Host check asks the store whether any key exists; when the store cannot say, the answer is auth's
    503 + Retry-After (as for a loopback Host), not a 500."""
    s = ServerProcess(env=gateway_env(tmp_path, AUDIOROUTER_KEY_CACHE_TTL_S="0"), tmp=tmp_path).start()
    try:
        with sqlite3.connect(tmp_path / "data" / "audiorouter.db") as db:
            db.execute("DROP TABLE ar_meta")  # what "is auth on?" reads first
        for host in ("localhost", "evil.example"):
            r = httpx.get(s.url + "/api/v1/key", headers={"Host": host}, timeout=30)
            assert r.status_code == 503 and r.headers["retry-after"] == "2", (host, r.text)
            assert r.json()["error"]["metadata"]["type"] == "store_unavailable"
    finally:
        s.stop()


# ---- 4. slow clients and connection caps --------------------------------------------------------------------
def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_answer(sock: socket.socket, deadline: float, dribble: bytes = b"") -> bytes:
    """What the server sends until it closes (or `deadline`), sending `dribble` a byte every 0.2 s meanwhile."""
    got = b""
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        if dribble:
            try:
                sock.sendall(dribble[:1])
                dribble = dribble[1:]
            except OSError:
                dribble = b""
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


@pytest.fixture(scope="module")
def tight_gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tight")
    s = ServerProcess(env=gateway_env(tmp, AUDIOROUTER_HEADER_TIMEOUT_S="1", AUDIOROUTER_BODY_TIMEOUT_S="1",
                                      AUDIOROUTER_BODY_MIN_RATE="256", AUDIOROUTER_MAX_CONNECTIONS_PER_CLIENT="5"),
                      tmp=tmp).start()
    yield s
    s.stop()


def connect(gw) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def test_headers_sent_a_byte_at_a_time_get_408(tight_gw):
    with connect(tight_gw) as s:
        s.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        answer = read_answer(s, t0 + 15, dribble=b"X-Slow: " + b"a" * 200)
    assert status_of(answer) == 408
    body = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout" and "headers" in body["error"]["message"]  # OpenAI's, /v1/


def test_a_stalled_or_dribbled_body_gets_408(tight_gw):
    head = (b"POST /api/v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n")
    for dribble in (b"", b'{"model": "test/priced-tts", "input": "' + b"a" * 100):
        with connect(tight_gw) as s:
            s.sendall(head + b'{"mo')
            answer = read_answer(s, time.monotonic() + 15, dribble=dribble)
        assert status_of(answer) == 408, answer
        assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 408  # OpenRouter's, /api/v1/
    assert httpx.get(tight_gw.url + "/health", timeout=10).status_code == 200  # and the server is fine


def test_a_normal_keep_alive_connection_is_not_cut(tight_gw):
    """Requests on one connection spread over more than the header timeout: each head is on time."""
    with httpx.Client(base_url=tight_gw.url, timeout=10) as c:
        for _ in range(3):
            assert c.get("/health").status_code == 200
            time.sleep(0.6)


def test_websocket_upgrades_do_not_lock_an_address_out(tight_gw):
    """An upgrade handed the connection to uvicorn's WebSocket protocol, and its per-client count was never given
    back: 5 upgrade attempts (the cap here) and every later connection from the address got 429, for good.
    There is no WebSocket route: the Upgrade header is ignored and the request served as plain HTTP."""
    upgrade = (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    for _ in range(8):
        with connect(tight_gw) as s:
            s.sendall(upgrade)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            assert status_of(head) in (200, 403), head  # 403: the old WebSocket refusal
    deadline = time.monotonic() + 10
    while (status := httpx.get(tight_gw.url + "/health", timeout=10).status_code) != 200 \
            and time.monotonic() < deadline:
        time.sleep(0.2)  # (closes still being noticed)
    assert status == 200


def refusals(socks: list[socket.socket], status: int) -> int:
    """How many of `socks` were answered `status` (with Retry-After, in the OpenRouter envelope) and closed;
    the others must have got nothing (accepted, then closed silently at the header timeout)."""
    n = 0
    for s in socks:
        answer = read_answer(s, time.monotonic() + 10)
        if answer:
            assert status_of(answer) == status, answer
            head, body = answer.split(b"\r\n\r\n", 1)
            assert b"retry-after: 1" in head.lower()
            err = orjson.loads(body)["error"]
            assert err["code"] == status and err["metadata"]["type"] == "too_many_connections"
            n += 1
    return n


def wait_fds(pid: int, limit: int) -> int:
    deadline = time.monotonic() + 10
    while fd_count(pid) > limit and time.monotonic() < deadline:
        time.sleep(0.2)
    return fd_count(pid)


def test_connections_per_client_are_capped_and_idle_ones_closed(tight_gw):
    """1000 silent connections were all held (47 -> 1047 descriptors). Here: 40 from one address, cap 5."""
    time.sleep(1.0)  # the earlier tests' connections are gone
    pid = tight_gw.proc.pid
    before = fd_count(pid)
    socks = [connect(tight_gw) for _ in range(40)]
    try:
        assert refusals(socks, 429) == 35
        assert wait_fds(pid, before) <= before  # the 5 accepted ones sent nothing: closed at the header timeout
    finally:
        for s in socks:
            s.close()
    assert httpx.get(tight_gw.url + "/health", timeout=10).status_code == 200


def test_open_connections_are_capped(tmp_path):
    s = ServerProcess(env=gateway_env(tmp_path, AUDIOROUTER_HEADER_TIMEOUT_S="1", AUDIOROUTER_MAX_CONNECTIONS="3",
                                      AUDIOROUTER_MAX_CONNECTIONS_PER_CLIENT="0"), tmp=tmp_path).start()
    try:
        time.sleep(1.0)
        before = fd_count(s.proc.pid)
        socks = [connect(s) for _ in range(12)]
        try:
            assert refusals(socks, 503) == 9
            assert wait_fds(s.proc.pid, before) <= before
        finally:
            for sock in socks:
                sock.close()
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200
    finally:
        s.stop()
