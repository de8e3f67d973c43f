"""Observability over HTTP: the request metrics middleware and `GET /metrics` (Prometheus text format).

What is exported (docs/observability.md has the list with the PromQL of the Grafana dashboard,
docs/grafana-dashboard.json):
- audiorouter_requests_total, audiorouter_request_duration_seconds: by route, serving model and provider, and
  HTTP status; audiorouter_request_bytes_total / audiorouter_response_bytes_total by route (counted here);
- audiorouter_upstream_attempts_total by provider and outcome, audiorouter_upstream_duration_seconds
  (providers/http.py), audiorouter_cache_lookups_total (api/generations.py): recorded where they happen
  (core/metrics.py);
- read at scrape time from the live objects: circuit state per endpoint (routing/health.py), local engine
  queues and batches (providers/workers.py, providers/local_whisper.py), ledger writer backlog and lag
  (store/writer.py).

/metrics is protected like the management API: with auth on, only a management key may read it (401 without
a key, 403 with an ordinary one); with auth off (no key exists, loopback only) anyone on the machine can.
AUDIOROUTER_METRICS=false turns recording and the route off."""
from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core import metrics
from ..core.errors import AuthError, Forbidden, GatewayError
from . import auth
from .errors import error_response

METRICS_PATH = "/metrics"
_ID_SEGMENT = re.compile(r"^(gen-[\w-]+|[0-9a-f]{16,}|[\w-]*\d[\w-]{15,}|\d+)$", re.IGNORECASE)
_routes: dict[str, str] = {}


def route_label(path: str) -> str:
    """The route as a bounded label: path segments that are ids (key hashes, generation ids, numbers) become
    {id}; remembered per distinct path."""
    r = _routes.get(path)
    if r is None:
        r = "/".join("{id}" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/"))
        if len(_routes) < 4096:
            _routes[path] = r
    return r


class MetricsMiddleware:
    """Counts every /api/ and /v1/ request: status, duration to the end of the answer, body bytes in and out,
    and the model and provider that served it (noted by the request's handler, core/metrics.note_served)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not metrics.enabled() or not path.startswith(("/api/", "/v1/")):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        served = metrics.begin_request()
        status = 500
        n_in = n_out = 0

        async def counting_receive() -> Message:
            nonlocal n_in
            m = await receive()
            if m["type"] == "http.request":
                n_in += len(m.get("body", b""))
            return m

        async def counting_send(m: Message) -> None:
            nonlocal status, n_out
            t = m["type"]
            if t == "http.response.start":
                status = m["status"]
            elif t == "http.response.body":
                n_out += len(m.get("body", b""))
            await send(m)
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = route_label(path)
            labels = (route, served.get("model", ""), served.get("provider", ""), str(status))
            metrics.REQUESTS.inc(labels)
            metrics.LATENCY.observe(labels, time.perf_counter() - t0)
            if n_in:
                metrics.BYTES_IN.inc((route,), n_in)
            if n_out:
                metrics.BYTES_OUT.inc((route,), n_out)


class LiveCollector:
    """Gauges and counters read from the application's objects when Prometheus scrapes."""

    def __init__(self, app: Any):
        self.app = app

    def describe(self):
        return []

    def collect(self):
        state = self.app.state
        svc = getattr(state, "services", None)
        router = getattr(svc, "router", None)
        circuit = GaugeMetricFamily("audiorouter_circuit_state", "Circuit breaker state per endpoint (1 for the "
                                    "current state: closed, open or half_open)", labels=["endpoint", "state"])
        health: Any = getattr(router, "health", None)
        for key in sorted(health.endpoints()) if health is not None else ():
            cur = health.state(key)
            for st in ("closed", "open", "half_open"):
                circuit.add_metric([key, st], 1.0 if st == cur else 0.0)
        yield circuit

        depth = GaugeMetricFamily("audiorouter_local_queue_depth", "Local engine jobs running or waiting, per pool",
                                  labels=["pool"])
        running = GaugeMetricFamily("audiorouter_local_running", "Local engine jobs running, per pool",
                                    labels=["pool"])
        rejected = CounterMetricFamily("audiorouter_local_rejected", "Local engine jobs refused (503: queue full)",
                                       labels=["pool"])
        batches = CounterMetricFamily("audiorouter_local_batches", "Whisper decoder batches run", labels=[])
        windows = CounterMetricFamily("audiorouter_local_batch_windows", "30 s windows decoded in those batches "
                                      "(windows / batches = mean batch size)", labels=[])
        waiting = GaugeMetricFamily("audiorouter_local_windows_waiting", "Whisper windows waiting for a batch",
                                    labels=[])
        seen: set[int] = set()
        stats: dict[str, float] = {}
        for adapter in (getattr(router, "adapters", None) or {}).values():
            for attr in ("pool", "stt_pool"):
                pool = getattr(adapter, attr, None)
                if pool is None or id(pool) in seen or not hasattr(pool, "pending"):
                    continue
                seen.add(id(pool))
                name = getattr(pool, "name", attr)
                depth.add_metric([name], float(pool.pending))
                running.add_metric([name], float(getattr(pool, "running", 0)))
                rejected.add_metric([name], float(getattr(pool, "rejected", 0)))
            if not stats and callable(getattr(adapter, "engine_stats", None)):
                stats = adapter.engine_stats()
        if stats:
            batches.add_metric([], float(stats.get("batches", 0)))
            windows.add_metric([], float(stats.get("windows", 0)))
            waiting.add_metric([], float(stats.get("waiting", 0)))
        yield from (depth, running, rejected, batches, windows, waiting)

        writes = getattr(getattr(getattr(state, "store", None), "ledger", None), "writes", None)
        if writes is not None:
            yield GaugeMetricFamily("audiorouter_ledger_pending_writes", "Ledger operations queued, not yet "
                                    "committed", value=float(writes.pending))
            yield GaugeMetricFamily("audiorouter_ledger_writer_lag_seconds", "Age of the oldest ledger operation "
                                    "waiting for its transaction (0: none waiting)", value=float(writes.lag_s))


def install(app: Any) -> None:
    """Registers the live collector and the /metrics route (outside the API auth middleware's prefixes: it
    checks the management key itself)."""
    try:
        metrics.REGISTRY.unregister(_collectors.pop(0))  # a new app in the same process (tests)
    except (IndexError, KeyError):
        pass
    c = LiveCollector(app)
    metrics.REGISTRY.register(c)
    _collectors.append(c)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        store = request.app.state.store
        try:
            p = await auth.authenticate(store, request.scope)
            if p is not None and not p.is_management:
                raise Forbidden("/metrics needs a management key", code="management_key_required")
            if p is None and await store.auth_required():
                raise AuthError("missing API key: /metrics needs a management key", param="Authorization",
                                code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        except GatewayError as e:
            return error_response(e, METRICS_PATH)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


_collectors: list[LiveCollector] = []
