"""Prometheus metrics (prometheus-client) that any layer records into, and the per-request context they
share: which model and provider served a request, noted where the route is known (api/generations.py), read
back by the request's metrics middleware (api/metrics.py) once the status is known; and the generation id,
which JSON log lines carry (core/logs.py).

One registry per process (REGISTRY). Labels are bounded: routes are the server's own paths (ids replaced),
models and providers come from the catalog, never from what a client typed. Recording is off when
`set_enabled(False)` (AUDIOROUTER_METRICS=false): every helper returns at once.

Metrics read from live objects at scrape time (circuit state, local engine queues, ledger writer lag) are
collected by api/metrics.py, not here."""
from __future__ import annotations

import contextvars
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)
_on = {"recording": True}  # AUDIOROUTER_METRICS


class Family:
    """A counter or histogram kept as plain numbers per label values and exported when Prometheus scrapes.
    prometheus-client's own metric objects validate labels and take a lock on every update (~3 µs for
    labels(), ~1.5 µs for inc(), ~3 µs for observe()); these are updated from the event loop's thread only
    (the request path), where an update is a dict lookup and an addition."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...] | None = None):
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.values: dict[tuple[str, ...], Any] = {}  # counter: float; histogram: [per-bucket counts..., +Inf, sum]
        REGISTRY.register(self)

    def inc(self, key: tuple[str, ...], n: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + n

    def observe(self, key: tuple[str, ...], v: float) -> None:
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0] * (len(self.buckets or ()) + 1) + [0.0]
        row[bisect_left(self.buckets or (), v)] += 1  # the first bucket whose bound is >= v (le is inclusive)
        row[-1] += v

    def count(self, key: tuple[str, ...]) -> float:
        v = self.values.get(key)
        return 0.0 if v is None else float(v if self.buckets is None else sum(v[:-1]))

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        if self.buckets is None:
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for key, v in list(self.values.items()):
                counter.add_metric(key, v)
            yield counter
            return
        hist = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for key, row in list(self.values.items()):
            acc, cum = 0, []
            for bound, c in zip(bounds, row[:-1]):
                acc += c
                cum.append((bound, acc))
            hist.add_metric(key, cum, row[-1])
        yield hist


# request latency: sub-millisecond relays up to long transcriptions
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                   300.0)
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUEST_LABELS = ("route", "model", "provider", "status")

REQUESTS = Family("audiorouter_requests", "API requests answered, by route, serving model and provider, and HTTP "
                  "status", REQUEST_LABELS)
LATENCY = Family("audiorouter_request_duration_seconds", "Time from the request's arrival to the end of its answer "
                 "(streams: the last byte)", REQUEST_LABELS, LATENCY_BUCKETS)
BYTES_IN = Family("audiorouter_request_bytes", "Request body bytes received", ("route",))
BYTES_OUT = Family("audiorouter_response_bytes", "Response body bytes sent", ("route",))
UPSTREAM = Family("audiorouter_upstream_attempts", "Calls to upstream providers, by outcome: ok, client_error "
                  "(4xx), rate_limited (429), server_error (5xx), timeout, connect_error, transport_error",
                  ("provider", "outcome"))
UPSTREAM_LATENCY = Family("audiorouter_upstream_duration_seconds", "Time to an upstream's answer head",
                          ("provider",), UPSTREAM_BUCKETS)
CACHE = Family("audiorouter_cache_lookups", "Requests served (hit) or not (miss) from the transcript cache",
               ("result",))

# per request: {"model": ..., "provider": ...}, filled in where the route is known
_served: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("audiorouter_served", default=None)
# the generation id of the request being served (log lines carry it)
generation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("audiorouter_generation_id", default=None)


def set_enabled(on: bool) -> None:
    _on["recording"] = bool(on)


def enabled() -> bool:
    return _on["recording"]


def begin_request() -> dict[str, Any]:
    """A fresh per-request record, made current for this task and the tasks it starts."""
    d: dict[str, Any] = {}
    _served.set(d)
    return d


def note_served(model: str | None, provider: str | None, cache_hit: bool | None = None) -> None:
    """What served the current request (catalog model id, provider slug); called once the route is known."""
    d = _served.get()
    if d is not None:
        d["model"] = model or ""
        d["provider"] = provider or ""
    if _on["recording"] and cache_hit is not None:
        CACHE.inc(("hit" if cache_hit else "miss",))


def upstream_attempt(provider: str, outcome: str, seconds: float | None = None) -> None:
    if not _on["recording"]:
        return
    UPSTREAM.inc((provider, outcome))
    if seconds is not None:
        UPSTREAM_LATENCY.observe((provider,), seconds)


def outcome_of_status(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "client_error" if status < 500 else "server_error"
