"""Database engine (SQLAlchemy 2 async) and Alembic migrations. SQLite file by default (WAL, every
transaction BEGIN IMMEDIATE so concurrent writers queue instead of failing); PostgreSQL via asyncpg.

Change notices: writes of keys, BYOK keys and auth mode go through `changing(topic)`, which tells every
process that caches them (store/cache.py): this one at once, the others through PostgreSQL NOTIFY (sent by
the same transaction, heard by `listen()`), or on SQLite through a stamp file next to the database that
grows a byte per change (`poll_changes()`, one stat call)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Engine, Result, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")
CHANNEL = "audiorouter_store"
T = TypeVar("T")

def rowcount(res: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched: SQLAlchemy types session.execute()'s answer as Result, but for a DML
    statement it is a CursorResult, which counts them."""
    return cast(CursorResult[Any], res).rowcount

log = logging.getLogger("audiorouter.store")


class StoreConfigError(RuntimeError):
    pass


def database_url(settings: Any) -> str:
    """AUDIOROUTER_DATABASE_URL normalized to an async driver; default: sqlite in the data dir."""
    raw = settings.database_url
    if not raw:
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{data_dir / 'audiorouter.db'}"
    try:
        url = make_url(raw)
    except ArgumentError:
        raise StoreConfigError("AUDIOROUTER_DATABASE_URL is not a database URL "
                               "(expected postgresql://user@host:5432/db or sqlite:///path)") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        raise StoreConfigError(f"AUDIOROUTER_DATABASE_URL: unsupported database {backend!r} "
                               "(use postgresql or sqlite)")
    return url.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid url>"


class Database:
    def __init__(self, url: str, *, busy_timeout_s: float = 5.0):
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        # SQLite: how long a writer waits for another process' write lock before its statement fails
        # (the request then answers 503 with Retry-After) - AUDIOROUTER_DB_BUSY_TIMEOUT_S
        self.busy_timeout_s = max(0.0, float(busy_timeout_s))
        kw: dict[str, Any] = {}
        if self.is_sqlite:  # a file: no connection to go stale, so no ping before each use
            kw["connect_args"] = {"timeout": self.busy_timeout_s}
        else:
            kw.update(pool_pre_ping=True, pool_size=10, max_overflow=20, pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(url, **kw)
        if self.is_sqlite:
            # reads: deferred transactions (WAL readers never wait); writes: BEGIN IMMEDIATE, so writers
            # queue on the busy timeout instead of failing when they upgrade a read lock
            self.write_engine: AsyncEngine = create_async_engine(url, **kw)
            self._tune_sqlite(self.engine, "BEGIN", self.busy_timeout_s)
            self._tune_sqlite(self.write_engine, "BEGIN IMMEDIATE", self.busy_timeout_s)
        else:
            self.write_engine = self.engine
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.writer = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._batch_engine: Engine | None = None  # SQLite: transact()'s own connection, in its own thread
        self._batch_thread: ThreadPoolExecutor | None = None
        self._batch_sync: Connection | None = None
        self._batch_conn: AsyncConnection | None = None  # PostgreSQL: transact()'s connection, kept open
        self._listeners: list[Callable[[str], None]] = []
        self._me = secrets.token_hex(6)  # tells this process' change notices from other processes'
        path = make_url(url).database if self.is_sqlite else None
        self._stamp = Path(path + "-changes") if path and path != ":memory:" else None
        self._stamp_seen = self._stamp_size()
        self._polled = 0.0

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @staticmethod
    def _tune_sqlite(engine: AsyncEngine | Engine, begin: str, busy_timeout_s: float) -> None:
        engine = getattr(engine, "sync_engine", engine)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver plumbing
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - driver plumbing
            conn.exec_driver_sql(begin)

    async def transact(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(connection, *args) in one write transaction, fn written against SQLAlchemy's synchronous API.
        SQLite: on a connection of its own in a thread of its own, so the whole transaction costs one hop
        to that thread (aiosqlite costs several per statement). PostgreSQL: asyncpg, through run_sync.
        For one caller at a time (the ledger's writer)."""
        if self.is_sqlite:
            if self._batch_engine is None:
                self._batch_engine = create_engine(make_url(self.url).set(drivername="sqlite"),
                                                   connect_args={"timeout": self.busy_timeout_s,
                                                                 "check_same_thread": False})
                self._tune_sqlite(self._batch_engine, "BEGIN IMMEDIATE", self.busy_timeout_s)
                self._batch_thread = ThreadPoolExecutor(1, thread_name_prefix="audiorouter-ledger")
            return await asyncio.get_running_loop().run_in_executor(self._batch_thread, self._transact, fn, args)
        if self._batch_conn is None:
            self._batch_conn = await self.write_engine.connect()
        try:
            async with self._batch_conn.begin():
                return await self._batch_conn.run_sync(fn, *args)
        except BaseException:
            conn, self._batch_conn = self._batch_conn, None  # a fresh connection next time
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    def _transact(self, fn: Callable[..., T], args: tuple) -> T:  # in the batch thread
        if self._batch_sync is None:
            assert self._batch_engine is not None  # transact() runs here only with SQLite, which has it
            self._batch_sync = self._batch_engine.connect()
        try:
            with self._batch_sync.begin():
                return fn(self._batch_sync, *args)
        except BaseException:
            conn, self._batch_sync = self._batch_sync, None  # a fresh connection next time
            with contextlib.suppress(Exception):
                conn.close()
            raise

    # ---- change notices ------------------------------------------------------------------------------
    def on_change(self, fn: Callable[[str], None]) -> None:
        """fn(topic) after every change of cached rows: 'key:<hash>', 'byok', 'auth', or '*' (anything)."""
        self._listeners.append(fn)

    def _changed(self, topic: str) -> None:
        for fn in self._listeners:
            fn(topic)

    @contextlib.asynccontextmanager
    async def changing(self, topic: str) -> AsyncIterator[AsyncSession]:
        """A write transaction over cached rows; every process hears of it once it commits."""
        async with self.writer() as s, s.begin():
            yield s
            if not self.is_sqlite:
                await s.execute(select(func.pg_notify(CHANNEL, f"{self._me} {topic}")))
        if self._stamp is not None:
            self._stamp_change()
        self._changed(topic)

    def _stamp_change(self) -> None:
        """Append a byte to the stamp file; our own byte is no news to this process."""
        if self._stamp is None:
            return
        with contextlib.suppress(OSError), open(self._stamp, "ab", buffering=0) as f:
            before = f.tell()
            f.write(b".")
            if f.tell() > 65536:
                f.truncate(0)
            elif before == self._stamp_seen and f.tell() == before + 1:
                self._stamp_seen = before + 1

    def _stamp_size(self) -> int:
        try:
            return os.stat(self._stamp).st_size if self._stamp is not None else -1
        except OSError:
            return -1

    def poll_changes(self) -> None:
        """SQLite: notice changes made by other processes (the CLI, another server on the same file); at
        most one stat call every 10 ms (at 1000 requests/s a stat per request was 5 % of the CPU)."""
        if self._stamp is None or (now := time.monotonic()) - self._polled < 0.01:
            return
        self._polled = now
        if (size := self._stamp_size()) != self._stamp_seen:
            self._stamp_seen = size
            self._changed("*")

    async def listen(self) -> None:
        """PostgreSQL: hear other processes' changes (LISTEN) until cancelled; after a gap in listening
        everything counts as changed. Until it listens (start-up, reconnecting), caches rely on their TTL."""
        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            sender, _, topic = payload.partition(" ")
            if sender != self._me:  # this process' own changes were applied when they committed
                self._changed(topic)

        delay, gap = 1.0, False
        while True:
            try:
                async with self.engine.connect() as conn:
                    pg: Any = (await conn.get_raw_connection()).driver_connection  # asyncpg's, untyped here
                    await pg.add_listener(CHANNEL, heard)
                    try:
                        if gap:
                            self._changed("*")  # whatever changed while nobody listened
                        delay = 1.0
                        while True:
                            await asyncio.sleep(15)
                            await pg.fetchval("SELECT 1")  # a dead connection raises here
                    finally:
                        with contextlib.suppress(Exception):
                            await pg.remove_listener(CHANNEL, heard)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("not hearing key changes from other replicas (%s); cached keys expire after "
                            "AUDIOROUTER_KEY_CACHE_TTL_S meanwhile", type(e).__name__)
            gap = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def upgrade(self) -> None:
        """Bring the schema to the latest migration. Safe to run from many replicas at once: PostgreSQL
        takes an advisory lock for the duration, SQLite a write lock (BEGIN IMMEDIATE)."""
        async with self.write_engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(74231901)"))
            await conn.run_sync(_run_alembic, "upgrade")

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    async def close(self) -> None:
        if self._batch_conn is not None:
            with contextlib.suppress(Exception):
                await self._batch_conn.close()
        if self._batch_engine is not None:
            thread = self._batch_thread
            assert thread is not None  # made with the batch engine
            if self._batch_sync is not None:
                thread.submit(self._batch_sync.close).result()
            thread.shutdown()
            self._batch_engine.dispose()
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()


def alembic_config(connection: Any = None):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("version_table", "ar_alembic_version")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _run_alembic(sync_conn, what: str) -> None:
    from alembic import command
    command.upgrade(alembic_config(sync_conn), "head")


def _current_revision(sync_conn) -> str | None:
    from alembic.runtime.migration import MigrationContext
    ctx = MigrationContext.configure(sync_conn, opts={"version_table": "ar_alembic_version"})
    return ctx.get_current_revision()
