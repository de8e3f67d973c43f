"""Group commit: one task per process writes every operation queued since its last transaction in ONE
transaction. Callers do not wait, unless they ask to (`submit`): then they get the operation's outcome once
its transaction has committed. After the first operation of a batch arrives the writer lingers up to
`linger_s` for more, unless somebody waits (a `submit`, a `flush`) or the batch is already `batch_max` long:
at low concurrency that turns a transaction (or two) per request into one per window, and a request's row
and its settlement into one insert, off the request's own CPU time. What a hard kill can lose grows to that
window (docs/deployment.md).

Failures lose nothing silently: a transient error (connection, lock, timeout) is retried with backoff,
with the operations waiting; an error that would repeat (a row the database refuses) makes the batch
written one generation at a time, and only the refused generation's operations are dropped, with an error
in the log (no values: they may carry user data). A waiting caller gets the error at once instead, also
one whose operation is queued behind a failing batch (its request answers 503 rather than waiting out the
outage; the operation is dropped unwritten). At most `max_pending` operations queue; `put` then waits for
room (back-pressure)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import exc as sa_exc

log = logging.getLogger("audiorouter.ledger")


def transient(e: BaseException) -> bool:
    """Worth retrying as it is (the database or the connection to it), as opposed to a refused row."""
    if isinstance(e, (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)):
        return False
    return isinstance(e, (sa_exc.DBAPIError, sa_exc.DisconnectionError, sa_exc.TimeoutError, OSError, TimeoutError))


class Op:
    """One queued write. `gid` groups the operations of one generation; `outcome` is set by the batch
    writer for a caller that waits (`future`)."""
    __slots__ = ("charge", "future", "gid", "key_hash", "kind", "outcome", "queued_at", "values")

    def __init__(self, kind: str, gid: str, values: dict[str, Any], key_hash: str | None = None, charge: Any = None):
        self.kind, self.gid, self.values, self.key_hash, self.charge = kind, gid, values, key_hash, charge
        self.queued_at = time.monotonic()  # the writer's lag (/metrics)
        self.future: asyncio.Future | None = None
        self.outcome: Any = None


class GroupCommit:
    """transact(ops) writes one batch in one transaction (store/db.py Database.transact)."""

    def __init__(self, transact: Callable[[list[Op]], Awaitable[None]], *, max_pending: int = 10_000,
                 linger_s: float = 0.0, batch_max: int = 500):
        self._transact, self.max_pending = transact, max_pending
        self.linger_s, self.batch_max = linger_s, batch_max
        self._hurry = asyncio.Event()  # somebody waits: write now
        self._ops: list[Op] = []
        self._queued = 0  # operations ever queued
        self._done = 0  # the first _done of them are written (or given up on)
        self._wake = asyncio.Event()
        self._cond = asyncio.Condition()  # room in the queue, progress of _done
        self._task: asyncio.Task | None = None
        self.retry_delay_s = 0.05

    def put_nowait(self, op: Op) -> None:
        """Queue without waiting for room (for operations that finish what a `put` started)."""
        self._ops.append(op)
        self._queued += 1
        self._wake.set()
        if op.future is not None or len(self._ops) >= self.batch_max:
            self._hurry.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def put(self, op: Op) -> None:
        if len(self._ops) >= self.max_pending:
            async with self._cond:
                await self._cond.wait_for(lambda: len(self._ops) < self.max_pending)
        self.put_nowait(op)

    async def submit(self, op: Op) -> asyncio.Future:
        """Queue op; the future gets its outcome (or the error) once its transaction is over."""
        op.future = asyncio.get_running_loop().create_future()
        await self.put(op)
        return op.future

    async def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until everything queued so far is written (read-your-writes). Gives up after timeout (the
        database is down: the read that follows will say so)."""
        target = self._queued
        if self._done >= target:
            return
        self._hurry.set()
        async with self._cond:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._cond.wait_for(lambda: self._done >= target), timeout)

    @property
    def lag_s(self) -> float:
        """How long the oldest operation not yet in a transaction has waited (0 when none waits): /metrics."""
        return max(0.0, time.monotonic() - self._ops[0].queued_at) if self._ops else 0.0

    @property
    def pending(self) -> int:
        return self._queued - self._done

    async def close(self, timeout: float = 10.0) -> None:
        await self.flush(timeout)
        if self.pending:
            log.error("%d ledger write(s) could not be stored before shutdown (database unreachable)", self.pending)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def _refuse_waiting(self, e: BaseException) -> None:
        """The database fails: callers waiting on operations queued behind the failing batch get the error now,
        not after the outage (their operations stay queued, and are dropped unwritten when their turn comes)."""
        for op in self._ops:
            if op.future is not None and not op.future.done():
                op.future.set_exception(e)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.linger_s > 0 and not self._hurry.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self.linger_s)
            self._hurry.clear()
            while self._ops:
                ops, self._ops = self._ops, []
                upto = self._queued
                async with self._cond:
                    self._cond.notify_all()
                await self._commit(ops)
                self._done = upto
                async with self._cond:
                    self._cond.notify_all()

    async def _commit(self, ops: list[Op]) -> None:
        ops = [op for op in ops if op.future is None or not op.future.done()]  # refused while queued
        delay = self.retry_delay_s
        while ops:
            try:
                await self._transact(ops)
            except Exception as e:
                for op in ops:
                    if op.future is not None and not op.future.done():
                        op.future.set_exception(e)
                ops = [op for op in ops if op.future is None]
                if not ops:
                    return
                if transient(e):
                    self._refuse_waiting(e)
                    log.warning("ledger write of %d operation(s) failed (%s); retrying in %.2f s", len(ops),
                                type(e).__name__, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                groups: dict[str, list[Op]] = {}
                for op in ops:
                    groups.setdefault(op.gid, []).append(op)
                if len(groups) == 1:
                    log.error("ledger: the database refused the writes of generation %s (%s); they are dropped",
                              ops[0].gid, type(e).__name__)
                    return
                for group in groups.values():
                    await self._commit(group)
                return
            for op in ops:
                if op.future is not None and not op.future.done():
                    if isinstance(op.outcome, BaseException):
                        op.future.set_exception(op.outcome)
                    else:
                        op.future.set_result(op.outcome)
            return
