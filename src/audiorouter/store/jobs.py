"""Batch jobs' rows (ar_jobs): the truth about every job, whatever the queue says.

A worker claims a job with one conditional UPDATE (queued, or running with an expired lease) that bumps its
`fence`; it renews the lease while it works and can finish the job only while the fence is still its own.
A worker killed mid-job therefore loses nothing but time: once its lease expires (AUDIOROUTER_JOBS_LEASE_S)
any worker's sweep puts the job back in the queue, and whichever worker finishes it first is the only one
whose result, charge and webhook count. The charge is written in the same transaction as the result."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .db import Database
from .models import Job, utcnow

TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running", *TERMINAL)


class JobStore:
    def __init__(self, db: Database):
        self.db = db

    async def _run(self, fn: Callable[[Connection], Any]) -> Any:
        async with self.db.write_engine.begin() as conn:
            return await conn.run_sync(fn)

    # ---- submit and read ----------------------------------------------------------------------------
    async def create(self, values: dict[str, Any]) -> tuple[Job, bool]:
        """Insert a job; with an idempotency key already used by this caller, the existing job instead.
        Returns (job, created)."""
        now = utcnow()
        values = {"status": "queued", "created_at": now, "enqueued_at": now, "done_s": 0.0, "attempts": 0,
                  "fence": 0, "cost_nano": 0, "webhook_attempts": 0, "purged": False, **values}
        if values.get("webhook_url"):
            values.setdefault("webhook_state", "pending")
        try:
            async with self.db.writer() as s, s.begin():
                s.add(Job(**values))
        except IntegrityError:
            if not values.get("idempotency_key"):
                raise
            job = await self.by_idempotency(values["idempotency_key"])
            if job is None:
                raise
            return job, False
        job = await self.get(values["id"])
        assert job is not None
        return job, True

    async def by_idempotency(self, scoped_key: str) -> Job | None:
        async with self.db.sessions() as s:
            return (await s.execute(select(Job).where(Job.idempotency_key == scoped_key))).scalar_one_or_none()

    async def get(self, job_id: str) -> Job | None:
        async with self.db.sessions() as s:
            return await s.get(Job, job_id)

    async def page(self, key_hash: str | None, *, status: str | None = None, limit: int = 20,
                   before: tuple[datetime, str] | None = None, all_keys: bool = False) -> list[Job]:
        q = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if not all_keys:
            q = q.where(Job.key_hash.is_(None) if key_hash is None else Job.key_hash == key_hash)
        if status:
            q = q.where(Job.status == status)
        if before is not None:
            at, jid = before
            q = q.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < jid)))
        async with self.db.sessions() as s:
            return list((await s.execute(q)).scalars())

    # ---- the worker's side --------------------------------------------------------------------------
    async def claim(self, job_id: str, owner: str, lease_s: float) -> Job | None:
        """Take the job if it is queued, or running under an expired lease (its worker died)."""
        now = utcnow()

        def fn(conn: Connection) -> bool:
            res = conn.execute(update(Job).where(
                Job.id == job_id,
                or_(Job.status == "queued", and_(Job.status == "running", Job.lease_until < now)))
                .values(status="running", lease_owner=owner, lease_until=now + timedelta(seconds=lease_s),
                        fence=Job.fence + 1, attempts=Job.attempts + 1,
                        started_at=func.coalesce(Job.started_at, now)))
            return res.rowcount == 1
        return await self.get(job_id) if await self._run(fn) else None

    async def renew(self, job_id: str, fence: int, lease_s: float, done_s: float | None = None) -> bool:
        """Extend the lease (and record progress); False when the job is no longer ours (cancelled, or
        re-claimed after our lease ran out)."""
        values: dict[str, Any] = {"lease_until": utcnow() + timedelta(seconds=lease_s)}
        if done_s is not None:
            values["done_s"] = done_s
        return await self._run(lambda conn: conn.execute(
            update(Job).where(Job.id == job_id, Job.fence == fence, Job.status == "running").values(**values)
        ).rowcount == 1)

    async def finish(self, job_id: str, fence: int, values: dict[str, Any],
                     also: Callable[[Connection], None] | None = None) -> bool:
        """End the job (succeeded / failed) if it is still ours, and run `also` (the ledger settlement) in
        the same transaction. False: someone else owns it now, nothing was written."""
        def fn(conn: Connection) -> bool:
            res = conn.execute(update(Job).where(Job.id == job_id, Job.fence == fence, Job.status == "running")
                               .values(lease_owner=None, lease_until=None, **values))
            if res.rowcount != 1:
                return False
            if also is not None:
                also(conn)
            return True
        return await self._run(fn)

    async def hand_back(self, job_id: str, fence: int) -> bool:
        """Give a running job back to the queue (SIGTERM): it is claimable at once."""
        return await self._run(lambda conn: conn.execute(
            update(Job).where(Job.id == job_id, Job.fence == fence, Job.status == "running")
            .values(status="queued", lease_owner=None, lease_until=None, attempts=Job.attempts - 1,
                    enqueued_at=utcnow())).rowcount == 1)

    async def cancel(self, job_id: str, values: dict[str, Any],
                     also: Callable[[Connection, Any], None] | None = None) -> Any:
        """Cancel a job that has not ended; returns its row as it was, or None if it had already ended."""
        def fn(conn: Connection) -> Any:
            row = conn.execute(select(Job.__table__).where(Job.id == job_id)).first()
            if row is None or row.status in TERMINAL:
                return None
            res = conn.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "running")))
                               .values(status="cancelled", lease_owner=None, lease_until=None, **values))
            if res.rowcount != 1:
                return None
            if also is not None:
                also(conn, row)
            return row
        return await self._run(fn)

    async def encrypt_plain_secrets(self, prefix: str, encrypt: Callable[[str], str], batch: int = 500) -> int:
        """Rewrite webhook secrets stored in clear (`<prefix><secret>`) encrypted, in batches; each row only if it
        still holds what was read (processes starting at once share the work). Returns how many this one did."""
        done = 0
        while True:
            def fn(conn: Connection) -> tuple[int, int]:
                rows = conn.execute(select(Job.id, Job.webhook_secret).where(Job.webhook_secret.like(prefix + "%"))
                                    .limit(batch)).all()
                n = 0
                for jid, old in rows:
                    n += conn.execute(update(Job).where(Job.id == jid, Job.webhook_secret == old)
                                      .values(webhook_secret=encrypt(str(old)[len(prefix):]))).rowcount
                return len(rows), n
            seen, n = await self._run(fn)
            done += n
            if seen < batch:
                return done

    async def update(self, job_id: str, **values: Any) -> None:
        await self._run(lambda conn: conn.execute(update(Job).where(Job.id == job_id).values(**values)))

    # ---- the sweep ----------------------------------------------------------------------------------
    async def requeue(self, *, queued_older_than_s: float, queued_limit: int, limit: int = 100) -> list[str]:
        """Jobs to put (back) in the queue: running under an expired lease (their worker died), and up to
        `queued_limit` of the oldest jobs queued for longer than `queued_older_than_s` (the caller knows how many
        messages the queue lacks). Each is returned to one sweeper only (enqueued_at moves forward
        conditionally)."""
        now = utcnow()
        quiet = now - timedelta(seconds=queued_older_than_s)

        def fn(conn: Connection) -> list[str]:
            out = []
            expired = conn.execute(select(Job.id).where(Job.status == "running", Job.lease_until < now)
                                   .limit(limit)).scalars().all()
            for jid in expired:  # back to queued: its worker can no longer renew or finish it
                res = conn.execute(update(Job).where(Job.id == jid, Job.status == "running", Job.lease_until < now)
                                   .values(status="queued", lease_owner=None, lease_until=None, enqueued_at=now))
                if res.rowcount == 1:
                    out.append(jid)
            if queued_limit > 0:
                rows = conn.execute(select(Job.id, Job.enqueued_at).where(
                    Job.status == "queued", Job.enqueued_at < quiet).order_by(Job.enqueued_at)
                    .limit(min(limit, queued_limit))).all()
                for jid, at in rows:
                    res = conn.execute(update(Job).where(Job.id == jid, Job.status == "queued", Job.enqueued_at == at)
                                       .values(enqueued_at=now))
                    if res.rowcount == 1:
                        out.append(jid)
            return out
        return await self._run(fn)

    async def any_expired(self) -> bool:
        """Whether a running job's lease has expired (a read: the sweep writes only when there is work)."""
        async with self.db.sessions() as s:
            return (await s.execute(select(Job.id).where(Job.status == "running", Job.lease_until < utcnow())
                                    .limit(1))).first() is not None

    async def waiting_count(self, older_than_s: float) -> int:
        """Jobs queued for longer than `older_than_s` (each should have a message in the queue)."""
        async with self.db.sessions() as s:
            return int((await s.execute(select(func.count()).select_from(Job).where(
                Job.status == "queued", Job.enqueued_at < utcnow() - timedelta(seconds=older_than_s)))).scalar_one())

    async def claim_webhook(self, job_id: str, hold_s: float) -> Job | None:
        """Take the job's webhook delivery when it is due (pending, next_at passed); holds it `hold_s`
        against other workers (a worker killed mid-delivery is retried after that)."""
        now = utcnow()

        def fn(conn: Connection) -> bool:
            return conn.execute(update(Job).where(
                Job.id == job_id, Job.webhook_state == "pending", Job.status.in_(TERMINAL),
                or_(Job.webhook_next_at.is_(None), Job.webhook_next_at <= now))
                .values(webhook_next_at=now + timedelta(seconds=hold_s),
                        webhook_attempts=Job.webhook_attempts + 1)).rowcount == 1
        return await self.get(job_id) if await self._run(fn) else None

    async def overdue_webhooks(self, slack_s: float, limit: int = 100) -> list[str]:
        """Pending webhooks due for more than `slack_s` (their queue message is lost: a worker died mid-delivery,
        or the process that ended the job died before queueing it)."""
        cutoff = utcnow() - timedelta(seconds=slack_s)
        async with self.db.sessions() as s:
            return list((await s.execute(select(Job.id).where(
                Job.webhook_state == "pending", Job.status.in_(TERMINAL),
                or_(and_(Job.webhook_next_at.is_(None), Job.finished_at <= cutoff), Job.webhook_next_at <= cutoff))
                .limit(limit))).scalars())

    async def to_purge(self, limit: int = 100) -> list[Job]:
        async with self.db.sessions() as s:
            return list((await s.execute(select(Job).where(
                Job.purged.is_(False), Job.purge_at.is_not(None), Job.purge_at <= utcnow()).limit(limit))).scalars())
