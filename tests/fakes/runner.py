"""A shared runner for fake upstream providers: an HTTP/1.1 server on a free 127.0.0.1 port in a daemon
thread (stdlib, so faults can act on the raw socket), which records every request and can be told to fail.

Faults are queued and served one per matching request before normal handling:
    fake.fail(503, times=2)                 provider-shaped error (optionally Retry-After)
    fake.timeout(5)                         hold the request, then close without answering
    fake.drop()                             reset the connection (TCP RST) without answering
    fake.malformed()                        200 with a body the client cannot use
    fake.cut_stream(after_chunks=1)         start a streamed answer, then reset mid-body
`times=ALWAYS` keeps a fault for every request. `fake.clear()` forgets calls and faults.

Subclasses implement `handle(call) -> Reply` (checking the request strictly, answering in the provider's
real shape) and `error(status, message) -> Reply` (the provider's error envelope); `reject()` answers an
error and records the violation in `fake.violations`, which tests assert stays empty."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import av
import numpy as np

ALWAYS = 10**9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Call:
    """One request as the fake received it (and what it answered)."""
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes = b""
    json: Any = None
    form: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # name -> (filename, type, data)
    index: int = 0
    fault: str | None = None           # the fault served instead of normal handling, if any
    reply_status: int | None = None
    reply_json: Any = None             # JSON the fake answered (normal handling)
    reply_bytes: bytes = b""           # audio (or other bytes) the fake answered
    info: dict[str, Any] = field(default_factory=dict)  # what the fake measured (audio duration, ...)

    def f1(self, name: str) -> str | None:
        v = self.form.get(name)
        return v[0] if v else None

    def q1(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] | None = None  # streamed with chunked transfer encoding
    reset_after_chunks: int | None = None  # RST after this many chunks (a mid-stream failure)

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Reply:
        return cls(status, text.encode(), {"Content-Type": content_type})


@dataclass
class _Fault:
    kind: str
    times: int
    path: str | None
    make: Callable[[Call], Any]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # resets and timeouts are deliberate
        pass


class FakeServer:
    """Base class of the fakes. `prefix` is where the provider's API lives (e.g. "/v1")."""

    prefix = ""

    def __init__(self, api_key: str = "test-key"):
        self.api_key = api_key
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self.port = 0
        self.delay_s = 0.0  # added before every normal answer (to make a fake measurably slow)

    # ---- subclass interface -------------------------------------------------------------------------
    def handle(self, call: Call) -> Reply:
        raise NotImplementedError

    def error(self, status: int, message: str, **kw: Any) -> Reply:
        return Reply.json({"error": {"message": message}}, status)

    def malformed_reply(self, call: Call) -> Reply:
        return Reply(200, b'{"text": "unterminated', {"Content-Type": "application/json"})

    def reject(self, status: int, message: str, **kw: Any) -> Reply:
        self.violations.append(message)
        return self.error(status, message, **kw)

    # ---- control ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    def _add(self, kind: str, times: int, path: str | None, make: Callable[[Call], Any]) -> None:
        with self._lock:
            self._faults.append(_Fault(kind, times, path, make))

    def fail(self, status: int, message: str = "injected failure", *, times: int = 1,
             retry_after: float | None = None, path: str | None = None) -> None:
        def make(call: Call) -> Reply:
            r = self.error(status, message)
            if retry_after is not None:
                r.headers["Retry-After"] = str(retry_after)
            return r
        self._add(f"status:{status}", times, path, make)

    def timeout(self, seconds: float = 5.0, *, times: int = 1, path: str | None = None) -> None:
        self._add("timeout", times, path, lambda call: ("sleep", seconds))

    def drop(self, *, times: int = 1, path: str | None = None) -> None:
        self._add("reset", times, path, lambda call: "reset")

    def malformed(self, *, times: int = 1, path: str | None = None) -> None:
        self._add("malformed", times, path, self.malformed_reply)

    def cut_stream(self, after_chunks: int = 1, *, times: int = 1, path: str | None = None) -> None:
        def make(call: Call) -> Reply:
            r = self.handle(call)
            r.reset_after_chunks = after_chunks
            return r
        self._add("cut_stream", times, path, make)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
            self._faults.clear()
            self.violations.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.path is None or path.startswith(f.path):
                    f.times -= 1
                    if f.times <= 0:
                        self._faults.remove(f)
                    return f
        return None

    def paths(self) -> list[str]:
        return [c.path for c in self.calls]

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as real API servers set it: with Nagle's algorithm on, a streamed answer's small
            # chunks wait for the client's delayed ACK (~40 ms stalls that looked like gateway overhead)
            disable_nagle_algorithm = True

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._serve(self)

            def do_POST(self) -> None:
                fake._serve(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- request handling ---------------------------------------------------------------------------
    def _read(self, h: BaseHTTPRequestHandler) -> Call:
        parts = urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        n = int(headers.get("content-length") or 0)
        body = h.rfile.read(n) if n else b""
        call = Call(h.command, parts.path, parse_qsl(parts.query, keep_blank_values=True), headers, body)
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                call.json = json.loads(body)
            except ValueError:
                call.json = None
        elif ctype.startswith("multipart/form-data"):
            msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            if msg.is_multipart():
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    data = part.get_payload(decode=True) or b""
                    filename = part.get_filename()
                    if filename is not None:
                        call.files[name] = (filename, part.get_content_type(), data)
                    else:
                        call.form.setdefault(name, []).append(data.decode("utf-8"))
        with self._lock:
            call.index = len(self.calls)
            self.calls.append(call)
        return call

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        call = self._read(h)
        fault = self._take_fault(call.path)
        if fault is not None:
            call.fault = fault.kind
            action = fault.make(call)
            if action == "reset":
                self._rst(h)
                return
            if isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(action[1])
                self._rst(h)
                return
            reply = action
        else:
            if self.delay_s:
                time.sleep(self.delay_s)
            try:
                reply = self.handle(call)
            except Exception as e:  # a bug in a fake must be visible, not a hang
                self.violations.append(f"fake crashed: {e!r}")
                reply = self.error(500, f"fake crashed: {e!r}")
        call.reply_status = reply.status
        self._write(h, reply)

    @staticmethod
    def _rst(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        except OSError:
            pass

    def _write(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        try:
            h.send_response(reply.status)
            for k, v in reply.headers.items():
                h.send_header(k, v)
            if reply.chunks is None:
                h.send_header("Content-Length", str(len(reply.body)))
                h.end_headers()
                h.wfile.write(reply.body)
                h.wfile.flush()
                return
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for i, chunk in enumerate(reply.chunks):
                if reply.reset_after_chunks is not None and i >= reply.reset_after_chunks:
                    h.wfile.flush()
                    time.sleep(0.05)
                    self._rst(h)
                    return
                if chunk:
                    h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:
            h.close_connection = True


# ---- audio helpers (independent of the code under test) ------------------------------------------------
@dataclass
class Probe:
    container: str
    codec: str
    duration: float
    rate: int
    sha256: str


def probe(data: bytes) -> Probe:
    """Decode audio bytes in full with PyAV; ValueError when they are not audio."""
    try:
        with av.open(io.BytesIO(data), mode="r") as c:
            if not c.streams.audio:
                raise ValueError("no audio stream")
            st = c.streams.audio[0]
            n = sum(f.samples for f in c.decode(st))
            rate = st.rate or st.codec_context.sample_rate
            return Probe(c.format.name.split(",")[0], st.codec_context.name, n / rate if rate else 0.0, rate,
                         hashlib.sha256(data).hexdigest())
    except (av.FFmpegError, IndexError, StopIteration, EOFError, OSError) as e:
        raise ValueError(f"not decodable audio: {e}") from None


def tone(seconds: float, rate: int, freq: float = 330.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.25 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_audio(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """float32 mono -> pcm (s16le) | f32 (f32le) | wav | mp3 | flac | opus | aac."""
    s16 = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    if fmt == "pcm":
        return s16.tobytes()
    if fmt == "f32":
        return samples.astype("<f4").tobytes()
    if fmt == "wav":
        import wave
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(s16.tobytes())
        return buf.getvalue()
    container, codec, out_rate = {"mp3": ("mp3", "libmp3lame", rate), "flac": ("flac", "flac", rate),
                                  "opus": ("ogg", "libopus", 48000), "aac": ("adts", "aac", rate)}[fmt]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        st = out.add_stream(codec, rate=out_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        rs = av.AudioResampler(format=st.codec_context.format.name, layout="mono", rate=out_rate)
        for f in rs.resample(frame) + rs.resample(None):
            for p in st.encode(f):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return buf.getvalue()


def split_chunks(data: bytes, n: int = 4) -> list[bytes]:
    size = max(1, -(-len(data) // n))
    return [data[i:i + size] for i in range(0, len(data), size)]


@dataclass
class Heard:
    """What a fake 'recognizes': the script's words spread evenly over the audio, grouped in segments."""
    text: str
    words: list[tuple[str, float, float]]
    segments: list[tuple[str, float, float]]


def hear(script: str, duration: float, words_per_segment: int = 6) -> Heard:
    tokens = script.split()
    n = len(tokens)
    step = duration * 0.9 / n
    words = [(t, round(duration * 0.05 + i * step, 3), round(duration * 0.05 + i * step + step * 0.8, 3))
             for i, t in enumerate(tokens)]
    segs = []
    for i in range(0, n, words_per_segment):
        group = words[i:i + words_per_segment]
        segs.append((" " + " ".join(w for w, _, _ in group), group[0][1], group[-1][2]))
    return Heard(" ".join(tokens), words, segs)
