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
import os
import time
import weakref
from collections import deque
from typing import AsyncIterator

import httptools
import httpx

IDLE_EXPIRY_S = 4.0      # below the usual 5 s keep-alive of servers (uvicorn, node): never reuse a dying socket
MAX_IDLE_PER_HOST = 64
QUEUE_HIGH = 32          # body chunks buffered before reading from the socket pauses


def enabled() -> bool:
    return os.environ.get("AUDIOROUTER_FAST_HTTP", "1").lower() not in ("0", "false", "no", "off")


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()
        self._write_paused = False
        self._drain: asyncio.Future | None = None

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.started: asyncio.Future | None = None
        self.body: asyncio.Queue | None = None
        self.done = False
        self.keep_alive = True
        self.got_bytes = False
        self._reading_paused = False

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reset()
        self.started = loop.create_future()
        self.body = asyncio.Queue()

    # ---- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.started is not None and not self.started.done():
            self.started.set_exception(httpx.RemoteProtocolError("the upstream closed the connection before "
                                                                 "answering"))
        elif self.body is not None and not self.done:
            names = {k.lower() for k, _ in self.headers}
            if b"content-length" not in names and b"transfer-encoding" not in names:
                self.done, self.keep_alive = True, False  # a body delimited by the end of the connection
                self.body.put_nowait(None)
            else:
                self.body.put_nowait(httpx.ReadError("the upstream closed the connection mid-answer"))
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
            elif self.body is not None and not self.done:
                self.body.put_nowait(err)
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
        if self.body is None:
            return
        self.body.put_nowait(bytes(body))
        if not self._reading_paused and self.body.qsize() > QUEUE_HIGH:
            self._reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.done = True
        if self.body is not None:
            self.body.put_nowait(None)

    def resume_if_drained(self) -> None:
        if self._reading_paused and self.body is not None and self.body.qsize() <= QUEUE_HIGH // 2:
            self._reading_paused = False
            if not self.closed:
                self.transport.resume_reading()


class _Body(httpx.AsyncByteStream):
    def __init__(self, pool: "FastTransport", key, conn: _Conn, read_timeout: float | None):
        self.pool, self.key, self.conn, self.read_timeout = pool, key, conn, read_timeout
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        c = self.conn
        try:
            while True:
                try:
                    item = await asyncio.wait_for(c.body.get(), self.read_timeout) if self.read_timeout \
                        else await c.body.get()
                except asyncio.TimeoutError:
                    raise httpx.ReadTimeout("the upstream stopped sending") from None
                c.resume_if_drained()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        except BaseException:
            self._discard()
            raise
        self._finished = True
        if c.keep_alive and not c.closed:
            self.pool._release(self.key, c)
        else:
            self._discard()

    def _discard(self) -> None:
        if not self.conn.closed and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn.closed = True

    async def aclose(self) -> None:
        if not self._finished:
            self._discard()


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
        url = request.url
        if url.scheme != "http" or request.method in ("HEAD", "CONNECT") or not enabled():
            return await self.fallback.handle_async_request(request)
        key = (url.host, url.port or 80)
        t = request.extensions.get("timeout") or {}
        for attempt in (0, 1):
            conn, reused = await self._acquire(key, t.get("connect"))
            try:
                return await self._exchange(request, key, conn, t)
            except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
                # a kept-alive socket the server had just closed: once more on a fresh one, if the body allows
                if attempt == 0 and reused and not conn.got_bytes and _replayable(request.stream):
                    continue
                raise

        raise AssertionError("unreachable")

    async def _exchange(self, request: httpx.Request, key, conn: _Conn, t: dict) -> httpx.Response:
        loop = asyncio.get_running_loop()
        conn.begin(loop)
        headers = request.headers.raw
        chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url_target(request.url))]
        head += [k + b": " + v + b"\r\n" for k, v in headers]
        head.append(b"\r\n")
        tr = conn.transport
        write_timeout = t.get("write")
        try:
            if conn.closed:
                raise httpx.WriteError("the upstream closed the connection")
            pending: list[bytes] | None = head  # the head leaves with the first body chunk: one syscall
            async for chunk in request.stream:
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
            read_timeout = t.get("read")
            await (asyncio.wait_for(asyncio.shield(conn.started), read_timeout) if read_timeout else conn.started)
        except asyncio.TimeoutError:
            tr.close()
            raise httpx.ReadTimeout("the upstream did not answer in time") from None
        except BaseException:
            tr.close()
            raise
        return httpx.Response(conn.status, headers=conn.headers, stream=_Body(self, key, conn, t.get("read")),
                              request=request, extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        for c in list(self._all):
            if not c.closed and c.transport is not None:
                c.transport.close()
        self._all.clear()
        self._idle.clear()
        await self.fallback.aclose()


def url_target(url: httpx.URL) -> bytes:
    return url.raw_path or b"/"
