"""providers/fasthttp.py against a raw TCP server on 127.0.0.1 that we script byte by byte: the direct
request API (FastTransport.request / FastResponse), the multipart encoder, and the failure modes (read
timeout, a kept-alive socket closed by the server, a body cut short, a malformed answer, gzip)."""
from __future__ import annotations

import asyncio
import gzip

import httpx
import orjson
import pytest
from python_multipart.multipart import parse_options_header
from starlette.formparsers import MultiPartParser
from starlette.datastructures import Headers

from audiorouter.providers.fasthttp import FastTransport, multipart_body

TIMEOUT = {"connect": 5.0, "read": 5.0, "write": 5.0}


class Upstream:
    """Accepts connections; for each request head+body calls `answer(head, body, n)` -> bytes to write, None
    to close the connection, or (bytes, "close") to write then close. Records every request."""

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    def url(self, path: str = "/v1/x") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

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
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def ok_json(obj) -> bytes:
    body = orjson.dumps(obj)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_request_sends_head_and_body_as_given_and_reads_json():
    async with Upstream(lambda head, body, n: ok_json({"n": n, "len": len(body)})) as up:
        t = FastTransport()
        try:
            payload = [b"abc", memoryview(b"defgh")]
            r = await t.request("POST", up.url("/v1/audio/transcriptions?x=1"),
                                [(b"authorization", b"Bearer k"), (b"content-type", b"text/plain")], payload, TIMEOUT)
            await r.aread()
            assert r.status_code == 200 and r.is_success and r.reason_phrase == "OK"
            assert r.json() == {"n": 1, "len": 8}
            assert r.headers["content-type"] == "application/json"
            head, body = up.requests[0]
            assert head.startswith(b"POST /v1/audio/transcriptions?x=1 HTTP/1.1\r\n")
            assert b"\r\nhost: 127.0.0.1:%d\r\n" % up.port in head
            assert b"\r\ncontent-length: 8\r\n" in head and b"\r\nauthorization: Bearer k\r\n" in head
            assert body == b"abcdefgh"
            # the connection is kept alive and reused
            r2 = await t.request("POST", up.url(), [], [b"z"], TIMEOUT)
            assert (await r2.aread()) and r2.json()["n"] == 2 and up.connections == 1
        finally:
            await t.aclose()


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
        t = FastTransport()
        try:
            r = await t.request("POST", up.url(), [], [b"{}"], TIMEOUT)
            got = b"".join([c async for c in r.aiter_bytes()])
            assert got == b"".join(chunks)
            r = await t.request("GET", up.url(), [], [], TIMEOUT)
            assert await r.aread() == b"hello " * 1000
        finally:
            await t.aclose()


async def test_a_kept_alive_socket_closed_by_the_server_is_retried_once_on_a_fresh_one():
    def answer(head, body, n):
        return ok_json({"n": n}) if n != 2 else None  # the 2nd request finds its socket closed

    async with Upstream(answer) as up:
        t = FastTransport()
        try:
            r = await t.request("POST", up.url(), [], [b"one"], TIMEOUT)
            assert (await r.aread()) and r.json() == {"n": 1}
            r = await t.request("POST", up.url(), [], [b"two"], TIMEOUT)
            assert (await r.aread()) and r.json() == {"n": 3}
            assert [b for _, b in up.requests] == [b"one", b"two", b"two"] and up.connections == 2
        finally:
            await t.aclose()


async def test_read_timeout_cut_body_and_malformed_answers_raise_httpx_errors():
    async def slow(head, body, n):
        await asyncio.sleep(2)
        return ok_json({})

    async with Upstream(slow) as up:
        t = FastTransport()
        try:
            with pytest.raises(httpx.ReadTimeout):
                await t.request("POST", up.url(), [], [b"x"], {**TIMEOUT, "read": 0.2})
        finally:
            await t.aclose()

    def cut(head, body, n):
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, "close"

    async with Upstream(cut) as up:
        t = FastTransport()
        try:
            r = await t.request("POST", up.url(), [], [b"x"], TIMEOUT)
            with pytest.raises(httpx.ReadError):
                await r.aread()
        finally:
            await t.aclose()

    async with Upstream(lambda head, body, n: b"NOT HTTP AT ALL\r\n\r\n") as up:
        t = FastTransport()
        try:
            with pytest.raises(httpx.RemoteProtocolError):
                await t.request("POST", up.url(), [], [b"x"], TIMEOUT)
        finally:
            await t.aclose()


async def test_multipart_body_parses_back_with_a_real_form_parser():
    audio = bytes(range(256)) * 100
    ctype, parts = multipart_body(
        {"model": "whisper-1", "timestamp_granularities[]": ["word", "segment"], "stream": False,
         'we"ird\nname': "välue"},
        {"file": ('sp"eech.wav', memoryview(audio), "audio/wav")})
    assert any(p is not None and isinstance(p, memoryview) for p in parts)  # the audio is referenced, not copied
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

    def answer(head, body, n):
        out = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        for c in pieces:
            out += b"%x\r\n%s\r\n" % (len(c), c)
        return out + b"0\r\n\r\n"

    async with Upstream(answer) as up:
        t = FastTransport()
        try:
            r = await t.request("POST", up.url(), [], [b"{}"], TIMEOUT)
            lines = [ln async for ln in r.aiter_lines()]
        finally:
            await t.aclose()
    assert lines == ["data: a", "data: b", "", "data: é", "last"]
    # the same bytes through httpx's own line splitter agree
    expected = [ln for ln in httpx.Response(200, content=b"".join(pieces)).iter_lines()]
    assert lines == expected


def test_fast_body_encodes_like_httpx_or_declines():
    from audiorouter.providers.fasthttp import fast_body

    hdrs, parts = fast_body({"a": [1, "é"]}, None, None, None)
    assert hdrs == [(b"content-type", b"application/json")] and orjson.loads(b"".join(parts)) == {"a": [1, "é"]}
    hdrs, parts = fast_body(None, None, {"x": "1 2", "y": ["a", "b"]}, None)
    req = httpx.Request("POST", "http://h/", data={"x": "1 2", "y": ["a", "b"]})
    assert b"".join(parts) == req.read() and hdrs[0][1].decode() == req.headers["content-type"]
    assert fast_body(None, b"raw", None, None) == ([], [b"raw"])
    assert fast_body(None, None, None, {"file": ("a.wav", open(__file__, "rb"), "audio/wav")}) is None
