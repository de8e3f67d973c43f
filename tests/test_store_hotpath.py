"""The store's request path without database round trips, in-process on SQLite and PostgreSQL: cached auth
mode, keys and BYOK keys (dropped at once by a write, heard from other processes, expiring after the TTL),
and the ledger's group commit (read-your-writes, one charge per generation even when a transaction is
retried, spend limits under concurrency, back-pressure, shutdown flush, transient and refused writes)."""
from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from audiorouter.config import Settings
from audiorouter.core.errors import PaymentRequired
from audiorouter.store import Store
from audiorouter.store.ledger import NewGeneration, Settlement
from audiorouter.store.writer import GroupCommit, Op
from test_keys_support import PgDatabase

TTL = 30.0  # long: what these tests see comes from invalidation, not from expiry (unless they say so)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    if request.param == "sqlite":
        yield None
        return
    pg = PgDatabase().create()
    yield pg.url
    pg.drop()


async def open_store(tmp_path, url=None, **kw) -> Store:
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=url, secret_key="test-secret",
                        key_cache_ttl_s=kw.pop("ttl", TTL), **kw)
    store = Store(settings)
    await store.start(check_bind=False)
    return store


@pytest.fixture
async def store(tmp_path, backend):
    store = await open_store(tmp_path, backend)
    yield store
    await store.close()


TOKENS: dict[str, str] = {}  # key hash -> its secret


async def new_key(store: Store, **kw):
    """(key row, its Principal as the request path sees it)."""
    row, secret = await store.keys.create(name="k", **kw)
    TOKENS[row.hash] = secret
    return row, await store.keys.lookup(secret)


def gen(key_hash: str | None, **kw) -> NewGeneration:
    return NewGeneration(id="gen-" + uuid.uuid4().hex, api_type="tts", path="/api/v1/audio/speech", model="m",
                         key_hash=key_hash, characters=10, **kw)


def served(cost: int, status: str = "success") -> Settlement:
    return Settlement(status=status, cost_nano=cost, counted_nano=cost, upstream_cost_nano=cost, model="m",
                      provider="local", endpoint="local/hibari", attempts=[{"provider": "local", "status": 200}])


class Statements:
    """Counts the statements the request-path engine runs (the writer has its own connection)."""

    def __init__(self, store: Store):
        self.n = 0
        event.listen(store.db.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, *a) -> None:
        self.n += 1


async def test_request_path_reads_no_database_and_writes_through_the_group_commit(store):
    row, p = await new_key(store)
    await store.byok.create(provider="openai", key="sk-mine", name=None, allowed_api_key_hashes=None,
                            allowed_models=None, disabled=False, is_fallback=False)
    assert await store.byok.keys_for(p.hash, ["m"]) == {"openai": "sk-mine"}
    reads = Statements(store)
    for _ in range(20):
        assert await store.auth_required()
        assert await store.keys.lookup(TOKENS[p.hash]) == p
        assert await store.byok.keys_for(p.hash, ["m"]) == {"openai": "sk-mine"}
        g = gen(p.hash)
        assert await store.ledger.begin(g, 100, limited=False) == 0
        store.ledger.settle(g.id, p.hash, 0, served(70))
    assert reads.n == 0
    got = await store.ledger.get(g.id)  # read-your-writes: no waiting, no polling
    assert got.status == "success" and got.settled and got.cost_nano == 70 and got.attempts[0]["status"] == 200
    key = await store.keys.get(row.hash)
    assert key.usage_nano == 20 * 70 and key.last_used_at is not None


async def test_key_changes_apply_to_the_next_lookup(store):
    row, p = await new_key(store)
    assert p.limit_nano is None
    await store.keys.update(row.hash, {"limit": 1.0, "rate_limit_rpm": 7})
    p = await store.keys.lookup(TOKENS[row.hash])
    assert p.limit_nano == 10**9 and p.rate_limit_rpm == 7
    await store.keys.update(row.hash, {"disabled": True})
    assert (await store.keys.lookup(TOKENS[row.hash])).disabled
    await store.keys.delete(row.hash)
    assert await store.keys.lookup(TOKENS[row.hash]) is None
    # an unknown token is remembered as unknown, until a key with that secret appears
    secret = "sk-ar-v1-" + uuid.uuid4().hex + uuid.uuid4().hex
    assert await store.keys.lookup(secret) is None
    await store.keys.create(name="late", secret=secret)
    assert (await store.keys.lookup(secret)).name == "late"


async def test_byok_changes_apply_to_the_next_request(store):
    made = await store.byok.create(provider="openai", key="sk-one", name=None, allowed_api_key_hashes=None,
                                   allowed_models=None, disabled=False, is_fallback=False)
    assert await store.byok.keys_for("h", ["a/b"]) == {"openai": "sk-one"}
    await store.byok.update(made.id, {"key": "sk-two"})
    assert await store.byok.keys_for("h", ["a/b"]) == {"openai": "sk-two"}
    await store.byok.update(made.id, {"allowed_models": ["c/d"]})
    assert await store.byok.keys_for("h", ["a/b"]) == {}
    assert await store.byok.keys_for("h", ["a/b", "c/d"]) == {"openai": "sk-two"}
    await store.byok.update(made.id, {"allowed_models": None, "allowed_api_key_hashes": ["other"]})
    assert await store.byok.keys_for("h", ["a/b"]) == {}
    await store.byok.delete(made.id)
    assert await store.byok.keys_for("other", ["a/b"]) == {}


async def test_changes_by_another_process_are_heard(tmp_path, backend):
    """Two stores on one database stand for two processes: PostgreSQL NOTIFY or the SQLite stamp file."""
    url = backend or f"sqlite:///{tmp_path}/shared.db"
    a, b = await open_store(tmp_path / "a", url), await open_store(tmp_path / "b", url)
    try:
        row, _p = await new_key(b)
        assert not (await a.keys.lookup(TOKENS[row.hash])).disabled  # now cached in a
        await b.keys.update(row.hash, {"disabled": True})
        for _ in range(100):  # NOTIFY arrives within milliseconds; the stamp is seen at the next lookup
            if (await a.keys.lookup(TOKENS[row.hash])).disabled:
                break
            await asyncio.sleep(0.01)
        assert (await a.keys.lookup(TOKENS[row.hash])).disabled
        await b.byok.create(provider="openai", key="sk-b", name=None, allowed_api_key_hashes=None,
                            allowed_models=None, disabled=False, is_fallback=False)
        for _ in range(100):
            if await a.byok.keys_for(None, ["m"]):
                break
            await asyncio.sleep(0.01)
        assert await a.byok.keys_for(None, ["m"]) == {"openai": "sk-b"}
    finally:
        await a.close()
        await b.close()


async def test_a_change_nobody_announced_applies_after_the_ttl(tmp_path):
    store = await open_store(tmp_path, ttl=0.3)
    try:
        row, p = await new_key(store)
        assert not p.disabled
        async with store.db.writer() as s, s.begin():  # behind the store's back: no notice
            await s.execute(text("UPDATE ar_api_keys SET disabled = 1 WHERE hash = :h"), {"h": row.hash})
        assert not (await store.keys.lookup(TOKENS[row.hash])).disabled  # the cached copy, for at most the TTL
        await asyncio.sleep(0.35)
        assert (await store.keys.lookup(TOKENS[row.hash])).disabled
    finally:
        await store.close()


async def test_auth_turns_on_when_another_process_creates_the_first_key(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    a, b = await open_store(tmp_path / "a", url), await open_store(tmp_path / "b", url)
    try:
        assert not await a.auth_required()
        await b.keys.create(name="first")
        await asyncio.sleep(0.012)  # the stamp file is looked at at most every 10 ms
        assert await a.auth_required()
    finally:
        await a.close()
        await b.close()


async def test_spend_limit_holds_under_concurrent_requests(store):
    row, p = await new_key(store, limit=10.5e-6)  # room for 10 estimates of 1000 nano-USD

    async def one() -> str:
        g = gen(p.hash)
        try:
            reserved = await store.ledger.begin(g, 1000, limited=True)
        except PaymentRequired:
            return "402"
        await asyncio.sleep(0.01)  # the provider
        store.ledger.settle(g.id, p.hash, reserved, served(1000))
        return "200"

    codes = await asyncio.gather(*(one() for _ in range(40)))
    assert codes.count("200") == 10 and codes.count("402") == 30
    key = await store.keys.get(row.hash)
    assert key.usage_nano == key.window_usage_nano == 10_000 and key.reserved_nano == 0
    async with store.db.sessions() as s:  # every refusal is on record too
        refused = await s.scalar(text("SELECT COUNT(*) FROM ar_generations WHERE error_type = 'insufficient_credits'"))
    assert refused == 30


async def test_settle_queued_with_its_row_is_one_final_insert_charged_once(store):
    row, p = await new_key(store)
    g = gen(p.hash, streamed=True)
    await store.ledger.begin(g, 100, limited=False)
    store.ledger.settle(g.id, p.hash, 0, served(90, status="incomplete"))  # speech: charged, still streaming
    store.ledger.finish(g.id, "success", 12.5)
    store.ledger.settle(g.id, p.hash, 0, served(90))  # a second settle changes nothing
    got = await store.ledger.get(g.id)
    assert (got.status, got.settled, got.cost_nano, got.generation_time_ms) == ("success", True, 90, 12.5)
    assert got.completed_at is not None
    assert (await store.keys.get(row.hash)).usage_nano == 90
    store.ledger.settle(g.id, p.hash, 0, served(90))  # and later, as an UPDATE, neither
    assert (await store.keys.get(row.hash)).usage_nano == 90


async def test_a_retried_transaction_charges_once(store, caplog):
    """A commit whose answer is lost (the connection dies right after) is retried: rows are not written
    twice and keys are not charged twice."""
    row, p = await new_key(store)
    real, failures = store.db.transact, []

    async def commit_then_fail(fn, *args):
        result = await real(fn, *args)
        if not failures:
            failures.append(1)
            raise OperationalError("COMMIT", {}, ConnectionResetError("connection reset"))
        return result

    store.ledger.writes.retry_delay_s = 0.01
    g1, g2 = gen(p.hash), gen(p.hash)
    await store.ledger.begin(g1, 100, limited=False)
    await store.ledger.flush()
    store.db.transact = commit_then_fail
    await store.ledger.begin(g2, 100, limited=False)
    store.ledger.settle(g1.id, p.hash, 0, served(40))  # an UPDATE of a written row
    store.ledger.settle(g2.id, p.hash, 0, served(2))  # merged into g2's insert
    with caplog.at_level(logging.WARNING, logger="audiorouter.ledger"):
        await store.ledger.flush()
    assert failures and "retrying" in caplog.text
    assert (await store.keys.get(row.hash)).usage_nano == 42
    assert (await store.ledger.get(g2.id)).cost_nano == 2


async def test_the_writer_survives_transient_errors_and_drops_only_refused_rows(store, caplog):
    row, p = await new_key(store)
    real, calls = store.db.transact, []

    async def flaky(fn, *args):
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("BEGIN", {}, TimeoutError("database is locked"))
        return await real(fn, *args)

    store.db.transact = flaky
    store.ledger.writes.retry_delay_s = 0.01
    good, bad = gen(p.hash), gen(p.hash)
    await store.ledger.begin(good, 100, limited=False)
    await store.ledger.begin(bad, 100, limited=False)
    store.ledger.settle(good.id, p.hash, 0, served(5))
    poison = served(7)
    poison.attempts = [{"unserializable": object()}]  # the database can never take this row
    store.ledger.settle(bad.id, p.hash, 0, poison)
    with caplog.at_level(logging.WARNING, logger="audiorouter.ledger"):
        await store.ledger.flush()
    assert len(calls) >= 3
    assert (await store.ledger.get(good.id)).cost_nano == 5
    assert await store.ledger.get(bad.id) is None
    assert f"refused the writes of generation {bad.id}" in caplog.text
    assert (await store.keys.get(row.hash)).usage_nano == 5
    # a reservation does not wait out an outage: its request is told at once
    calls.clear()
    limited, _ = await new_key(store, limit=1.0)
    with pytest.raises(OperationalError):
        await store.ledger.begin(gen(limited.hash), 100, limited=True)


async def test_shutdown_writes_what_is_queued(tmp_path, backend):
    store = await open_store(tmp_path, backend)
    row, _ = await new_key(store)
    ids = []
    for _ in range(50):
        g = gen(row.hash)
        await store.ledger.begin(g, 100, limited=False)
        store.ledger.settle(g.id, row.hash, 0, served(3))
        ids.append(g.id)
    assert store.ledger.writes.pending > 0
    await store.close()
    again = await open_store(tmp_path, backend)
    try:
        assert [(await again.ledger.get(i)).status for i in ids] == ["success"] * len(ids)
        assert (await again.keys.get(row.hash)).usage_nano == 150
    finally:
        await again.close()


async def test_a_reservation_abandoned_by_its_request_is_released(store):
    row, _ = await new_key(store, limit=1.0)
    task = asyncio.ensure_future(store.ledger.begin(gen(row.hash), 1000, limited=True))
    await asyncio.sleep(0)  # queued, not yet written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        await store.ledger.flush()
        key = await store.keys.get(row.hash)
        if key.reserved_nano == 0 and store.ledger.writes.pending == 0:
            break
        await asyncio.sleep(0.01)
    assert key.reserved_nano == 0 and key.usage_nano == 0


async def test_a_full_queue_makes_callers_wait():
    release = asyncio.Event()
    written: list[str] = []

    async def slow(ops):
        await release.wait()
        written.extend(op.gid for op in ops)

    writes = GroupCommit(slow, max_pending=2)
    await writes.put(Op("insert", "a", {}))
    await asyncio.sleep(0)  # the writer takes "a" and blocks in the transaction
    await writes.put(Op("insert", "b", {}))
    await writes.put(Op("insert", "c", {}))
    blocked = asyncio.ensure_future(writes.put(Op("insert", "d", {})))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    release.set()
    await asyncio.wait_for(blocked, 5)
    await writes.flush()
    assert written == ["a", "b", "c", "d"]
    await writes.close()
