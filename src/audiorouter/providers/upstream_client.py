"""The one HTTP client for upstream calls, plain http and https alike: pyreqwest (Python bindings of Rust's
reqwest on hyper and rustls).

Chosen by measurement (bench/upstream_clients.py; figures in docs/benchmarks.md, "Interim: the path users
take"): over https, with the 320 KB multipart upload and the 100 KB streamed speech answer, it used the least
client CPU per request of aiohttp, httpx (its own stack and on aiohttp's transport) and itself (0.38 / 0.27 ms
against aiohttp's 0.59 / 0.42); over plain http it came within 9 % (speech) and 23 % (upload, ranges
overlapping) of the hand-written HTTP/1.1 transport it replaces (providers/fasthttp.py, removed; git 7100df4),
aiohttp 68-111 % above it, and the whole gateway's CPU per plain-http request stayed within 15 % of the
previous code's.

- One client per provider adapter, made on first use: a keep-alive pool per upstream host (up to
  POOL_IDLE_PER_HOST idle connections, each kept POOL_IDLE_S) and rustls's TLS session cache, so
  connections and TLS sessions are reused; a pooled connection the server closed meanwhile is not reused.
- Certificates: the system's roots, or SSL_CERT_FILE / SSL_CERT_DIR when set (as for OpenSSL). Verification
  is never turned off.
- HTTP/1.1 only: HTTP/2 is off until it is measured faster (the bench's fake upstream speaks HTTP/1.1).
- Streamed answers are handed over chunk by chunk as they arrive (READ_BUFFER).
- Bodies are handed over without re-encoding: multipart is written here (`multipart_body`), big bodies are
  streamed part by part with their Content-Length instead of being joined into one copy.
- No Accept-Encoding is sent; an answer compressed anyway is decoded here (`UpstreamResponse.aiter_bytes`).
- Failures surface as httpx's exception classes (ConnectError, ReadTimeout, ...): the adapters' error
  mapping (providers/http.py) is written against them and stays as it is.
"""
from __future__ import annotations

import codecs
import datetime as dt
import itertools
import re
import secrets
import zlib
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from pyreqwest import exceptions as pe
from pyreqwest.client import Client, ClientBuilder

POOL_IDLE_PER_HOST = 64
POOL_IDLE_S = 30.0
JOIN_LIMIT = 1 << 20     # bodies up to this size go as one buffer; bigger ones part by part, no joined copy
# pyreqwest reads a streamed answer until this many bytes are buffered before it hands the answer over (and
# keeps that much buffered ahead of the reader): 1 hands it over with its first chunk and keeps one chunk ahead,
# so a stream's first bytes go on at once (a bigger buffer held a TTS or SSE answer back until it filled or the
# stream ended) and a slow client pauses the upstream. Measured: no CPU cost for the 100 KB speech answer.
READ_BUFFER = 1
USER_AGENT = "audiorouter"
# the longest text line (or one server-sent event's data) read from an upstream answer: an ElevenLabs
# with-timestamps chunk or a chat audio delta is tens to hundreds of KB; a line that never ends is not buffered
# without bound
MAX_LINE = 8 << 20
CLOSE_GRACE_S = 0.05  # after closing a client, before the process may exit (HTTPProvider.aclose)
BYTES = (bytes, bytearray, memoryview)
Part = bytes | bytearray | memoryview  # a piece of a request body, sent as it is (never copied)
# multipart boundaries: 96 random bits per process plus a counter (no urandom call per request)
_BOUNDARY_PREFIX = "ar" + secrets.token_hex(12)
_boundary_serial = itertools.count()
_EOL = re.compile("\r\n|\r|\n")


class LineTooLong(httpx.DecodingError):
    """An upstream answer's line (or event) went past MAX_LINE characters without ending."""


def build_client(timeout_s: float, connect_s: float) -> Client:
    return (ClientBuilder()
            .http1_only()
            .gzip(False).deflate(False).brotli(False).zstd(False)
            .user_agent(USER_AGENT)
            .connect_timeout(dt.timedelta(seconds=connect_s))
            .read_timeout(dt.timedelta(seconds=timeout_s))  # per read: a stream may last longer in total
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(dt.timedelta(seconds=POOL_IDLE_S))
            .tcp_nodelay(True)
            .follow_redirects(False)
            .build())


# ---- errors: pyreqwest's classes -> httpx's (what the adapters catch) ----------------------------------
_ERRORS: tuple[tuple[type[BaseException], type[httpx.HTTPError]], ...] = (
    (pe.ConnectTimeoutError, httpx.ConnectTimeout),
    (pe.ReadTimeoutError, httpx.ReadTimeout),
    (pe.WriteTimeoutError, httpx.WriteTimeout),
    (pe.PoolTimeoutError, httpx.PoolTimeout),
    (pe.RequestTimeoutError, httpx.ReadTimeout),
    (pe.ConnectError, httpx.ConnectError),
    (pe.ReadError, httpx.ReadError),
    (pe.WriteError, httpx.WriteError),
    # no content decoding happens in pyreqwest (compression is off): its decode errors are framing errors, a
    # body cut short or malformed
    (pe.BodyDecodeError, httpx.ReadError),
    (pe.DecodeError, httpx.ReadError),
)


def as_httpx_error(e: BaseException, other: type[httpx.HTTPError] = httpx.RemoteProtocolError) -> httpx.HTTPError:
    """The httpx error for a pyreqwest one (`other` for the classes without a counterpart: a protocol error
    before the answer, a read error in its body). The message is the innermost cause, never a header."""
    for src, dst in _ERRORS:
        if isinstance(e, src):
            return dst(_cause(e))
    return other(_cause(e))


def _cause(e: BaseException) -> str:
    details = getattr(e, "details", None)
    causes = details.get("causes") if isinstance(details, dict) else None
    if causes:
        last = causes[-1]
        msg = last.get("message") if isinstance(last, dict) else str(last)
        if msg:
            return str(msg)[:200]
    return e.__class__.__name__


# ---- bodies -----------------------------------------------------------------------------------------
def multipart_body(data: dict[str, Any], files: dict[str, tuple[str, bytes | memoryview, str]]
                   ) -> tuple[str, list[Part]]:
    """(content type, body parts) of a multipart/form-data body; file contents are referenced, not copied."""
    boundary = f"{_BOUNDARY_PREFIX}{next(_boundary_serial):08x}"
    sep = b"--" + boundary.encode()
    parts: list[Part] = []
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


def encode_body(json: Any, content: Any, data: dict[str, Any] | None, files: dict[str, Any] | None
                ) -> tuple[str | None, list[Part]]:
    """(content type or None, body parts) for httpx-style body arguments."""
    if files:
        for name, f in files.items():
            if not (isinstance(f, tuple) and len(f) == 3 and isinstance(f[1], BYTES)):
                raise TypeError(f"files[{name!r}]: expected (filename, bytes, content type)")
        return multipart_body(data or {}, files)
    if data:
        return "application/x-www-form-urlencoded", [urlencode(data, doseq=True).encode()]
    if json is not None:
        return "application/json", [orjson.dumps(json)]
    if content is None:
        return None, []
    if isinstance(content, str):
        return None, [content.encode()]
    if isinstance(content, BYTES):
        return None, [content]
    raise TypeError(f"content: expected bytes or str, not {type(content).__name__}")


def _quote(value: str) -> bytes:
    """A form-data name or filename: quotes, backslashes and line breaks escaped as browsers do."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A").encode()


async def _parts(parts: list[Part]) -> AsyncIterator[Part]:
    for p in parts:
        if len(p):
            yield p


# ---- one exchange -----------------------------------------------------------------------------------
async def request(client: Client, method: str, url: str, headers: dict[str, str] | None,
                  content_type: str | None, parts: list[Part], stream: bool,
                  read_buffer: int = READ_BUFFER) -> UpstreamResponse:
    """Send and wait for the answer's head (and its body too unless `stream`). Raises httpx errors."""
    b = client.request(method, url)
    h = dict(headers) if headers else {}
    if content_type is not None and not any(k.lower() == "content-type" for k in h):
        h["Content-Type"] = content_type
    size = sum(len(p) for p in parts)
    if parts or method not in ("GET", "DELETE", "HEAD"):
        if size <= JOIN_LIMIT or len(parts) == 1:
            b = b.body_bytes(parts[0] if len(parts) == 1 else b"".join(parts)) if parts else b.body_bytes(b"")
        else:
            h["Content-Length"] = str(size)
            b = b.body_stream(_parts(parts))  # type: ignore[arg-type]  # pyreqwest takes any buffer per item
    if h:
        b = b.headers(h)
    try:
        if not stream:
            out = UpstreamResponse(await b.build().send(), url)
            await out.aread()
            return out
        sr = b.streamed_read_buffer_limit(read_buffer).build_streamed()
        resp = await sr.__aenter__()
    except pe.PyreqwestError as e:
        raise as_httpx_error(e) from None
    return UpstreamResponse(resp, url, sr)


class UpstreamResponse:
    """An upstream answer: the part of httpx.Response's interface the adapters use (status_code, headers,
    is_success, aread/content/text/json, aiter_bytes, aiter_lines, aclose)."""

    def __init__(self, resp: Any, url: str, stream_cm: Any = None):
        self._resp = resp
        self.status_code: int = resp.status
        self.url = url
        self._cm = stream_cm
        self._headers: httpx.Headers | None = None
        self._content: bytes | None = None
        self._closed = stream_cm is None

    @property
    def headers(self) -> httpx.Headers:
        if self._headers is None:
            self._headers = httpx.Headers(list(self._resp.headers.items()))
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

    def _encoded(self) -> str | None:
        coding = (self._resp.headers.get("content-encoding") or "").strip().lower()
        return coding if coding not in ("", "identity") else None

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

    async def _raw(self) -> AsyncIterator[bytes]:
        if self._content is not None:
            if self._content:
                yield self._content
            return
        if self._cm is None:  # read whole by `request`
            try:
                data = (await self._resp.bytes()).to_bytes()
            except pe.PyreqwestError as e:
                raise as_httpx_error(e, httpx.ReadError) from None
            if data:
                yield data
            return
        reader = self._resp.body_reader
        try:
            while True:
                try:
                    chunk = await reader.read_chunk()
                except pe.PyreqwestError as e:
                    raise as_httpx_error(e, httpx.ReadError) from None
                if chunk is None:
                    break
                yield chunk.to_bytes()
        finally:
            await self.aclose()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, decoded when the upstream compressed it anyway (we send no Accept-Encoding)."""
        coding = self._encoded()
        if coding is None or self._content is not None:
            async for chunk in self._raw():
                yield chunk
            return
        if coding not in ("gzip", "deflate"):
            await self.aclose()
            raise httpx.DecodingError(f"the upstream answered with an unsupported content-encoding {coding!r}")
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        try:
            async for chunk in self._raw():
                out = d.decompress(chunk)
                if out:
                    yield out
            tail = d.flush()
        except zlib.error as e:
            raise httpx.DecodingError(f"the upstream's {coding} body is corrupt ({e})") from None
        if tail:
            yield tail

    async def aiter_lines(self, max_line: int = MAX_LINE) -> AsyncIterator[str]:
        """The body as text lines (ended by \\n, \\r\\n or \\r), without their line ends; LineTooLong once
        a line passes `max_line` characters unended."""
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
            if len(buf) > max_line:
                raise LineTooLong(f"a line of the answer passed {max_line} characters")
        buf += dec.decode(b"", final=True)
        for line in buf.splitlines():
            yield line

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._cm.__aexit__(None, None, None)
        except pe.PyreqwestError:
            pass
