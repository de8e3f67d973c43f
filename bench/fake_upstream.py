"""A fast stand-in for OpenAI's audio API, for gateway-overhead benchmarks.

One process, raw asyncio (uvloop when present), HTTP/1.1 keep-alive, a hand-rolled request parser that only
understands what the gateways send: Content-Length or chunked request bodies. Each listening port has its own
response delay, so one process serves the "0 ms" and the "50 ms" upstream:

    python bench/fake_upstream.py --port 9100:0 --port 9101:50
    python bench/fake_upstream.py --port 9100:0 --port 9102:0:tls --cert server.pem --key server-key.pem

A port spec ending in `:tls` serves https (TLS 1.2/1.3, session tickets on, as public providers do) with the
given certificate (bench/tls.py makes one and its CA).

Routes (any prefix before /audio/... is accepted, so base URLs ending in /v1 work):
  POST .../audio/transcriptions, .../audio/translations  -> small JSON transcript
  POST .../audio/speech                                    -> 100 KB body, chunked, in 4 chunks
  GET  /stats                                              -> what the last request looked like (sanity checks)
  GET  /health                                             -> ok
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

SPEECH_BYTES = 100 * 1024
SPEECH_CHUNKS = 4
TRANSCRIPT = json.dumps({
    "text": "The quick brown fox jumps over the lazy dog.",
    "language": "english",
    "duration": 10.0,
    "usage": {"type": "duration", "seconds": 10},
}).encode()
_HEAD_LIMIT = 64 * 1024


SPEECH_LENGTH_MODE = os.environ.get("FAKE_SPEECH_FRAMING", "chunked") == "length"


def _speech_body() -> list[bytes]:
    # deterministic "mp3-ish" bytes: an ID3 tag then filler, so sniffers that look at the first bytes are happy
    blob = bytearray(b"ID3\x04\x00\x00\x00\x00\x00\x00")
    pattern = bytes(range(256))
    while len(blob) < SPEECH_BYTES:
        blob += pattern
    blob = bytes(blob[:SPEECH_BYTES])
    step = SPEECH_BYTES // SPEECH_CHUNKS
    out = []
    for i in range(SPEECH_CHUNKS):
        part = blob[i * step:(i + 1) * step if i < SPEECH_CHUNKS - 1 else SPEECH_BYTES]
        out.append(part if SPEECH_LENGTH_MODE else b"%x\r\n" % len(part) + part + b"\r\n")
    if not SPEECH_LENGTH_MODE:
        out.append(b"0\r\n\r\n")
    return out


SPEECH_CHUNKED = _speech_body()
STATS: dict = {"requests": 0}


class Conn(asyncio.Protocol):
    """Incremental parser: head, then body by content-length or chunked, then answer; pipelining-safe."""

    def __init__(self, delay: float):
        self.delay = delay
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.state = "head"
        self.method = self.path = ""
        self.headers: dict[str, str] = {}
        self.remaining = 0
        self.body_len = 0
        self.busy = False  # a response is being produced (delay); parse the next request after it
        self.body_head = bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._parse()

    def _parse(self) -> None:
        buf = self.buf
        while True:
            if self.state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _HEAD_LIMIT:
                        self.transport.close()
                    return
                lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[:end + 4]
                parts = lines[0].split(" ")
                self.method, self.path = parts[0], parts[1] if len(parts) > 1 else "/"
                h = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    h[k.strip().lower()] = v.strip()
                self.headers = h
                self.body_len = 0
                self.body_head = bytearray()
                if "chunked" in h.get("transfer-encoding", "").lower():
                    self.state = "chunk-size"
                else:
                    self.remaining = int(h.get("content-length", "0") or 0)
                    self.state = "body"
            if self.state == "body":
                take = min(self.remaining, len(buf))
                if take:
                    if len(self.body_head) < 256:
                        self.body_head += buf[:min(take, 256 - len(self.body_head))]
                    del buf[:take]
                    self.remaining -= take
                    self.body_len += take
                if self.remaining:
                    return
                self.state = "head"
                if self._respond():
                    return
                continue
            if self.state == "chunk-size":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";")[0].strip() or b"0", 16)
                del buf[:end + 2]
                if size == 0:
                    self.state = "trailer"
                else:
                    self.remaining = size
                    self.state = "chunk-data"
            if self.state == "chunk-data":
                take = min(self.remaining, len(buf))
                if take:
                    if len(self.body_head) < 256:
                        self.body_head += buf[:min(take, 256 - len(self.body_head))]
                    del buf[:take]
                    self.remaining -= take
                    self.body_len += take
                if self.remaining:
                    return
                self.state = "chunk-crlf"
            if self.state == "chunk-crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self.state = "chunk-size"
                continue
            if self.state == "trailer":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(buf[:end])
                del buf[:end + 2]
                if line:
                    continue  # a trailer header
                self.state = "head"
                if self._respond():
                    return
                continue

    def _respond(self) -> bool:
        """Answer the request just read. True when the answer is deferred (delay): parsing resumes after it."""
        if self.path != "/stats":
            STATS["requests"] += 1
            STATS["last"] = {"method": self.method, "path": self.path, "body_bytes": self.body_len,
                             "content_type": self.headers.get("content-type", ""),
                             "authorization": bool(self.headers.get("authorization")),
                             "chunked": "chunked" in self.headers.get("transfer-encoding", "").lower(),
                             "body_head": bytes(self.body_head[:120]).decode("latin-1")}
        close = self.headers.get("connection", "").lower() == "close"
        if self.delay > 0 and self.path not in ("/stats", "/health"):
            self.busy = True
            asyncio.get_running_loop().call_later(self.delay, self._finish, self.path, self.method, close)
            return True
        self._send(self.path, self.method, close)
        return False

    def _finish(self, path: str, method: str, close: bool) -> None:
        self.busy = False
        if self.transport.is_closing():
            return
        self._send(path, method, close)
        if self.buf:
            self._parse()

    def _send(self, path: str, method: str, close: bool) -> None:
        t = self.transport
        conn = b"close" if close else b"keep-alive"
        if path.endswith("/audio/speech") and method == "POST":
            framing = (b"Content-Length: %d" % SPEECH_BYTES) if SPEECH_LENGTH_MODE else b"Transfer-Encoding: chunked"
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n" + framing + b"\r\n"
                    b"Connection: " + conn + b"\r\n\r\n")
            t.writelines(SPEECH_CHUNKED)
        elif path.endswith(("/audio/transcriptions", "/audio/translations")) and method == "POST":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: %s\r\n\r\n" % (len(TRANSCRIPT), conn) + TRANSCRIPT)
        elif path in ("/stats", "/health") or path.endswith("/models"):
            body = json.dumps(STATS if path == "/stats" else {"status": "ok", "data": []}).encode()
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: %s\r\n\r\n" % (len(body), conn) + body)
        else:
            body = b'{"error": {"message": "no such route", "type": "invalid_request_error"}}'
            t.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                    b"Connection: %s\r\n\r\n" % (len(body), conn) + body)
        if close:
            t.close()


async def serve(ports: list[tuple[int, float, bool]], cert: str | None = None, key: str | None = None) -> None:
    loop = asyncio.get_running_loop()
    ctx = None
    if any(tls for _, _, tls in ports):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
    servers = [await loop.create_server(lambda d=delay: Conn(d), "127.0.0.1", port, backlog=1024, reuse_address=True,
                                        ssl=ctx if tls else None)
               for port, delay, tls in ports]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("fake upstream ready on " + ", ".join(f"{p} ({d * 1000:.0f} ms{', https' if t else ''})"
                                                for p, d, t in ports), flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", action="append", required=True, help="PORT:DELAY_MS[:tls]")
    ap.add_argument("--cert", help="server certificate (PEM) for the :tls ports")
    ap.add_argument("--key", help="its private key (PEM)")
    args = ap.parse_args()
    ports = []
    for spec in args.port:
        p, _, rest = spec.partition(":")
        d, _, tls = rest.partition(":")
        ports.append((int(p), float(d or 0) / 1000.0, tls == "tls"))
    if any(t for _, _, t in ports) and not (args.cert and args.key):
        ap.error("a :tls port needs --cert and --key")
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    if hasattr(os, "sched_getaffinity"):
        print(f"fake upstream cpus: {sorted(os.sched_getaffinity(0))}", flush=True)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(ports, args.cert, args.key))


if __name__ == "__main__":
    main()
