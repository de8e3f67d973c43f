"""input_audio.url: the gateway fetches the audio itself, safely. Refused: non-http(s) schemes, loopback and
other non-public targets (unless the operator allows them), redirects to such targets, bodies over the size
cap, fetches past the timeout. Allowed and working: a file served on 127.0.0.1 when the operator says so
(AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE or AUDIOROUTER_URL_FETCH_ALLOW_HOSTS), through redirects too."""
from __future__ import annotations

import ipaddress
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import DEV_AUDIO, ServerProcess

JFK = (DEV_AUDIO / "jfk_inaugural_excerpt.flac").read_bytes()        # 1.15 MB
SMALL = (DEV_AUDIO / "librispeech_test-other_1688-142285-0000.flac").read_bytes()  # 246 kB
CAP = 600_000


class Files(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        Files.hits.append(self.path)
        p = self.path
        if p == "/small.flac":
            return self._send(200, SMALL, "audio/flac")
        if p == "/noext":
            return self._send(200, SMALL, "audio/flac")
        if p == "/jfk.flac":
            return self._send(200, JFK, "audio/flac")
        if p == "/big-chunked":  # no Content-Length: the cap must hold while reading
            self.send_response(200)
            self.send_header("Content-Type", "audio/flac")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for i in range(0, len(JFK), 65536):
                    part = JFK[i:i + 65536]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            return
        if p == "/redirect":
            return self._redirect("/small.flac")
        if p.startswith("/loop"):
            return self._redirect("/loop")
        if p == "/to-other-loopback":
            return self._redirect(f"http://127.0.0.2:{self.server.server_address[1]}/small.flac")
        if p == "/slow":
            time.sleep(4)
            return self._send(200, SMALL, "audio/flac")
        if p == "/text":
            return self._send(200, b"hello, not audio", "text/plain")
        return self._send(404, b"not found", "text/plain")

    def _send(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def files():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def gateway(tmp_path_factory, name, **env):
    tmp = tmp_path_factory.mktemp(name)
    return ServerProcess(env={"AUDIOROUTER_CACHE_TTL_S": "0", "AUDIOROUTER_DATA_DIR": str(tmp / "data"), **env},
                         tmp=tmp).start()


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    s = gateway(tmp_path_factory, "url-strict", AUDIOROUTER_PRELOAD="false")  # it never transcribes
    yield s
    s.stop()


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    s = gateway(tmp_path_factory, "url-allowed", AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE="true",
                AUDIOROUTER_URL_FETCH_MAX_BYTES=str(CAP), AUDIOROUTER_URL_FETCH_TIMEOUT_S="1.5")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def one_host(tmp_path_factory):
    s = gateway(tmp_path_factory, "url-one-host", AUDIOROUTER_URL_FETCH_ALLOW_HOSTS="127.0.0.1/32")
    yield s
    s.stop()


def stt(server, url, dialect="openrouter", **extra):
    path = "/api/v1/audio/transcriptions" if dialect == "openrouter" else "/v1/audio/transcriptions"
    ia = {"url": url, **extra.pop("input_audio", {})}
    with httpx.Client(base_url=server.url, timeout=120) as c:
        return c.post(path, json={"model": "local/whisper-base", "input_audio": ia, **extra})


def error_of(r, dialect="openrouter") -> tuple[str, str]:
    e = r.json()["error"]
    if dialect == "openai":
        return e["param"], e["message"]
    return e["metadata"]["param"], e["message"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2", "[::1]", "0.0.0.0"])
def test_loopback_refused_by_default(strict, files, host):
    port = files.rsplit(":", 1)[1]
    before = len(Files.hits)
    r = stt(strict, f"http://{host}:{port}/small.flac")
    assert r.status_code == 403, r.text
    param, msg = error_of(r)
    assert param == "input_audio.url" and "AUDIOROUTER_URL_FETCH_ALLOW_PRIVATE" in msg
    assert len(Files.hits) == before  # refused before connecting


@pytest.mark.parametrize("url, code", [
    ("ftp://127.0.0.1/x.wav", "unsupported_url_scheme"),
    ("file:///etc/passwd", "unsupported_url_scheme"),
    ("gopher://example.com/", "unsupported_url_scheme"),
    ("no scheme at all", "unsupported_url_scheme"),
    ("http://user:pw@127.0.0.1/x.wav", "invalid_url"),
    ("http:///nohost", "invalid_url"),
])
def test_bad_urls_are_400(strict, url, code):
    r = stt(strict, url, dialect="openai")
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["param"] == "input_audio.url" and e["code"] == code


def test_url_and_data_together_or_bad_types(strict):
    with httpx.Client(base_url=strict.url, timeout=30) as c:
        r = c.post("/api/v1/audio/transcriptions", json={"model": "local/whisper-base",
                                                         "input_audio": {"url": "https://example.com/a.wav", "data": "AAAA"}})
        assert r.status_code == 400 and "either data or url" in r.json()["error"]["message"]
        r = c.post("/api/v1/audio/transcriptions", json={"model": "local/whisper-base", "input_audio": {"url": 5}})
        assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "input_audio.url"
        r = c.post("/api/v1/audio/transcriptions", json={"model": "local/whisper-base",
                                                         "input_audio": {"url": "https://example.com/a", "format": "doc"}})
        assert r.status_code == 400 and r.json()["error"]["metadata"]["param"] == "input_audio.format"


def test_fetch_from_loopback_when_allowed(allowed, files):
    r = stt(allowed, files + "/small.flac", response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert "iron" in body["text"].lower() and abs(body["duration"] - 15.0) < 0.1
    assert r.headers["x-audio-format-detected"] == "flac"
    # no extension: the Content-Type / the bytes tell the format
    r = stt(allowed, files + "/noext", dialect="openai")
    assert r.status_code == 200 and "iron" in r.json()["text"].lower()


def test_redirects_followed_and_bounded(allowed, files):
    r = stt(allowed, files + "/redirect")
    assert r.status_code == 200 and "iron" in r.json()["text"].lower()
    r = stt(allowed, files + "/loop")
    assert r.status_code == 400 and "redirects" in r.json()["error"]["message"]


def test_size_cap(allowed, files):
    for path in ("/jfk.flac", "/big-chunked"):
        r = stt(allowed, files + path)
        assert r.status_code == 413, r.text
        param, msg = error_of(r)
        assert param == "input_audio.url" and str(CAP) in msg


def test_timeout_and_upstream_errors(allowed, files):
    r = stt(allowed, files + "/slow")
    assert r.status_code == 408, r.text
    assert error_of(r)[0] == "input_audio.url"
    r = stt(allowed, files + "/missing.wav")
    assert r.status_code == 400 and "404" in r.json()["error"]["message"]
    r = stt(allowed, files + "/text")
    assert r.status_code == 400  # fetched, but not audio: a 400, never a 500


def test_allow_hosts_and_redirect_recheck(one_host, files):
    r = stt(one_host, files + "/small.flac")
    assert r.status_code == 200, r.text
    before = len(Files.hits)
    r = stt(one_host, files + "/to-other-loopback")  # 127.0.0.1 is allowed, its redirect to 127.0.0.2 is not
    assert r.status_code == 403, r.text
    assert "127.0.0.2" in r.json()["error"]["message"]
    assert Files.hits[before:] == ["/to-other-loopback"]


def test_address_classes():
    from audiorouter.api.url_input import blocked_reason
    cases = {"10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private", "127.0.0.1": "loopback",
             "169.254.169.254": "link-local", "::1": "loopback", "fe80::1": "link-local", "fc00::1": "private",
             "::ffff:127.0.0.1": "loopback", "2002:7f00:1::": "loopback", "100.64.0.1": "reserved",
             "0.0.0.0": "unspecified", "224.0.0.1": "multicast", "8.8.8.8": None, "2606:4700::1111": None}
    for ip, why in cases.items():
        assert blocked_reason(ipaddress.ip_address(ip)) == why, ip


def test_special_purpose_and_embedded_ipv4_addresses_follow_iana():
    """IANA's special-purpose registries (IPv4 and IPv6): what is not globally reachable is refused, also when
    an IPv6 address only carries it (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo). The same on every
    Python (their is_global lists differ between 3.11 releases)."""
    from audiorouter.api.url_input import blocked_reason
    cases = {
        "fec0::1": "site-local", "feff:ffff::1": "site-local",  # deprecated site-local fec0::/10
        "3fff::1": "documentation", "2001:db8::1": "private", "5f00::1": "SRv6 SID", "100::1": "private",
        "64:ff9b:1::a00:1": "local NAT64", "192.88.99.1": "6to4 relay",
        "192.0.2.1": "private", "198.51.100.7": "private", "203.0.113.9": "private", "198.18.0.1": "private",
        "240.0.0.1": "private", "255.255.255.255": "private", "0.1.2.3": "private", "192.0.0.8": "IETF protocol",
        "192.0.0.100": "IETF protocol", "192.0.0.9": None,
        "::ffff:10.0.0.1": "private", "::ffff:169.254.169.254": "link-local", "::ffff:127.0.0.1": "loopback",
        "64:ff9b::10.0.0.1": "private", "64:ff9b::7f00:1": "loopback", "64:ff9b::169.254.169.254": "link-local",
        "64:ff9b::100.64.0.1": "reserved",
        "2002:a00:1::1": "private", "2002:a9fe:a9fe::": "link-local", "2002:c0a8:101::1": "private",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe": "private",  # Teredo (2001::/32)
        "::ffff:8.8.8.8": None, "64:ff9b::8.8.8.8": None, "2002:808:808::1": None,  # reach a public IPv4
        "8.8.8.8": None, "2606:4700::1111": None,
    }
    got = {ip: blocked_reason(ipaddress.ip_address(ip)) for ip in cases}
    assert got == cases
