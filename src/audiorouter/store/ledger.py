"""The usage ledger: one generations row per billable request and the spend counters on its key.

  begin()   one transaction: reserve the estimate on the key with a single conditional UPDATE (the row lock
            makes it atomic across replicas) and insert the generation row as `incomplete`.
  settle()  one transaction, once per generation (guarded by settled = false): charge the actual cost,
            release the reservation, record usage and attempts.
  finish()  final status of a streamed answer (success / cancelled / error).
  sweep()   releases reservations of rows a crashed replica left unsettled, after reservation_ttl_s.

So N concurrent requests can overshoot a key's limit by at most what one request's actual cost exceeds
its estimate, and a crash leaves an `incomplete` row behind, never a missing one."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, case, literal, select, update

from ..core.errors import PaymentRequired
from .db import Database
from .keys import EPOCH, window_start
from .models import ApiKey, Generation, UTCDateTime, to_usd, utcnow

log = logging.getLogger("audiorouter.ledger")


@dataclass
class NewGeneration:
    id: str
    api_type: str  # stt | tts
    path: str
    model: str
    key_hash: str | None = None
    session_id: str | None = None
    user: str | None = None
    user_agent: str | None = None
    http_referer: str | None = None
    streamed: bool = False
    seconds: float | None = None
    characters: int | None = None


@dataclass
class Settlement:
    status: str  # success | error | incomplete (streaming: charged, still sending)
    cost_nano: int = 0  # charged to the key
    counted_nano: int = 0  # of which counts toward the key's limit
    upstream_cost_nano: int = 0  # list price of what was served
    is_byok: bool = False
    model: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    substitute: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    characters: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    generation_time_ms: float | None = None
    error_type: str | None = None
    error_status: int | None = None
    error_message: str | None = None


def _big(n: int):
    """An amount as a BIGINT parameter (asyncpg would otherwise infer int4 and reject > 2**31 nano-USD)."""
    return literal(int(n), BigInteger())


def _starts(now: datetime):
    return (literal(window_start("daily", now), UTCDateTime()), literal(window_start("weekly", now), UTCDateTime()),
            literal(window_start("monthly", now), UTCDateTime()))


def _window_exprs(now: datetime):
    """(start of the key's current limit window, its usage so far in that window) as SQL expressions over the
    key row, so they are evaluated under the row lock of the UPDATE itself."""
    d, w, m = _starts(now)
    ws = case((ApiKey.limit_reset == "daily", d), (ApiKey.limit_reset == "weekly", w),
              (ApiKey.limit_reset == "monthly", m), else_=literal(EPOCH, UTCDateTime()))
    used = case((ApiKey.window_start < ws, _big(0)), else_=ApiKey.window_usage_nano)
    return ws, used


class Ledger:
    def __init__(self, db: Database, reservation_ttl_s: float = 900.0):
        self.db = db
        self.reservation_ttl_s = reservation_ttl_s

    def _row(self, g: NewGeneration, *, status: str, reserved: int, estimate: int, now: datetime) -> Generation:
        return Generation(id=g.id, key_hash=g.key_hash, api_type=g.api_type, path=g.path[:64], model=g.model[:200],
                          provider=None, endpoint=None, substitute=False, attempts=[], seconds=g.seconds,
                          characters=g.characters, input_tokens=None, output_tokens=None, estimate_nano=estimate,
                          reserved_nano=reserved, cost_nano=0, upstream_cost_nano=0, settled=status != "incomplete",
                          is_byok=False, streamed=g.streamed, status=status, error_type=None, error_status=None,
                          error_message=None, latency_ms=None, generation_time_ms=None,
                          session_id=(g.session_id or None) and g.session_id[:256], user=(g.user or None) and g.user[:256],
                          user_agent=(g.user_agent or None) and g.user_agent[:512],
                          http_referer=(g.http_referer or None) and g.http_referer[:512], created_at=now)

    async def begin(self, g: NewGeneration, estimate_nano: int, *, limited: bool) -> int:
        """Reserve `estimate_nano` on the key (when it has a limit) and insert the row as incomplete.
        Returns the amount reserved. Raises PaymentRequired (after recording the refusal) when the estimate
        exceeds what is left of the limit."""
        now = utcnow()
        reserved = 0
        refusal: PaymentRequired | None = None
        async with self.db.writer() as s:
            async with s.begin():
                if g.key_hash is not None and limited and estimate_nano > 0:
                    ws, used = _window_exprs(now)
                    res = await s.execute(
                        update(ApiKey)
                        .where(ApiKey.hash == g.key_hash, ApiKey.limit_nano.is_not(None),
                               ApiKey.limit_nano - used - ApiKey.reserved_nano >= _big(estimate_nano))
                        .values(window_usage_nano=used, window_start=ws,
                                reserved_nano=ApiKey.reserved_nano + _big(estimate_nano))
                        .execution_options(synchronize_session=False))
                    if res.rowcount:
                        reserved = estimate_nano
                    else:
                        row = await s.get(ApiKey, g.key_hash)
                        if row is not None and row.limit_nano is not None:
                            refusal = self._refusal(row, estimate_nano, now)
                if refusal is not None:
                    s.add(self._failed(g, refusal, estimate_nano, now))
                else:
                    s.add(self._row(g, status="incomplete", reserved=reserved, estimate=estimate_nano, now=now))
        if refusal is not None:
            raise refusal
        return reserved

    @staticmethod
    def _refusal(row: ApiKey, estimate_nano: int, now: datetime) -> PaymentRequired:
        used = 0 if row.window_start < window_start(row.limit_reset, now) else row.window_usage_nano
        left = max(0, row.limit_nano - used - row.reserved_nano)
        resets = f"; it resets {row.limit_reset}" if row.limit_reset else ""
        return PaymentRequired(
            f"this request's estimated cost ${to_usd(estimate_nano):.6f} exceeds what is left of this key's limit "
            f"(${to_usd(left):.6f} of ${to_usd(row.limit_nano):.6f}{resets}); raise the limit or use another key",
            metadata={"estimated_cost": to_usd(estimate_nano), "limit": to_usd(row.limit_nano),
                      "limit_remaining": to_usd(left), "limit_reset": row.limit_reset},
            code="insufficient_credits")

    def _failed(self, g: NewGeneration, err: Any, estimate_nano: int, now: datetime) -> Generation:
        row = self._row(g, status="error", reserved=0, estimate=estimate_nano, now=now)
        row.error_type = getattr(err, "code", None) or type(err).__name__
        row.error_status = getattr(err, "status", None)
        row.error_message = str(getattr(err, "message", err))[:2000]
        row.completed_at = now
        row.generation_time_ms = 0.0
        return row

    async def record_failure(self, g: NewGeneration, err: Any) -> None:
        """A request refused before any provider was called (bad model, no provider, ...)."""
        async with self.db.writer() as s, s.begin():
            s.add(self._failed(g, err, 0, utcnow()))

    async def settle(self, gen_id: str, key_hash: str | None, reserved_nano: int, st: Settlement) -> bool:
        """Charge once: returns False if this generation was already settled."""
        now = utcnow()
        values: dict[str, Any] = dict(
            settled=True, reserved_nano=0, cost_nano=st.cost_nano, upstream_cost_nano=st.upstream_cost_nano,
            is_byok=st.is_byok, provider=st.provider, endpoint=st.endpoint, substitute=st.substitute,
            attempts=st.attempts, input_tokens=st.input_tokens, output_tokens=st.output_tokens,
            latency_ms=st.latency_ms, error_type=st.error_type, error_status=st.error_status,
            error_message=(st.error_message or None) and st.error_message[:2000], status=st.status)
        if st.model:
            values["model"] = st.model[:200]
        if st.seconds is not None:
            values["seconds"] = st.seconds
        if st.characters is not None:
            values["characters"] = st.characters
        if st.status != "incomplete":
            values["completed_at"] = now
            values["generation_time_ms"] = st.generation_time_ms
        async with self.db.writer() as s, s.begin():
            res = await s.execute(update(Generation).where(Generation.id == gen_id, Generation.settled.is_(False))
                                  .values(**values).execution_options(synchronize_session=False))
            if not res.rowcount:
                return False
            if key_hash is not None:
                ws, used = _window_exprs(now)
                await s.execute(
                    update(ApiKey).where(ApiKey.hash == key_hash)
                    .values(window_usage_nano=used + _big(st.counted_nano), window_start=ws,
                            reserved_nano=case((ApiKey.reserved_nano >= _big(reserved_nano),
                                                ApiKey.reserved_nano - _big(reserved_nano)), else_=_big(0)),
                            usage_nano=ApiKey.usage_nano + _big(st.cost_nano),
                            byok_usage_nano=ApiKey.byok_usage_nano + _big(st.upstream_cost_nano if st.is_byok else 0),
                            last_used_at=now)
                    .execution_options(synchronize_session=False))
        return True

    async def finish(self, gen_id: str, status: str, generation_time_ms: float, error: Any = None) -> None:
        """Final status of a settled, streamed generation."""
        values: dict[str, Any] = dict(status=status, completed_at=utcnow(), generation_time_ms=generation_time_ms)
        if error is not None:
            values.update(error_type=getattr(error, "code", None) or type(error).__name__,
                          error_message=str(getattr(error, "message", error))[:2000])
        async with self.db.writer() as s, s.begin():
            await s.execute(update(Generation).where(Generation.id == gen_id, Generation.status == "incomplete")
                            .values(**values).execution_options(synchronize_session=False))

    async def sweep(self) -> int:
        """Release reservations held by rows nobody settled within the TTL (their replica died). The rows
        stay `incomplete`: what happened upstream is unknown, and nothing is charged."""
        cutoff = utcnow() - timedelta(seconds=self.reservation_ttl_s)
        async with self.db.sessions() as s:
            stale = (await s.execute(select(Generation.id, Generation.key_hash, Generation.reserved_nano)
                                     .where(Generation.settled.is_(False), Generation.created_at < cutoff)
                                     .limit(200))).all()
        n = 0
        for gid, key_hash, reserved in stale:
            st = Settlement(status="incomplete", error_type="abandoned",
                            error_message=f"not settled within {self.reservation_ttl_s:.0f} s (the serving process "
                                          "stopped?); reservation released, nothing charged")
            if await self._release(gid, key_hash, reserved, st):
                n += 1
        if n:
            log.warning("released the reservations of %d abandoned generation(s)", n)
        return n

    async def _release(self, gid: str, key_hash: str | None, reserved: int, st: Settlement) -> bool:
        async with self.db.writer() as s, s.begin():
            res = await s.execute(update(Generation).where(Generation.id == gid, Generation.settled.is_(False))
                                  .values(settled=True, reserved_nano=0, error_type=st.error_type,
                                          error_message=st.error_message)
                                  .execution_options(synchronize_session=False))
            if not res.rowcount:
                return False
            if key_hash is not None and reserved:
                await s.execute(update(ApiKey).where(ApiKey.hash == key_hash)
                                .values(reserved_nano=case((ApiKey.reserved_nano >= _big(reserved),
                                                            ApiKey.reserved_nano - _big(reserved)), else_=_big(0)))
                                .execution_options(synchronize_session=False))
        return True

    async def get(self, gen_id: str) -> Generation | None:
        async with self.db.sessions() as s:
            return await s.get(Generation, gen_id)
