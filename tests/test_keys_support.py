"""Helpers for the keys / ledger / limits / replicas suites (no tests here): gateways with a priced user
catalog and their own store, a throw-away PostgreSQL database per run, a Redis key prefix per run.

PostgreSQL and Redis are used for real. Where they cannot be reached the tests that need them skip with
the reason, except under CI=true, where they fail."""
from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import DEV_AUDIO, ROOT, ServerProcess

PG_ADMIN_URL = os.environ.get("AUDIOROUTER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AUDIOROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"

TTS_PRICE_PER_CHAR = 0.001  # per_million_characters: 1000
STT_PRICE_PER_SECOND = 0.001
CATALOG = """
models:
  - id: test/priced-whisper
    name: priced whisper (local, test)
    kind: transcription
    endpoints:
      - provider: local
        upstream_model: whisper-base
        pricing: {per_second: 0.001}
        capabilities: {translation: true, word_timestamps: true, prompt: true}
  - id: test/priced-tts
    name: priced speech (local, test)
    kind: speech
    voices: [heart]
    endpoints:
      - provider: local
        upstream_model: hibari
        pricing: {per_million_characters: 1000}
        capabilities: {speed: true, streaming: true}
"""
SHORT_CLIP = DEV_AUDIO / "librispeech_test-other_1688-142285-0002.flac"  # 2.835 s


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: PostgreSQL and Redis must be available)")
    pytest.skip(reason)


# ---- PostgreSQL ----------------------------------------------------------------------------------------
def _pg_dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url
    u = make_url(url).set(drivername="postgresql")
    if database:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


async def _pg(sql: str, url: str = PG_ADMIN_URL) -> Any:
    import asyncpg
    conn = await asyncpg.connect(_pg_dsn(url), timeout=5)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


class PgDatabase:
    """A database created for this test run and dropped after it."""

    def __init__(self) -> None:
        self.name = f"ar_test_{secrets.token_hex(6)}"
        self.url = _pg_dsn(PG_ADMIN_URL, self.name)

    def create(self) -> PgDatabase:
        try:
            asyncio.run(_pg(f'CREATE DATABASE "{self.name}"'))
        except Exception as e:
            unavailable(f"PostgreSQL at {_pg_dsn(PG_ADMIN_URL)} is not reachable ({type(e).__name__}: {e})")
        return self

    def drop(self) -> None:
        try:
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        except Exception:
            pass

    def query(self, sql: str) -> list[tuple]:
        return [tuple(r) for r in asyncio.run(_pg(sql, self.url))]


class SqliteDatabase:
    def __init__(self, path: Path):
        self.path = path
        self.url = f"sqlite:///{path}"

    def query(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.path, timeout=30) as c:
            return list(c.execute(sql).fetchall())


# ---- Redis ---------------------------------------------------------------------------------------------
class RedisPrefix:
    def __init__(self) -> None:
        self.prefix = f"ar-test-{secrets.token_hex(6)}:"

    def check(self) -> RedisPrefix:
        import redis
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        except Exception as e:
            unavailable(f"Redis at {REDIS_URL} is not reachable ({type(e).__name__})")
        return self

    def cleanup(self) -> None:
        import redis
        try:
            r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
            for k in r.scan_iter(match=self.prefix + "*"):
                r.delete(k)
        except Exception:
            pass


# ---- gateways ------------------------------------------------------------------------------------------
def new_management_key() -> str:
    return "sk-ar-test-mgmt-" + secrets.token_hex(24)


def gateway_env(tmp: Path, *, database_url: str | None = None, redis: RedisPrefix | None = None,
                management_key: str | None = None, **extra: str) -> dict[str, str]:
    cat = tmp / "catalog.yaml"
    cat.write_text(CATALOG, encoding="utf-8")
    env = {"AUDIOROUTER_PRELOAD": "false", "AUDIOROUTER_CATALOG": str(cat), "AUDIOROUTER_LOCAL_SUBSTITUTE": "false",
           "AUDIOROUTER_DATA_DIR": str(tmp / "data"), "AUDIOROUTER_WORKERS": "1", "AUDIOROUTER_QUEUE_SIZE": "64"}
    if database_url:
        env["AUDIOROUTER_DATABASE_URL"] = database_url
    if redis is not None:
        env["AUDIOROUTER_REDIS_URL"] = REDIS_URL
        env["AUDIOROUTER_REDIS_PREFIX"] = redis.prefix
    if management_key:
        env["AUDIOROUTER_MANAGEMENT_KEY"] = management_key
    env.update(extra)
    return env


class Gateway:
    """A running audiorouter with its management key and database handle."""

    def __init__(self, tmp: Path, env: dict[str, str], mgmt: str | None, db: Any):
        self.tmp, self.env, self.mgmt, self.db = tmp, env, mgmt, db
        self.proc = ServerProcess(env=env, tmp=tmp).start()
        self.url = self.proc.url
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def restart(self) -> Gateway:
        """A new process on a new port over the same store."""
        self.client.close()
        self.proc.stop()
        self.proc = ServerProcess(env=self.env, tmp=self.tmp).start()
        self.url = self.proc.url
        self.client = httpx.Client(base_url=self.url, timeout=120)
        return self

    def log(self) -> str:
        return self.proc.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.mgmt}"}

    def create_key(self, **body: Any) -> tuple[str, dict]:
        body.setdefault("name", f"test {secrets.token_hex(3)}")
        r = self.client.post("/api/v1/keys", json=body, headers=self.auth())
        assert r.status_code == 201, r.text
        return r.json()["key"], r.json()["data"]

    def key_info(self, key: str) -> dict:
        r = self.client.get("/api/v1/key", headers=self.auth(key))
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def speak(self, key: str | None, text: str, **kw: Any) -> httpx.Response:
        headers = self.auth(key) if key else {}
        return self.client.post("/api/v1/audio/speech", json={"model": "test/priced-tts", "input": text, **kw},
                                headers=headers)

    def transcribe(self, key: str | None, path: Path = SHORT_CLIP, model: str = "test/priced-whisper") -> httpx.Response:
        data = base64.b64encode(path.read_bytes()).decode()
        headers = self.auth(key) if key else {}
        return self.client.post("/api/v1/audio/transcriptions", headers=headers,
                                json={"model": model, "input_audio": {"data": data, "format": path.suffix[1:]}})


def start_gateway(backend: str, tmp: Path, *, mgmt: bool = True, redis: RedisPrefix | None = None,
                  pg: PgDatabase | None = None, **extra: str) -> Gateway:
    key = new_management_key() if mgmt else None
    if backend == "postgres":
        assert pg is not None
        db: Any = pg
        url = pg.url
    else:
        db = SqliteDatabase(tmp / "data" / "ledger.db")
        url = db.url
    return Gateway(tmp, gateway_env(tmp, database_url=url, redis=redis, management_key=key, **extra), key, db)


def clean_environ() -> dict[str, str]:
    """This process' environment without the developer's own audiorouter settings or provider keys."""
    return {k: v for k, v in os.environ.items()
            if not (k.startswith("AUDIOROUTER_") or k.endswith("_API_KEY") or k == "GOOGLE_ACCESS_TOKEN")}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiorouter.cli", *args], env={**clean_environ(), **env},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


# ---- fixtures (imported by the suites) -------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request, tmp_path_factory) -> Gateway:
    """One gateway per backend for a whole module, with a management key (auth on)."""
    pg = PgDatabase().create() if request.param == "postgres" else None
    # replicas on PostgreSQL must share the BYOK secret; on SQLite it is created in the data dir
    extra = {"AUDIOROUTER_SECRET_KEY": "test-secret-" + secrets.token_hex(8)} if pg is not None else {}
    g = start_gateway(request.param, tmp_path_factory.mktemp(f"gw-{request.param}"), pg=pg, **extra)
    g.backend = request.param
    yield g
    g.stop()
    if pg is not None:
        pg.drop()


@pytest.fixture
def pg_db() -> PgDatabase:
    db = PgDatabase().create()
    yield db
    db.drop()


@pytest.fixture
def redis_prefix() -> RedisPrefix:
    r = RedisPrefix().check()
    yield r
    r.cleanup()
