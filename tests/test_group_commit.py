"""The ledger's group commit (store/writer.py): how operations are gathered into transactions. The
transaction function is injected; here it records the batches it is given."""
from __future__ import annotations

import asyncio
import time

from audiorouter.store.writer import GroupCommit, Op


def recorder():
    batches: list[tuple[float, list[str]]] = []

    async def transact(ops):
        batches.append((time.monotonic(), [op.gid for op in ops]))
        for op in ops:
            op.outcome = op.gid
    return batches, transact


async def test_lingering_gathers_a_window_of_operations_into_one_transaction():
    batches, transact = recorder()
    gc = GroupCommit(transact, linger_s=0.05)
    t0 = time.monotonic()
    for i in range(5):
        gc.put_nowait(Op("insert", f"g{i}", {}))
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.1)
    assert [ids for _, ids in batches] == [["g0", "g1", "g2", "g3", "g4"]]
    assert batches[0][0] - t0 >= 0.045  # written once the window closed, not per operation
    await gc.close()


async def test_a_waiting_caller_or_a_flush_cuts_the_window_short():
    batches, transact = recorder()
    gc = GroupCommit(transact, linger_s=5.0)
    gc.put_nowait(Op("insert", "a", {}))
    fut = await gc.submit(Op("reserve", "b", {}))
    assert await asyncio.wait_for(fut, 1.0) == "b"  # not after 5 s
    assert [ids for _, ids in batches] == [["a", "b"]]
    gc.put_nowait(Op("insert", "c", {}))
    await asyncio.wait_for(gc.flush(), 1.0)
    assert [ids for _, ids in batches] == [["a", "b"], ["c"]]
    await gc.close()


async def test_a_full_batch_is_written_without_waiting_for_the_window():
    batches, transact = recorder()
    gc = GroupCommit(transact, linger_s=5.0, batch_max=3)
    for i in range(3):
        gc.put_nowait(Op("insert", f"g{i}", {}))
    await asyncio.sleep(0.05)
    assert [ids for _, ids in batches] == [["g0", "g1", "g2"]]
    await gc.close()


async def test_without_linger_every_wake_writes_at_once():
    batches, transact = recorder()
    gc = GroupCommit(transact)
    gc.put_nowait(Op("insert", "x", {}))
    await asyncio.sleep(0.01)
    assert [ids for _, ids in batches] == [["x"]]
    await gc.close()
