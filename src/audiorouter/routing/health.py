"""What the router has measured about each endpoint: a circuit breaker (closed -> open after N consecutive
failures -> half-open single probe after a cool-down) and a short history of latency, throughput and outcomes
that `provider.sort` ("latency" | "throughput") and /models read.

Definitions (per endpoint key "provider/upstream_model"):
- latency: transcription = wall time of the whole upstream call; speech = time until the first audio chunk.
  Kept as an exponentially weighted moving average in milliseconds.
- throughput: transcription = seconds of audio transcribed per wall second; speech = characters synthesized
  per wall second (measured when the stream ends). Also an EWMA.
- uptime: share of successful attempts among the attempts of the last `window_s` seconds.

Everything here runs on the event loop thread; no locking is needed."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

EWMA_ALPHA = 0.3


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_ALPHA * (new - old)


@dataclass
class EndpointHealth:
    key: str
    consecutive_failures: int = 0
    opened_at: float | None = None   # set while the circuit is open (or half-open)
    probing: bool = False            # a half-open probe is in flight
    latency_ms: float | None = None
    throughput: float | None = None
    successes: int = 0
    failures: int = 0
    history: deque = field(default_factory=lambda: deque(maxlen=1024))  # (t, ok)


class HealthBook:
    def __init__(self, threshold: int = 5, cooldown_s: float = 30.0, window_s: float = 1800.0,
                 clock: Callable[[], float] = time.monotonic):
        self.threshold = max(1, int(threshold))
        self.cooldown_s = float(cooldown_s)
        self.window_s = float(window_s)
        self.clock = clock
        self._eps: dict[str, EndpointHealth] = {}

    def endpoints(self) -> list[str]:
        """The endpoints seen so far (/metrics reports their circuit state)."""
        return list(self._eps)

    def get(self, key: str) -> EndpointHealth:
        h = self._eps.get(key)
        if h is None:
            h = self._eps[key] = EndpointHealth(key)
        return h

    # ---- circuit breaker --------------------------------------------------------------------------
    def state(self, key: str) -> str:
        h = self._eps.get(key)
        if h is None or h.opened_at is None:
            return "closed"
        if self.clock() - h.opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def available(self, key: str) -> bool:
        """Whether an attempt may be made now, without claiming the half-open probe."""
        st = self.state(key)
        return st == "closed" or (st == "half_open" and not self.get(key).probing)

    def acquire(self, key: str) -> bool:
        """Claim permission for one attempt. In half-open state only one probe at a time is let through."""
        st = self.state(key)
        if st == "closed":
            return True
        if st == "open":
            return False
        h = self.get(key)
        if h.probing:
            return False
        h.probing = True
        return True

    def retry_in(self, key: str) -> float:
        """Seconds until an open circuit lets a probe through (0 when closed or half-open)."""
        h = self._eps.get(key)
        if h is None or h.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - h.opened_at))

    # ---- outcomes ---------------------------------------------------------------------------------
    def _note(self, h: EndpointHealth, ok: bool) -> None:
        now = self.clock()
        h.history.append((now, ok))
        if ok:
            h.successes += 1
        else:
            h.failures += 1

    def record_success(self, key: str, latency_ms: float, *, units: float | None = None,
                       seconds: float | None = None) -> None:
        h = self.get(key)
        self._note(h, True)
        h.latency_ms = _ewma(h.latency_ms, float(latency_ms))
        if units is not None and seconds:
            self.record_throughput(key, units, seconds)
        h.consecutive_failures = 0
        h.opened_at = None
        h.probing = False

    def record_throughput(self, key: str, units: float, seconds: float) -> None:
        if seconds <= 0 or units <= 0:
            return
        h = self.get(key)
        h.throughput = _ewma(h.throughput, units / seconds)

    def record_failure(self, key: str, *, counts: bool = True) -> None:
        """An attempt failed. `counts` says whether the failure is the endpoint's (5xx, timeout, 429, bad
        key...) rather than the request's; only those move the breaker."""
        h = self.get(key)
        self._note(h, False)
        if not counts:
            h.probing = False
            return
        h.consecutive_failures += 1
        if h.probing or h.consecutive_failures >= self.threshold:
            h.opened_at = self.clock()  # (re)open: a failed half-open probe restarts the cool-down
        h.probing = False

    def release(self, key: str) -> None:
        """An acquired attempt ended without an outcome for the endpoint (e.g. the request was bad)."""
        h = self._eps.get(key)
        if h is not None:
            h.probing = False

    # ---- read side --------------------------------------------------------------------------------
    def latency(self, key: str) -> float | None:
        h = self._eps.get(key)
        return h.latency_ms if h else None

    def throughput(self, key: str) -> float | None:
        h = self._eps.get(key)
        return h.throughput if h else None

    def uptime(self, key: str) -> float | None:
        h = self._eps.get(key)
        if h is None:
            return None
        since = self.clock() - self.window_s
        recent = [ok for t, ok in h.history if t >= since]
        if not recent:
            return None
        return sum(recent) / len(recent)

    def snapshot(self, key: str) -> dict:
        h = self._eps.get(key)
        return {
            "circuit": self.state(key),
            "consecutive_failures": h.consecutive_failures if h else 0,
            "latency_ms": round(h.latency_ms, 1) if h and h.latency_ms is not None else None,
            "throughput": round(h.throughput, 3) if h and h.throughput is not None else None,
            "uptime": self.uptime(key),
        }
