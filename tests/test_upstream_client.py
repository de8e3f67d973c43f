"""providers/upstream_client.py (the one upstream client, pyreqwest) through HTTPProvider.send, against a raw
TCP server on 127.0.0.1 that we script byte by byte: what goes on the wire, keep-alive reuse, chunked and
gzip answers, a kept-alive socket closed by the server, the failure modes (read timeout, a body cut short, a
malformed answer) as httpx's error classes, the multipart encoder, and https with verification on (a CA
trusted through SSL_CERT_FILE; an untrusted certificate refused)."""
from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import ssl

import httpx
import orjson
import pytest
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser

from audiorouter.core.endpoint import Provider
from audiorouter.providers.http import HTTPProvider
from audiorouter.providers.upstream_client import encode_body, multipart_body


def provider(base_url: str = "http://127.0.0.1:9", timeout_s: float = 5.0) -> HTTPProvider:
    return HTTPProvider("up", Provider(name="up", adapter="openai_compatible", base_url=base_url,
                                       timeout_s=timeout_s), None)


class Upstream:
    """Accepts connections; for each request head+body calls `answer(head, body, n)` -> bytes to write, None
    to close the connection, or (bytes, "close") to write then close. Records every request."""

    def __init__(self, answer, ssl_context: ssl.SSLContext | None = None):
        self.answer = answer
        self.ssl = ssl_context
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    def url(self, path: str = "/v1/x") -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                out = self.answer(head, body, len(self.requests))
                if asyncio.iscoroutine(out):
                    out = await out
                if out is None:
                    writer.close()
                    return
                close = isinstance(out, tuple)
                writer.write(out[0] if close else out)
                await writer.drain()
                if close:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


def ok_json(obj) -> bytes:
    body = orjson.dumps(obj)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_request_sends_head_and_body_as_given_and_reads_json():
    async with Upstream(lambda head, body, n: ok_json({"n": n, "len": len(body)})) as up:
        p = provider()
        try:
            r = await p.send("POST", up.url("/v1/audio/transcriptions?x=1"), content=b"abcdefgh",
                             headers={"Authorization": "Bearer k", "Content-Type": "text/plain"})
            assert r.status_code == 200 and r.is_success and r.reason_phrase == "OK"
            assert r.json() == {"n": 1, "len": 8}
            assert r.headers["content-type"] == "application/json"
            head, body = up.requests[0]
            low = head.lower()
            assert head.startswith(b"POST /v1/audio/transcriptions?x=1 HTTP/1.1\r\n")
            assert b"\r\nhost: 127.0.0.1:%d\r\n" % up.port in low
            assert b"\r\ncontent-length: 8\r\n" in low and b"\r\nauthorization: bearer k\r\n" in low
            assert b"accept-encoding" not in low
            assert body == b"abcdefgh"
            # the connection is kept alive and reused; query parameters are appended
            r2 = await p.send("POST", up.url(), content=b"z", params={"a": "1 2"})
            assert r2.json()["n"] == 2 and up.connections == 1
            assert up.requests[1][0].startswith(b"POST /v1/x?a=1+2 HTTP/1.1")
        finally:
            await p.aclose()


async def test_big_bodies_go_part_by_part_with_their_length():
    audio = bytes(range(256)) * 8192  # 2 MiB: above JOIN_LIMIT
    async with Upstream(lambda head, body, n: ok_json({"len": len(body)})) as up:
        p = provider()
        try:
            r = await p.send("POST", up.url(), data={"model": "m"}, files={"file": ("a.wav", memoryview(audio), "audio/wav")})
            head, body = up.requests[0]
            assert b"content-length: %d" % len(body) in head.lower() and b"chunked" not in head.lower()
            assert r.json()["len"] == len(body) and audio in body
        finally:
            await p.aclose()


async def test_chunked_streamed_answer_and_gzip_are_decoded():
    chunks = [b"a" * 1000, b"b" * 70000, b"c"]

    def answer(head, body, n):
        if n == 1:
            out = b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
            for c in chunks:
                out += b"%x\r\n%s\r\n" % (len(c), c)
            return out + b"0\r\n\r\n"
        z = gzip.compress(b"hello " * 1000)
        return b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(z), z)

    async with Upstream(answer) as up:
        p = provider()
        try:
            r = await p.send("POST", up.url(), json={}, stream=True)
            got = b"".join([c async for c in r.aiter_bytes()])
            assert got == b"".join(chunks)
            r = await p.send("GET", up.url())
            assert r.content == b"hello " * 1000
            r = await p.send("GET", up.url(), stream=True)
            assert await r.aread() == b"hello " * 1000
        finally:
            await p.aclose()


async def test_a_stream_is_handed_over_chunk_by_chunk_as_it_arrives():
    """The first chunk reaches the reader while the upstream still works on the rest (TTS, SSE), and a stream
    cut short fails at the point it was cut, after the chunks that did arrive."""
    release = asyncio.Event()

    async def serve(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n9\r\ncut")  # then closed without the end of the stream
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = provider()
    try:
        r = await asyncio.wait_for(p.send("POST", f"http://127.0.0.1:{port}/v1/x", json={}, stream=True), 5)
        it = r.aiter_bytes()
        assert await asyncio.wait_for(it.__anext__(), 5) == b"first"  # while the upstream holds the rest back
        release.set()
        got = []
        with pytest.raises(httpx.HTTPError):
            async for chunk in it:
                got.append(chunk)
        assert b"".join(got).startswith(b"second")
    finally:
        release.set()
        await p.aclose()
        server.close()


async def test_a_kept_alive_socket_closed_by_the_server_is_not_reused():
    def answer(head, body, n):
        return (ok_json({"n": n}), "close") if n == 1 else ok_json({"n": n})

    async with Upstream(answer) as up:
        p = provider()
        try:
            assert (await p.send("POST", up.url(), content=b"one")).json() == {"n": 1}
            await asyncio.sleep(0.05)
            assert (await p.send("POST", up.url(), content=b"two")).json() == {"n": 2}
            assert [b for _, b in up.requests] == [b"one", b"two"] and up.connections == 2
        finally:
            await p.aclose()


async def test_read_timeout_cut_body_and_malformed_answers_raise_httpx_errors():
    async def slow(head, body, n):
        await asyncio.sleep(2)
        return ok_json({})

    async with Upstream(slow) as up:
        p = provider(timeout_s=0.2)
        try:
            # (pyreqwest reports a wait for the answer's head as a connect timeout: a timeout either way)
            with pytest.raises(httpx.TimeoutException):
                await p.send("POST", up.url(), content=b"x")
        finally:
            await p.aclose()

    def cut(head, body, n):
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, "close"

    async with Upstream(cut) as up:
        p = provider()
        try:
            with pytest.raises(httpx.ReadError):  # (when the open itself read the short body: there)
                r = await p.send("POST", up.url(), content=b"x", stream=True)
                await r.aread()
            with pytest.raises(httpx.ReadError):
                await p.send("POST", up.url(), content=b"x")
        finally:
            await p.aclose()

    async with Upstream(lambda head, body, n: b"NOT HTTP AT ALL\r\n\r\n") as up:
        p = provider()
        try:
            with pytest.raises(httpx.HTTPError):
                await p.send("POST", up.url(), content=b"x")
        finally:
            await p.aclose()

    p = provider()
    try:
        with pytest.raises(httpx.ConnectError):
            await p.send("POST", "http://127.0.0.1:9/v1", content=b"x")  # nothing listens on the discard port
    finally:
        await p.aclose()


async def test_provider_errors_map_from_the_client_errors():
    """post_checked: a transport failure is the adapter's neutral UpstreamError, a 5xx its retryable error."""
    from audiorouter.core.errors import UpstreamError, UpstreamTimeout

    async def slow(head, body, n):
        await asyncio.sleep(2)
        return ok_json({})

    async with Upstream(slow) as up:
        p = provider(timeout_s=0.2)
        try:
            with pytest.raises(UpstreamTimeout):
                await p.post_checked(up.url(), content=b"x")
        finally:
            await p.aclose()
    body = b'{"error": {"message": "busy"}}'
    async with Upstream(lambda h, b, n: b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body)) as up:
        p = provider()
        try:
            with pytest.raises(UpstreamError) as e:
                await p.post_checked(up.url(), content=b"x")
            assert e.value.retryable and e.value.upstream_status == 503 and "busy" in e.value.message
        finally:
            await p.aclose()


async def test_multipart_body_parses_back_with_a_real_form_parser():
    audio = bytes(range(256)) * 100
    ctype, parts = multipart_body(
        {"model": "whisper-1", "timestamp_granularities[]": ["word", "segment"], "stream": False,
         'we"ird\nname': "välue"},
        {"file": ('sp"eech.wav', memoryview(audio), "audio/wav")})
    assert any(isinstance(p, memoryview) for p in parts)  # the audio is referenced, not copied
    body = b"".join(bytes(p) for p in parts)
    _, params = parse_options_header(ctype)
    assert params[b"boundary"]

    async def stream():
        yield body

    form = await MultiPartParser(Headers({"content-type": ctype}), stream()).parse()
    assert form["model"] == "whisper-1" and form.getlist("timestamp_granularities[]") == ["word", "segment"]
    assert form["stream"] == "false" and form['we%22ird%0Aname'] == "välue"
    up = form["file"]
    assert up.filename == "sp%22eech.wav" and up.content_type == "audio/wav"
    assert await up.read() == audio


async def test_lines_split_across_chunks_with_every_line_end():
    pieces = [b"data: a\r", b"\ndata: b\n\nda", b"ta: \xc3", b"\xa9\rlast"]

    async def answer(head, body, n):
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

    async with Upstream(None) as up:
        async def chunked(head, body, n):  # each piece its own write, so the reader sees them apart
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + \
                b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in pieces) + b"0\r\n\r\n"
        up.answer = chunked
        p = provider()
        try:
            r = await p.send("POST", up.url(), json={}, stream=True)
            lines = [ln async for ln in r.aiter_lines()]
        finally:
            await p.aclose()
    assert lines == ["data: a", "data: b", "", "data: é", "last"]
    # the same bytes through httpx's own line splitter agree
    expected = list(httpx.Response(200, content=b"".join(pieces)).iter_lines())
    assert lines == expected


async def test_a_line_or_event_that_never_ends_is_not_buffered_without_bound():
    """An answer whose line (or server-sent event) goes on past the limit stops with LineTooLong, an
    httpx.DecodingError, which the adapters map to a retryable malformed-reply error (a 502), not to memory
    growing with whatever the upstream sends."""
    from audiorouter.core.errors import UpstreamError
    from audiorouter.providers.http import map_transport_error
    from audiorouter.providers.openai_compatible import iter_sse_data
    from audiorouter.providers.upstream_client import LineTooLong

    endless = b"x" * 5000
    many = b"data: abc\n" * 2000  # one event of many data lines, each short
    for payload, reader in ((endless, lambda r: r.aiter_lines(max_line=4096)),
                            (many, lambda r: iter_sse_data(r.aiter_lines(), max_event=4096))):
        async def chunked(head, body, n, payload=payload):
            return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + \
                b"".join(b"%x\r\n%s\r\n" % (1000, payload[i:i + 1000]) for i in range(0, len(payload), 1000)) + \
                b"0\r\n\r\n"
        async with Upstream(chunked) as up:
            p = provider()
            try:
                r = await p.send("POST", up.url(), json={}, stream=True)
                with pytest.raises(LineTooLong) as e:
                    async for _ in reader(r):
                        pass
            finally:
                await p.aclose()
        mapped = map_transport_error("up", e.value)
        assert isinstance(mapped, UpstreamError) and mapped.retryable and "malformed upstream reply" in mapped.message
        assert mapped.status == 502
    # under the limit, the same lines are read whole
    async with Upstream(lambda h, b, n: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(many), many)) as up:
        p = provider()
        try:
            r = await p.send("POST", up.url(), json={}, stream=True)
            events = [d async for d in iter_sse_data(r.aiter_lines())]
        finally:
            await p.aclose()
    assert events == ["\n".join(["abc"] * 2000)]


def test_encode_body_encodes_like_httpx_or_refuses():
    ctype, parts = encode_body({"a": [1, "é"]}, None, None, None)
    assert ctype == "application/json" and orjson.loads(b"".join(parts)) == {"a": [1, "é"]}
    ctype, parts = encode_body(None, None, {"x": "1 2", "y": ["a", "b"]}, None)
    req = httpx.Request("POST", "http://h/", data={"x": "1 2", "y": ["a", "b"]})
    assert b"".join(parts) == req.read() and ctype == req.headers["content-type"]
    assert encode_body(None, b"raw", None, None) == (None, [b"raw"])
    with pytest.raises(TypeError):
        encode_body(None, None, None, {"file": ("a.wav", open(__file__, "rb"), "audio/wav")})


# ---- https: verification on, the CA trusted through SSL_CERT_FILE ------------------------------------
def _certs(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "key.pem")
    return tmp_path / "ca.pem", ctx


async def test_https_with_a_trusted_ca_and_an_untrusted_one_refused(tmp_path, monkeypatch):
    ca, ctx = _certs(tmp_path)
    async with Upstream(lambda head, body, n: ok_json({"n": n}), ssl_context=ctx) as up:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        p = provider()
        try:
            assert (await p.send("POST", up.url(), content=b"x")).json() == {"n": 1}
            assert (await p.send("POST", up.url(), content=b"y")).json() == {"n": 2}
            assert up.connections == 1  # the TLS connection is kept alive and reused
        finally:
            await p.aclose()
        other = tmp_path / "other"
        other.mkdir()
        other_ca, _ = _certs(other)
        monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))  # a CA that did not sign the server's certificate
        p = provider()
        try:
            with pytest.raises(httpx.ConnectError):
                await p.send("POST", up.url(), content=b"x")
        finally:
            await p.aclose()
