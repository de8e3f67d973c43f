"""The Store: database, migrations, keys, ledger, BYOK vault and limits, started and stopped with the app."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import Any

from .byok import ByokStore
from .crypto import Vault, load_secret
from .db import Database, StoreConfigError, database_url, safe_url
from .keycheck import check_secret_key
from .keys import KeyStore, WeakSecret
from .ledger import Ledger
from .limits import Limits, MemoryLimits, RedisLimits

log = logging.getLogger("audiorouter.store")


def is_loopback(host: str | None) -> bool:
    """Whether binding `host` serves this machine only. Everything else counts as public: the empty host and
    every other spelling of "all interfaces" ("0.0.0.0", "::", "[::]", "*"), any name but localhost, any
    address that is not loopback."""
    h = (host or "").strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def bind_name(host: str | None) -> str:
    return host if host and host.strip() else "'' (every interface)"


class Store:
    def __init__(self, settings: Any):
        self.settings = settings
        try:
            self.url = database_url(settings)
        except StoreConfigError as e:  # reported by start(), as one line
            self.config_error: StoreConfigError | None = e
            self.url = "sqlite+aiosqlite://"
        else:
            self.config_error = None
        self.db = Database(self.url, busy_timeout_s=settings.db_busy_timeout_s)
        self.ledger = Ledger(self.db, settings.reservation_ttl_s, settings.ledger_linger_ms / 1000)
        self.keys = KeyStore(self.db, ttl_s=settings.key_cache_ttl_s, flush=self.ledger.flush)
        self.vault = Vault(None)
        self.byok = ByokStore(self.db, self.vault, ttl_s=settings.key_cache_ttl_s)
        self.limits: Limits = MemoryLimits()
        self._tasks: list[asyncio.Task] = []

    async def start(self, *, check_bind: bool = True) -> None:
        s = self.settings
        if self.config_error is not None:
            raise self.config_error
        if s.migrate_on_start:
            try:
                await self.db.upgrade()
            except Exception as e:
                raise StoreConfigError(f"database {safe_url(self.url)}: migration failed: "
                                       f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
        # no key configured: one is made once in the data dir; a key that cannot decrypt what is stored stops here
        self.vault.fernet = load_secret(s, may_create=True)
        await check_secret_key(self.db, self.vault, s)
        if s.management_key is not None and s.management_key.get_secret_value().strip():
            try:
                await self.keys.ensure_bootstrap(s.management_key.get_secret_value().strip())
            except WeakSecret as e:
                raise StoreConfigError(f"{e}; it guards every key and the whole gateway") from None
        if self.vault.fernet is not None:
            try:
                await self.byok.relabel()
            except Exception as e:  # a hiccup here must not stop the start; the next start retries
                log.warning("could not relabel stored provider keys: %s", type(e).__name__)
        if s.redis_url:
            limits = RedisLimits(s.redis_url, s.redis_prefix)
            try:
                await limits.ping()
            except Exception as e:
                await limits.close()
                raise StoreConfigError(f"AUDIOROUTER_REDIS_URL: cannot reach Redis ({type(e).__name__})") from None
            self.limits = limits
        elif not self.db.is_sqlite:
            log.warning("PostgreSQL without AUDIOROUTER_REDIS_URL: spend limits are shared by all replicas, "
                        "but request-rate and concurrency limits are per process")
        if check_bind:
            await self.check_bind()
        with contextlib.suppress(Exception):
            await self.ledger.sweep()
        self._tasks.append(asyncio.create_task(self._sweep_loop()))
        if not self.db.is_sqlite:
            self._tasks.append(asyncio.create_task(self.db.listen()))

    async def auth_required(self) -> bool:
        return bool(self.settings.require_auth) or await self.keys.auth_enabled()

    async def check_bind(self) -> None:
        s = self.settings
        if is_loopback(s.host) or s.insecure_no_auth or await self.auth_required():
            return
        raise StoreConfigError(
            f"refusing to serve {bind_name(s.host)} without authentication: create a key (`audiorouter keys create "
            "--management`), set AUDIOROUTER_MANAGEMENT_KEY or AUDIOROUTER_REQUIRE_AUTH=true, or pass "
            "--insecure-no-auth (AUDIOROUTER_INSECURE_NO_AUTH=true) to serve without keys")

    async def _sweep_loop(self) -> None:
        period = max(5.0, min(60.0, self.settings.reservation_ttl_s / 4))
        while True:
            await asyncio.sleep(period)
            try:
                await self.ledger.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a database hiccup must not kill the loop
                log.warning("ledger sweep failed: %s", type(e).__name__)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self.ledger.close()  # writes what is still queued
        await self.limits.close()
        await self.db.close()
