"""The usage ledger: one generations row per billable request and the spend counters on its key.

Writes go through one group-commit task per process (store/writer.py): every operation queued since its
last transaction is written in ONE transaction, a few statements, as soon as it wakes.

  begin()   queues the generation row as `incomplete`; the request does not wait. A key with a spend limit
            is the exception: the estimate is reserved with a single conditional UPDATE of the key's row
            (the row lock makes it atomic across replicas) and the request waits for that transaction,
            so the limit is checked before any provider is called.
  settle()  charges the actual cost once per generation (guarded by settled = false), releases the
            reservation, records usage and attempts. Queued behind a row not yet written, it makes that row
            final instead (one insert). The key's counters change in the same transaction, summed per key.
  finish()  final status of a streamed answer (success / cancelled / error).
  flush()   waits for everything queued so far: reads (generation, activity, key usage) call it first, so
            they see every request this process has answered.
  sweep()   releases reservations of rows a crashed replica left unsettled, after reservation_ttl_s.

So N concurrent requests can overshoot a key's limit by at most what one request's actual cost exceeds
its estimate. A process killed mid-request leaves an `incomplete` row behind (written within milliseconds of
the request's start, while the provider works); what a hard kill can lose is the last few milliseconds of
queued writes (docs/deployment.md)."""
from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import BigInteger, Table, bindparam, case, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from ..core.errors import PaymentRequired
from .db import Database, rowcount
from .keys import EPOCH, window_start
from .models import ApiKey, Generation, Job, UTCDateTime, to_usd, utcnow
from .writer import GroupCommit, Op

log = logging.getLogger("audiorouter.ledger")
GEN = cast(Table, Generation.__table__)


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


class Charge(NamedTuple):
    """What a settle adds to its key's counters (applied only if the settle takes effect)."""
    key_hash: str
    released: int
    counted: int
    cost: int
    byok: int
    at: datetime


def _big(n: int):
    """An amount as a BIGINT parameter (asyncpg would otherwise infer int4 and reject > 2**31 nano-USD)."""
    return literal(int(n), BigInteger())


def _param(name: str, type_: Any = None):
    return bindparam(name, type_=type_ if type_ is not None else BigInteger())


def _starts(now: datetime) -> dict[str, datetime]:
    return {"day": window_start("daily", now), "week": window_start("weekly", now),
            "month": window_start("monthly", now)}


def _window_exprs():
    """(start of the key's current limit window, its usage so far in that window) as SQL expressions over the
    key row, so they are evaluated under the row lock of the UPDATE itself (parameters: _starts(now))."""
    d, w, m = (_param(n, UTCDateTime()) for n in ("day", "week", "month"))
    ws = case((ApiKey.limit_reset == "daily", d), (ApiKey.limit_reset == "weekly", w),
              (ApiKey.limit_reset == "monthly", m), else_=literal(EPOCH, UTCDateTime()))
    used = case((ApiKey.window_start < ws, _big(0)), else_=ApiKey.window_usage_nano)
    return ws, used


# The batch's statements, built once (SQLAlchemy then reuses their compiled form).
_WS, _USED = _window_exprs()
_RESERVE = (update(ApiKey)
            .where(ApiKey.hash == bindparam("key_hash"), ApiKey.limit_nano.is_not(None),
                   ApiKey.limit_nano - _USED - ApiKey.reserved_nano >= _param("estimate"))
            .values(window_usage_nano=_USED, window_start=_WS, reserved_nano=ApiKey.reserved_nano + _param("estimate")))
_CHARGE = (update(ApiKey).where(ApiKey.hash == bindparam("key_hash"))
           .values(window_usage_nano=_USED + _param("counted"), window_start=_WS,
                   reserved_nano=case((ApiKey.reserved_nano >= _param("released"),
                                       ApiKey.reserved_nano - _param("released")), else_=_big(0)),
                   usage_nano=ApiKey.usage_nano + _param("cost"),
                   byok_usage_nano=ApiKey.byok_usage_nano + _param("byok"),
                   last_used_at=_param("at", UTCDateTime())))
_KEY = select(ApiKey.__table__).where(ApiKey.hash == bindparam("key_hash"))
_UNSETTLED = (select(GEN.c.id).where(GEN.c.id.in_(bindparam("ids", expanding=True)), GEN.c.settled.is_(False))
              .order_by(GEN.c.id).with_for_update())


@functools.lru_cache(maxsize=64)
def _update_by_id(cols: tuple[str, ...], only_incomplete: bool):
    where = [GEN.c.id == bindparam("b_id")] + ([GEN.c.status == "incomplete"] if only_incomplete else [])
    return update(GEN).where(*where).values({c: bindparam("b_" + c) for c in cols})


def _update_each(conn: Connection, items: list[tuple[str, dict[str, Any]]], *, only_incomplete: bool = False) -> None:
    """UPDATE generation rows by id with their own values: one executemany per set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for gid, values in items:
        groups.setdefault(tuple(sorted(values)), []).append({"b_id": gid, **{"b_" + k: v for k, v in values.items()}})
    for cols, params in groups.items():
        conn.execute(_update_by_id(cols, only_incomplete), params)


def _new_row(g: NewGeneration, *, status: str, estimate: int, now: datetime) -> dict[str, Any]:
    return {"id": g.id, "key_hash": g.key_hash, "api_type": g.api_type, "path": g.path[:64], "model": g.model[:200],
                "provider": None, "endpoint": None, "substitute": False, "attempts": [], "seconds": g.seconds,
                "characters": g.characters, "input_tokens": None, "output_tokens": None, "estimate_nano": estimate,
                "reserved_nano": 0, "cost_nano": 0, "upstream_cost_nano": 0, "settled": status != "incomplete",
                "is_byok": False, "streamed": g.streamed, "status": status, "error_type": None, "error_status": None,
                "error_message": None, "latency_ms": None, "generation_time_ms": None,
                "session_id": (g.session_id or None) and g.session_id[:256], "user": (g.user or None) and g.user[:256],
                "user_agent": (g.user_agent or None) and g.user_agent[:512],
                "http_referer": (g.http_referer or None) and g.http_referer[:512], "created_at": now,
                "completed_at": None}


def _refused(err: Any, now: datetime) -> dict[str, Any]:
    """What makes a new row the record of a request refused before any provider was called."""
    return {"status": "error", "settled": True, "reserved_nano": 0,
            "error_type": getattr(err, "code", None) or type(err).__name__,
            "error_status": getattr(err, "status", None), "error_message": str(getattr(err, "message", err))[:2000],
            "completed_at": now, "generation_time_ms": 0.0}


class Ledger:
    def __init__(self, db: Database, reservation_ttl_s: float = 900.0, linger_s: float = 0.0):
        self.db = db
        self.reservation_ttl_s = reservation_ttl_s
        insert = sqlite_insert if db.is_sqlite else pg_insert
        # a retry after a commit whose answer was lost must not write a row twice
        self._insert = insert(GEN).on_conflict_do_nothing()
        self._insert_returning = self._insert.returning(GEN.c.id)
        self.writes = GroupCommit(lambda ops: db.transact(self._write, ops), linger_s=linger_s)

    async def flush(self) -> None:
        await self.writes.flush()

    async def close(self) -> None:
        await self.writes.close()

    async def begin(self, g: NewGeneration, estimate_nano: int, *, limited: bool) -> int:
        """Queue the row as incomplete, and with `limited` reserve `estimate_nano` on the key first, waiting
        for that. Returns the amount reserved. Raises PaymentRequired (after recording the refusal) when the
        estimate exceeds what is left of the limit."""
        row = _new_row(g, status="incomplete", estimate=estimate_nano, now=utcnow())
        if g.key_hash is None or not limited or estimate_nano <= 0:
            await self.writes.put(Op("insert", g.id, row))
            return 0
        done = await self.writes.submit(Op("reserve", g.id, row, key_hash=g.key_hash))
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:  # the request went away: release what gets reserved for it
            done.add_done_callback(lambda f: self._abandon(g, f))
            raise

    def _abandon(self, g: NewGeneration, f: asyncio.Future) -> None:
        if not f.cancelled() and f.exception() is None and f.result():
            self.settle(g.id, g.key_hash, f.result(), Settlement(status="cancelled", error_type="cancelled",
                                                                 error_message="the client went away"))

    async def record_failure(self, g: NewGeneration, err: Any) -> None:
        """A request refused before any provider was called (bad model, no provider, ...)."""
        now = utcnow()
        row = _new_row(g, status="error", estimate=0, now=now)
        row.update(_refused(err, now))
        await self.writes.put(Op("insert", g.id, row))

    def settle(self, gen_id: str, key_hash: str | None, reserved_nano: int, st: Settlement) -> None:
        """Queue the charge (applied once: a generation already settled is left as it is)."""
        self.writes.put_nowait(self.settle_op(gen_id, key_hash, reserved_nano, st))

    def settle_in(self, conn: Connection, gen_id: str, key_hash: str | None, reserved_nano: int,
                  st: Settlement) -> None:
        """The charge, written at once inside the caller's transaction (a batch job settles in the same
        transaction that records its result, so a worker killed in between leaves neither)."""
        self._write(conn, [self.settle_op(gen_id, key_hash, reserved_nano, st)])

    def settle_op(self, gen_id: str, key_hash: str | None, reserved_nano: int, st: Settlement) -> Op:
        now = utcnow()
        values: dict[str, Any] = {
            "settled": True, "reserved_nano": 0, "cost_nano": st.cost_nano, "upstream_cost_nano": st.upstream_cost_nano,
            "is_byok": st.is_byok, "provider": st.provider, "endpoint": st.endpoint, "substitute": st.substitute,
            "attempts": st.attempts, "input_tokens": st.input_tokens, "output_tokens": st.output_tokens,
            "latency_ms": st.latency_ms, "error_type": st.error_type, "error_status": st.error_status,
            "error_message": (st.error_message or None) and st.error_message[:2000], "status": st.status}
        if st.model:
            values["model"] = st.model[:200]
        if st.seconds is not None:
            values["seconds"] = st.seconds
        if st.characters is not None:
            values["characters"] = st.characters
        if st.status != "incomplete":
            values["completed_at"] = now
            values["generation_time_ms"] = st.generation_time_ms
        charge = None if key_hash is None else Charge(key_hash, reserved_nano, st.counted_nano, st.cost_nano,
                                                      st.upstream_cost_nano if st.is_byok else 0, now)
        return Op("settle", gen_id, values, charge=charge)

    def finish(self, gen_id: str, status: str, generation_time_ms: float, error: Any = None) -> None:
        """Queue the final status of a settled, streamed generation."""
        values: dict[str, Any] = {"status": status, "completed_at": utcnow(), "generation_time_ms": generation_time_ms}
        if error is not None:
            values.update(error_type=getattr(error, "code", None) or type(error).__name__,
                          error_message=str(getattr(error, "message", error))[:2000])
        self.writes.put_nowait(Op("finish", gen_id, values))

    # ---- the batch: one transaction ------------------------------------------------------------------
    def _write(self, conn: Connection, ops: list[Op]) -> None:
        """Rows queued with their settle or finish are merged into one insert; settles and finishes of rows
        written before become guarded UPDATEs. Generation rows are locked before key rows, and key rows in
        hash order, so concurrent batches of several replicas cannot deadlock."""
        now = utcnow()
        rows: dict[str, dict[str, Any]] = {}  # new rows
        merged: dict[str, Charge | None] = {}  # settled with their row: charged if the row is new
        settles: dict[str, tuple[dict[str, Any], Charge | None]] = {}  # of rows written before
        finishes: dict[str, dict[str, Any]] = {}
        reserves: dict[str, list[Op]] = {}
        for op in ops:
            if op.kind == "insert":
                rows[op.gid] = dict(op.values)
            elif op.kind == "reserve":
                assert op.key_hash is not None  # only keys with a limit reserve
                reserves.setdefault(op.key_hash, []).append(op)
            elif op.kind == "settle":
                if op.gid in rows:
                    if not rows[op.gid]["settled"]:
                        rows[op.gid].update(op.values)
                        merged[op.gid] = op.charge
                else:
                    settles.setdefault(op.gid, (dict(op.values), op.charge))
            else:  # finish
                target = rows.get(op.gid) or (settles[op.gid][0] if op.gid in settles else None)
                if target is None:
                    finishes.setdefault(op.gid, op.values)
                elif target["status"] == "incomplete":
                    target.update(op.values)
        due: list[Charge | None] = []
        if merged:  # charged only if their row is new (a retried batch may have been committed)
            new = set(conn.execute(self._insert_returning, list(rows.values())).scalars())
            due += [c for gid, c in merged.items() if gid in new]
        elif rows:
            conn.execute(self._insert, list(rows.values()))
        if settles:
            unsettled = conn.execute(_UNSETTLED, {"ids": sorted(settles)}).scalars().all()
            _update_each(conn, [(gid, settles[gid][0]) for gid in unsettled])
            due += [settles[gid][1] for gid in unsettled]
        _update_each(conn, sorted(finishes.items()), only_incomplete=True)
        totals: dict[str, Charge] = {}  # per key
        for c in due:
            if c is not None and (t := totals.get(c.key_hash)) is not None:
                c = Charge(c.key_hash, t.released + c.released, t.counted + c.counted, t.cost + c.cost,
                           t.byok + c.byok, max(t.at, c.at))
            if c is not None:
                totals[c.key_hash] = c
        starts = _starts(now)
        reserved_rows = []
        for key_hash in sorted(totals.keys() | reserves.keys()):
            if key_hash in totals:
                conn.execute(_CHARGE, dict(starts, **totals[key_hash]._asdict()))
            for op in reserves.get(key_hash, ()):
                reserved_rows.append(self._reserve(conn, op, now, starts))
        if reserved_rows:
            conn.execute(self._insert, reserved_rows)

    def _reserve(self, conn: Connection, op: Op, now: datetime, starts: dict[str, datetime]) -> dict[str, Any]:
        """The conditional UPDATE of a reservation; returns the row to insert, op.outcome is the amount
        reserved or the PaymentRequired to raise."""
        row, estimate = dict(op.values), op.values["estimate_nano"]
        res = conn.execute(_RESERVE, dict(starts, key_hash=op.key_hash, estimate=estimate))
        op.outcome = 0
        if res.rowcount:
            row["reserved_nano"] = op.outcome = estimate
        else:
            key = conn.execute(_KEY, {"key_hash": op.key_hash}).first()
            if key is not None and key.limit_nano is not None:
                op.outcome = self._refusal(key, estimate, now)
                row.update(_refused(op.outcome, now))
        return row

    @staticmethod
    def _refusal(row: Any, estimate_nano: int, now: datetime) -> PaymentRequired:
        used = 0 if row.window_start < window_start(row.limit_reset, now) else row.window_usage_nano
        left = max(0, row.limit_nano - used - row.reserved_nano)
        resets = f"; it resets {row.limit_reset}" if row.limit_reset else ""
        return PaymentRequired(
            f"this request's estimated cost ${to_usd(estimate_nano):.6f} exceeds what is left of this key's limit "
            f"(${to_usd(left):.6f} of ${to_usd(row.limit_nano):.6f}{resets}); raise the limit or use another key",
            metadata={"estimated_cost": to_usd(estimate_nano), "limit": to_usd(row.limit_nano),
                      "limit_remaining": to_usd(left), "limit_reset": row.limit_reset},
            code="insufficient_credits")

    async def sweep(self) -> int:
        """Release reservations held by rows nobody settled within the TTL (their replica died). The rows
        stay `incomplete`: what happened upstream is unknown, and nothing is charged."""
        cutoff = utcnow() - timedelta(seconds=self.reservation_ttl_s)
        await self.flush()
        async with self.db.sessions() as s:
            stale = (await s.execute(select(Generation.id, Generation.key_hash, Generation.reserved_nano)
                                     .where(Generation.settled.is_(False), Generation.created_at < cutoff,
                                            # a batch job's row waits for its worker, however long the queue
                                            Generation.id.not_in(select(Job.generation_id)
                                                                 .where(Job.status.in_(("queued", "running")))))
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
            if not rowcount(res):
                return False
            if key_hash is not None and reserved:
                await s.execute(update(ApiKey).where(ApiKey.hash == key_hash)
                                .values(reserved_nano=case((ApiKey.reserved_nano >= _big(reserved),
                                                            ApiKey.reserved_nano - _big(reserved)), else_=_big(0)))
                                .execution_options(synchronize_session=False))
        return True

    async def get(self, gen_id: str) -> Generation | None:
        await self.flush()
        async with self.db.sessions() as s:
            return await s.get(Generation, gen_id)

