"""The HTTP/1.1 protocol `serve` runs: uvicorn's httptools protocol with read deadlines and connection caps.

uvicorn bounds only the idle time between two requests of a keep-alive connection (5 s). A client that opens a
connection and sends nothing, sends its request head or body a byte at a time, or opens thousands of
connections, holds a file descriptor and a protocol object each for as long as it likes. An ASGI middleware
cannot see any of this (the app is called only once the head is complete, and gets the body only when it
asks), so the limits live here, at the transport, in one small subclass:

* the request head (request line + headers) must be complete within `header_timeout_s` of its first byte
  -> 408 and close; a connection that sends nothing at all is closed silently after the same time;
* a body must make progress: at least `body_min_rate` bytes/s (at least 1 byte) in every window of
  `body_timeout_s` -> otherwise 408 and close. Time the server itself is not reading (flow control paused,
  `Expect: 100-continue` not answered yet) does not count against the client;
* at most `max_connections` open connections per process (503), and `max_connections_per_client` per client
  address, IPv6 per /64 (429): the surplus is answered at once and closed, never read.

Cost on the request path: a few attribute stores and one `loop.time()` per parser event. There is one timer
per connection, armed when the connection opens or a request begins and not reset on every read: when it
fires it looks at how far the request got and re-arms itself for the time left (or stops, between requests).

Answers are written straight to the socket (the app may not even have started) in the OpenRouter envelope,
or OpenAI's when the path already read starts with /v1/; the write side is then shut and the connection
closed after a short linger that discards what the client still sends, so it reads the answer instead of a
reset."""
from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..core.errors import GatewayError, InvalidRequest, RateLimited
from .errors import dialect_of, error_body

WAIT, HEAD, BODY, IDLE = range(4)  # nothing of a request yet / request head / body / none being read
LINGER_S = 1.0


def client_key(client: tuple[str, int] | None) -> str | None:
    """The address a connection counts against: the IP, or its /64 for IPv6 (one host usually holds a whole
    /64). None for unix sockets."""
    if not client:
        return None
    try:
        ip = ipaddress.ip_address(client[0])
    except ValueError:
        return client[0]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return client[0]


def raw_error(status: int, phrase: str, err: GatewayError, path: str) -> bytes:
    body = orjson.dumps(error_body(err, dialect_of(path)))
    head = [f"HTTP/1.1 {status} {phrase}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k.lower()}: {v}" for k, v in err.headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # set by guarded_protocol(); the defaults are never used as such
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    body_min_rate: int = 0
    max_connections: int = 0
    max_connections_per_client: int = 0
    per_client: ClassVar[dict[str, int]] = {}  # one per guarded_protocol() class, shared by its connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._key = None
        if self.max_connections and len(self.connections) > self.max_connections:
            self._answer_and_close(503, "Service Unavailable", GatewayError(
                "too many open connections to this server; retry shortly", status=503, code="too_many_connections",
                headers={"Retry-After": "1"}))
            return
        key = client_key(self.client)
        if key is not None and self.max_connections_per_client:
            held = self.per_client.get(key, 0)
            if held >= self.max_connections_per_client:
                self._answer_and_close(429, "Too Many Requests", RateLimited(
                    f"too many open connections from your address (at most {self.max_connections_per_client}); "
                    "reuse connections or retry shortly", code="too_many_connections",
                    headers={"Retry-After": "1"}))
                return
            self.per_client[key] = held + 1
            self._key = key
        self._phase, self._since, self._bytes = WAIT, self.loop.time(), 0
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._key is not None:
            left = self.per_client.get(self._key, 1) - 1
            if left > 0:
                self.per_client[self._key] = left
            else:
                self.per_client.pop(self._key, None)
            self._key = None
        super().connection_lost(exc)

    # No WebSocket upgrades: this app has no WebSocket route, and an upgrade hands the transport to another
    # protocol without our connection_lost, so its per-client count was never given back (a few upgrades
    # locked an address out for good). An Upgrade header is ignored: the request is served as plain HTTP.
    def _should_upgrade_to_ws(self) -> bool:
        return False

    def _unsupported_upgrade_warning(self) -> None:
        pass  # uvicorn logs two warnings per such request: a client could fill the log with them

    def data_received(self, data: bytes) -> None:
        if not self._closing:  # after an answer of ours: discarded until the linger ends
            super().data_received(data)

    # parser callbacks: where the request is
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase, self._since = HEAD, self.loop.time()
        if self._timer is None:
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase, self._since, self._bytes = BODY, self.loop.time(), 0

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._bytes += len(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = IDLE

    # the deadline
    def _arm(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._check)

    def _check(self) -> None:
        self._timer = None
        phase = self._phase
        if phase == IDLE or self._closing or self.transport.is_closing():
            return  # re-armed by the next request's first byte
        now = self.loop.time()
        if self.flow.read_paused or (phase == BODY and self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._since, self._bytes = now, 0  # we are the ones not reading: the client's clock restarts
            self._arm(self.body_timeout_s if phase == BODY else self.header_timeout_s)
            return
        if phase == BODY:
            left = self._since + self.body_timeout_s - now
            if left > 0:
                self._arm(left)
                return
            if self._bytes >= max(1, self.body_min_rate * self.body_timeout_s):
                self._since, self._bytes = now, 0  # enough this window: the next one starts
                self._arm(self.body_timeout_s)
                return
            self._timed_out(f"the request body did not arrive in time (less than {max(1, self.body_min_rate)} "
                            f"bytes/s over {self.body_timeout_s:g} s)")
            return
        left = self._since + self.header_timeout_s - now
        if left > 0:
            self._arm(left)
        elif phase == WAIT:
            self.transport.close()  # nothing was asked: nothing to answer
        else:
            self._timed_out(f"the request headers did not arrive within {self.header_timeout_s:g} s")

    def _timed_out(self, message: str) -> None:
        cycle = self.cycle if self._phase == BODY else None
        if cycle is not None:
            # the app may be waiting for the rest of the body: it sees a disconnect, and what it sends is dropped
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        self.logger.debug("408 for %s: %s", self.client[0] if self.client else "a client", message)
        self._answer_and_close(408, "Request Timeout", InvalidRequest(message, status=408, code="request_timeout"))

    def _answer_and_close(self, status: int, phrase: str, err: GatewayError) -> None:
        self._closing = True
        self._phase = IDLE
        path = (self.scope or {}).get("path") or (getattr(self, "url", b"") or b"").decode("latin-1")
        self.transport.write(raw_error(status, phrase, err, path))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def guarded_protocol(settings: Any) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn (`http=`), with this configuration's limits and its own per-client counts.
    A timeout or cap of 0 is off."""
    never = 1e9  # s: a timer that does not fire
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {
        "header_timeout_s": float(settings.header_timeout_s) or never,
        "body_timeout_s": float(settings.body_timeout_s) or never,
        "body_min_rate": int(settings.body_min_rate),
        "max_connections": int(settings.max_connections),
        "max_connections_per_client": int(settings.max_connections_per_client),
        "per_client": {},
    })
