"""A lean HTTP/1.1 transport for httpx, used for plain-http upstreams (self-hosted servers, sidecars, another
audiorouter): an asyncio Protocol per connection, httptools (already a uvicorn dependency) to parse the
answer, a keep-alive pool per host. Adapters keep using the httpx client API; only the wire layer under it
changes. Compared with httpx's default stack (httpcore + h11 + anyio streams), a relayed request costs a
fraction of the CPU: the body goes to the socket with one `transport.write` per chunk, and response bytes
are parsed in C.

https:// URLs (the public providers) go to httpx's own transport: TLS, proxies and HTTP/2 stay as they are.
Set AUDIOROUTER_FAST_HTTP=0 to use httpx's transport for everything."""
from __future__ import annotations

import asyncio
import codecs
import functools
import itertools
import os
import re
import secrets
import time
import weakref
import zlib
from collections import deque
from http import HTTPStatus
from typing import Any, AsyncIterator
from urllib.parse import urlencode

import httptools
import httpx
import orjson

IDLE_EXPIRY_S = 4.0      # below the usual 5 s keep-alive of servers (uvicorn, node): never reuse a dying socket
MAX_IDLE_PER_HOST = 64
QUEUE_HIGH = 32          # body chunks buffered before reading from the socket pauses
BYTES = (bytes, bytearray, memoryview)
# multipart boundaries: 96 random bits per process plus a counter (no urandom call per request)
_BOUNDARY_PREFIX = "ar" + secrets.token_hex(12)
_boundary_serial = itertools.count()
_EOL = re.compile("\r\n|\r|\n")
USER_AGENT = b"audiorouter"


def enabled() -> bool:
    return os.environ.get("AUDIOROUTER_FAST_HTTP", "1").lower() not in ("0", "false", "no", "off")


def _expire(fut: asyncio.Future, exc_type: type[BaseException], message: str) -> None:
    if not fut.done():
        fut.set_exception(exc_type(message))


async def _wait(fut: asyncio.Future, timeout: float | None, exc_type: type[BaseException], message: str) -> None:
    """Await `fut`, failing it with exc_type(message) after `timeout` s: one timer handle (wait_for + shield
    cost a task or two per call, on every body chunk), and no exception object unless it fires."""
    if not timeout:
        await fut
        return
    handle = asyncio.get_running_loop().call_later(timeout, _expire, fut, exc_type, message)
    try:
        await fut
    finally:
        handle.cancel()


class _Conn(asyncio.Protocol):
    """One upstream connection. The answer's body chunks go to a deque; a reader waits on one future."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._reset()
        self._write_paused = False
        self._drain: asyncio.Future | None = None

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.started: asyncio.Future | None = None
        self.chunks: deque[bytes] = deque()
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.active = False
        self.done = False
        self.keep_alive = True
        self.got_bytes = False
        self._reading_paused = False

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reset()
        self.loop = loop
        self.started = loop.create_future()
        self.active = True

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail_body(self, err: BaseException) -> None:
        self.error = err
        self._wake()

    # ---- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.started is not None and not self.started.done():
            self.started.set_exception(httpx.RemoteProtocolError("the upstream closed the connection before "
                                                                 "answering"))
        elif self.active and not self.done:
            names = {k.lower() for k, _ in self.headers}
            if b"content-length" not in names and b"transfer-encoding" not in names:
                self.done, self.keep_alive = True, False  # a body delimited by the end of the connection
                self._wake()
            else:
                self._fail_body(httpx.ReadError("the upstream closed the connection mid-answer"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(httpx.WriteError("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            err = httpx.RemoteProtocolError(f"malformed HTTP answer from the upstream ({e})")
            if self.started is not None and not self.started.done():
                self.started.set_exception(err)
            elif self.active and not self.done:
                self._fail_body(err)
            self.transport.close()

    # ---- httptools callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if self.started is not None and not self.started.done():
            self.started.set_result(None)

    def on_body(self, body: bytes) -> None:
        if not self.active:
            return
        self.chunks.append(bytes(body))
        self._wake()
        if not self._reading_paused and len(self.chunks) > QUEUE_HIGH:
            self._reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.done = True
        self._wake()

    async def next_chunk(self, timeout: float | None) -> bytes | None:
        """The next body chunk; None at the end of the answer."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                if self._reading_paused and len(self.chunks) <= QUEUE_HIGH // 2:
                    self._reading_paused = False
                    if not self.closed:
                        self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.done:
                return None
            self.waiter = self.loop.create_future()
            await _wait(self.waiter, timeout, httpx.ReadTimeout, "the upstream stopped sending")


class _Body(httpx.AsyncByteStream):
    def __init__(self, pool: "FastTransport", key, conn: _Conn, read_timeout: float | None):
        self.pool, self.key, self.conn, self.read_timeout = pool, key, conn, read_timeout
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        c = self.conn
        try:
            while (chunk := await c.next_chunk(self.read_timeout)) is not None:
                yield chunk
        except BaseException:
            self._discard()
            raise
        self._finished = True
        c.active = False
        if c.keep_alive and not c.closed:
            self.pool._release(self.key, c)
        else:
            self._discard()

    def _discard(self) -> None:
        self.conn.active = False
        if not self.conn.closed and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn.closed = True

    async def aclose(self) -> None:
        if not self._finished:
            self._discard()


class FastResponse:
    """An upstream answer from `FastTransport.request`: the part of httpx.Response's interface adapters use
    (status_code, headers, is_success, aread/content/text/json, aiter_bytes, aclose)."""

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], stream: _Body, url: str):
        self.status_code = status
        self.raw_headers = raw_headers
        self.stream = stream
        self.url = url
        self._headers: httpx.Headers | None = None
        self._content: bytes | None = None

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(self.raw_headers)
        return self._headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def reason_phrase(self) -> str:
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = b"".join([c async for c in self.aiter_bytes()])
        return self._content

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise httpx.ResponseNotRead()
        return self._content

    @property
    def text(self) -> str:
        ctype = self.headers.get("content-type", "")
        charset = ctype.partition("charset=")[2].split(";")[0].strip().strip('"') or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, decoded when the upstream compressed it anyway (we send no Accept-Encoding)."""
        coding = next((v.decode("latin-1").strip().lower() for k, v in self.raw_headers
                       if k.lower() == b"content-encoding"), "identity")
        if coding in ("", "identity"):
            async for chunk in self.stream:
                yield chunk
            return
        if coding not in ("gzip", "deflate"):
            await self.aclose()
            raise httpx.DecodingError(f"the upstream answered with an unsupported content-encoding {coding!r}")
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        try:
            async for chunk in self.stream:
                out = d.decompress(chunk)
                if out:
                    yield out
            tail = d.flush()
        except zlib.error as e:
            raise httpx.DecodingError(f"the upstream's {coding} body is corrupt ({e})") from None
        if tail:
            yield tail

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body as text lines (ended by \\n, \\r\\n or \\r), without their line ends."""
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        buf = ""
        async for chunk in self.aiter_bytes():
            buf += dec.decode(chunk)
            pos = 0
            while (m := _EOL.search(buf, pos)) is not None:
                if m.group() == "\r" and m.end() == len(buf):
                    break  # perhaps the first half of a \r\n split across chunks
                yield buf[pos:m.start()]
                pos = m.end()
            buf = buf[pos:]
        buf += dec.decode(b"", final=True)
        for line in buf.splitlines():
            yield line

    async def aclose(self) -> None:
        await self.stream.aclose()


def multipart_body(data: dict[str, Any], files: dict[str, tuple[str, bytes | memoryview, str]]
                   ) -> tuple[str, list[bytes | memoryview]]:
    """(content type, body parts) of a multipart/form-data body; file contents are referenced, not copied."""
    boundary = f"{_BOUNDARY_PREFIX}{next(_boundary_serial):08x}"
    sep = b"--" + boundary.encode()
    parts: list[bytes | memoryview] = []
    for name, value in data.items():
        for v in (value if isinstance(value, (list, tuple)) else (value,)):  # a list: the field repeated
            text = ("true" if v else "false") if isinstance(v, bool) else "" if v is None else str(v)
            parts.append(b'%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                         % (sep, _quote(name), text.encode()))
    for name, (filename, content, ctype) in files.items():
        parts.append(b'%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: %s\r\n\r\n'
                     % (sep, _quote(name), _quote(filename), ctype.encode()))
        parts.append(content)
        parts.append(b"\r\n")
    parts.append(sep + b"--\r\n")
    return f"multipart/form-data; boundary={boundary}", parts


def fast_body(json: Any, content: Any, data: dict[str, Any] | None, files: dict[str, Any] | None
              ) -> tuple[list[tuple[bytes, bytes]], list[bytes | memoryview]] | None:
    """(headers, body parts) for httpx-style body arguments, or None when one of them is something only httpx
    encodes (a file object, an async stream): the caller then takes the httpx path."""
    if files:
        if not all(isinstance(f, tuple) and len(f) == 3 and isinstance(f[1], BYTES) for f in files.values()):
            return None
        ctype, parts = multipart_body(data or {}, files)
        return [(b"content-type", ctype.encode())], parts
    if data:
        return [(b"content-type", b"application/x-www-form-urlencoded")], [urlencode(data, doseq=True).encode()]
    if json is not None:
        return [(b"content-type", b"application/json")], [orjson.dumps(json)]
    if content is None:
        return [], []
    if isinstance(content, str):
        return [], [content.encode()]
    if isinstance(content, BYTES):
        return [], [content]
    return None


def _quote(value: str) -> bytes:
    """A form-data name or filename: quotes, backslashes and line breaks escaped as browsers do."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A").encode()


def _replayable(stream) -> bool:
    # byte bodies and httpx's multipart encoder can be iterated again; an arbitrary async generator cannot
    return isinstance(stream, httpx.ByteStream) or type(stream).__name__ == "MultipartStream"


class FastTransport(httpx.AsyncBaseTransport):
    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None):
        self.fallback = fallback or httpx.AsyncHTTPTransport()
        self._idle: dict[tuple[str, int], deque[_Conn]] = {}
        self._all: weakref.WeakSet[_Conn] = weakref.WeakSet()

    # ---- pool ---------------------------------------------------------------------------------------
    async def _acquire(self, key: tuple[str, int], connect_timeout: float | None) -> tuple[_Conn, bool]:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            c = idle.pop()
            if not c.closed and now - c.idle_since < IDLE_EXPIRY_S:
                return c, True
            if not c.closed:
                c.transport.close()
        loop = asyncio.get_running_loop()
        try:
            coro = loop.create_connection(_Conn, key[0], key[1])
            _, conn = await (asyncio.wait_for(coro, connect_timeout) if connect_timeout else coro)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as e:
            raise httpx.ConnectError(f"could not connect to {key[0]}:{key[1]} ({e.strerror or e})") from None
        self._all.add(conn)
        return conn, False

    def _release(self, key, conn: _Conn) -> None:
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(key, deque())
        if len(idle) >= MAX_IDLE_PER_HOST:
            conn.transport.close()
            return
        idle.append(conn)

    # ---- one exchange -------------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's entry point (adapters that go through an httpx client)."""
        url = request.url
        if url.scheme != "http" or request.method in ("HEAD", "CONNECT") or not enabled():
            return await self.fallback.handle_async_request(request)
        headers = request.headers.raw
        chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
        conn, key = await self._exchange(request.method.encode(), (url.host, url.port or 80), url_target(url),
                                         headers, request.stream, chunked, _replayable(request.stream),
                                         request.extensions.get("timeout") or {})
        return httpx.Response(conn.status, headers=conn.headers, stream=self._body(key, conn, request),
                              request=request, extensions={"http_version": b"HTTP/1.1"})

    async def request(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                      body: list[bytes | memoryview], timeout: dict[str, float | None]) -> "FastResponse":
        """One exchange without httpx's client machinery (for plain-http URLs): `headers` are sent as given
        plus Host, Content-Length and User-Agent; `body` is written as is, with no copy."""
        size = sum(len(b) for b in body)
        key, target, netloc = split_url(url)
        head = [(b"host", netloc), (b"user-agent", USER_AGENT), *headers]
        if body or method not in ("GET", "DELETE"):
            head.append((b"content-length", b"%d" % size))
        conn, key = await self._exchange(method.encode(), key, target, head, body, False, True, timeout)
        return FastResponse(conn.status, conn.headers, _Body(self, key, conn, timeout.get("read")), url)

    def _body(self, key, conn: _Conn, request: httpx.Request) -> "_Body":
        t = request.extensions.get("timeout") or {}
        return _Body(self, key, conn, t.get("read"))

    async def _exchange(self, method: bytes, key: tuple[str, int], target: bytes, headers, body, chunked: bool,
                        replayable: bool, t: dict) -> tuple[_Conn, tuple[str, int]]:
        """Send the request on a pooled connection and wait for the answer's head. A kept-alive socket the
        server had just closed is retried once on a fresh one, when the body can be sent again."""
        for attempt in (0, 1):
            conn, reused = await self._acquire(key, t.get("connect"))
            try:
                await self._send(conn, method, target, headers, body, chunked, t)
                return conn, key
            except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
                if attempt == 0 and reused and not conn.got_bytes and replayable:
                    continue
                raise
        raise AssertionError("unreachable")

    async def _send(self, conn: _Conn, method: bytes, target: bytes, headers, body, chunked: bool,
                    t: dict) -> None:
        conn.begin(asyncio.get_running_loop())
        head = [b"%s %s HTTP/1.1\r\n" % (method, target)]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        head.append(b"\r\n")
        tr = conn.transport
        write_timeout = t.get("write")
        try:
            if conn.closed:
                raise httpx.WriteError("the upstream closed the connection")
            if isinstance(body, list):  # the direct API: head and body in one writelines, no copies
                tr.writelines((*head, *body))
            else:
                pending: list[bytes] | None = head  # the head leaves with the first body chunk: one syscall
                async for chunk in body:
                    if not chunk:
                        continue
                    if conn.closed:
                        raise httpx.WriteError("the upstream closed the connection while the body was sent")
                    parts = (b"%x\r\n" % len(chunk), chunk, b"\r\n") if chunked else (chunk,)
                    if pending is not None:
                        tr.writelines((*pending, *parts))
                        pending = None
                    else:
                        tr.writelines(parts)
                    if conn._write_paused:
                        await (asyncio.wait_for(conn.drain(), write_timeout) if write_timeout else conn.drain())
                if pending is not None:
                    tr.writelines(pending)
                if chunked:
                    tr.write(b"0\r\n\r\n")
            if conn._write_paused:
                await (asyncio.wait_for(conn.drain(), write_timeout) if write_timeout else conn.drain())
            await _wait(conn.started, t.get("read"), httpx.ReadTimeout, "the upstream did not answer in time")
        except asyncio.TimeoutError:
            tr.close()
            raise httpx.WriteTimeout("the upstream did not take the request in time") from None
        except BaseException:
            tr.close()
            raise

    async def aclose(self) -> None:
        for c in list(self._all):
            if not c.closed and c.transport is not None:
                c.transport.close()
        self._all.clear()
        self._idle.clear()
        await self.fallback.aclose()


def url_target(url: httpx.URL) -> bytes:
    return url.raw_path or b"/"


@functools.lru_cache(maxsize=512)
def split_url(url: str) -> tuple[tuple[str, int], bytes, bytes]:
    """((host, port), request target, Host header) of a plain-http URL, parsed once per distinct URL (httpx.URL
    parsing cost more than the rest of a relayed request)."""
    u = httpx.URL(url)
    return (u.host, u.port or 80), url_target(u), u.netloc
