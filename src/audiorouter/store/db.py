"""Database engine (SQLAlchemy 2 async) and Alembic migrations. SQLite file by default (WAL, every
transaction BEGIN IMMEDIATE so concurrent writers queue instead of failing); PostgreSQL via asyncpg."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")
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
    def __init__(self, url: str):
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        kw: dict[str, Any] = {"pool_pre_ping": True}
        if self.is_sqlite:
            kw["connect_args"] = {"timeout": 30}
        else:
            kw.update(pool_size=10, max_overflow=20, pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(url, **kw)
        if self.is_sqlite:
            # reads: deferred transactions (WAL readers never wait); writes: BEGIN IMMEDIATE, so writers
            # queue on the busy timeout instead of failing when they upgrade a read lock
            self.write_engine: AsyncEngine = create_async_engine(url, **kw)
            self._tune_sqlite(self.engine, "BEGIN")
            self._tune_sqlite(self.write_engine, "BEGIN IMMEDIATE")
        else:
            self.write_engine = self.engine
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.writer = async_sessionmaker(self.write_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @staticmethod
    def _tune_sqlite(engine: AsyncEngine, begin: str) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver plumbing
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn):  # pragma: no cover - driver plumbing
            conn.exec_driver_sql(begin)

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
