"""Phase probe for the benchmark: where a request's time goes inside audiorouter, with no change to the product.

`bench/profile_gateway.py --phases` starts the server with this directory on PYTHONPATH and
AUDIOROUTER_BENCH_PHASES=<file>. Python imports this module at start-up; it wraps a few of audiorouter's
functions (by their module attributes, which the request path looks up at call time) so that each request
records the time at which it passed each point. Every 50 requests the per-phase medians of those requests are
appended to the file as one JSON line: phase name -> milliseconds since the previous point."""
from __future__ import annotations

import contextvars
import functools
import json
import os
import statistics
import time

OUT = os.environ.get("AUDIOROUTER_BENCH_PHASES")
BATCH = 50
_marks: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bench_phase_marks", default=None)
_rows: list[list[tuple[str, float]]] = []


def mark(name: str) -> None:
    d = _marks.get()
    if d is not None and name not in d:
        d[name] = time.perf_counter()


def _finish() -> None:
    d = _marks.get()
    if d is None or "upstream answered" not in d:
        return
    d["response sent"] = time.perf_counter()
    points = sorted(d.items(), key=lambda kv: kv[1])
    _rows.append([(points[i][0], points[i][1] - points[i - 1][1]) for i in range(1, len(points))])
    if len(_rows) >= BATCH:
        names = [n for n, _ in _rows[-1]]
        med = {}
        for j, n in enumerate(names):
            vals = [r[j][1] for r in _rows if len(r) > j and r[j][0] == n]
            med[n] = round(1000 * statistics.median(vals), 4)
        _rows.clear()
        with open(OUT, "a", encoding="utf-8") as f:
            f.write(json.dumps(med) + "\n")


def _after(obj, attr: str, name: str) -> None:
    fn = getattr(obj, attr)

    @functools.wraps(fn)
    async def wrapped(*a, **kw):
        out = await fn(*a, **kw)
        mark(name)
        return out
    setattr(obj, attr, wrapped)


def _after_sync(obj, attr: str, name: str, before: str | None = None) -> None:
    fn = getattr(obj, attr)

    @functools.wraps(fn)
    def wrapped(*a, **kw):
        if before:
            mark(before)
        out = fn(*a, **kw)
        mark(name)
        return out
    setattr(obj, attr, wrapped)


def _before(obj, attr: str, name: str) -> None:
    fn = getattr(obj, attr)

    @functools.wraps(fn)
    async def wrapped(*a, **kw):
        mark(name)
        return await fn(*a, **kw)
    setattr(obj, attr, wrapped)


def install() -> None:
    from audiorouter.api import app as app_mod
    from audiorouter.api import auth, speech, transcriptions
    from audiorouter.providers import upstream_client

    outer = app_mod.GenerationIdMiddleware.__call__

    async def call(self, scope, receive, send):
        if scope["type"] != "http":
            return await outer(self, scope, receive, send)
        token = _marks.set({"request in": time.perf_counter()})

        async def send_probe(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                _finish()
        try:
            return await outer(self, scope, receive, send_probe)
        finally:
            _marks.reset(token)

    app_mod.GenerationIdMiddleware.__call__ = call
    _after(auth, "authenticate", "key checked")
    _after(transcriptions, "parse_transcription", "body parsed")
    _after_sync(speech, "speech_from_json", "body parsed")
    _after(transcriptions, "open_job", "audio prepared")
    _before(upstream_client, "request", "upstream request started")  # body encoded, handed to the client
    _after(upstream_client, "request", "upstream answered")  # the answer's head (and a small body) read
    _after_sync(transcriptions, "render_transcript", "answer rendered", before="result settled")


if OUT:
    install()


def install_detail() -> None:
    """Finer points between "body parsed" and "upstream request started" (AUDIOROUTER_BENCH_PHASES_DETAIL=1)."""
    import contextlib

    from audiorouter.api import speech, transcriptions
    from audiorouter.providers.http import HTTPProvider
    from audiorouter.routing.router import Router

    for mod in (speech, transcriptions):
        track = mod.track

        def probed(*a, _track=track, **kw):
            @contextlib.asynccontextmanager
            async def cm():
                async with _track(*a, **kw) as gen:
                    mark("ledger row opened")
                    yield gen
            return cm()
        mod.track = probed
    from audiorouter.jobs.transcription import TranscriptionJob
    from audiorouter.providers.upstream_client import UpstreamResponse

    _before(Router, "run", "route planned")
    _before(HTTPProvider, "send", "adapter request built")
    _after(UpstreamResponse, "aread", "upstream body read")
    _after(Router, "run", "router returned")
    _after(TranscriptionJob, "run", "job returned")


if OUT and os.environ.get("AUDIOROUTER_BENCH_PHASES_DETAIL"):
    install_detail()
