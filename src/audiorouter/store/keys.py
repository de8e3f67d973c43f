"""API keys: minted with 256 bits of entropy, shown once, stored as their SHA-256 (the `hash` of the keys
API), compared in constant time. A key someone chose (AUDIOROUTER_MANAGEMENT_KEY) must be as hard to guess:
at least 32 characters and ~80 bits as zxcvbn estimates them. Labels show at most the last 4 characters of a
key that is not one of ours. Limits reset daily / weekly (Monday) / monthly at 00:00 UTC."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from .cache import TTLCache
from .db import Database, rowcount
from .models import ApiKey, Generation, Meta, to_nano, to_usd, utcnow

KEY_PREFIX = "sk-ar-v1-"
MIN_SECRET_CHARS = 32
MIN_SECRET_GUESSES_LOG10 = 24  # ~80 bits: what zxcvbn estimates for 32 random hex digits is >= 29
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LIMIT_RESETS = ("daily", "weekly", "monthly")


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_hex(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class WeakSecret(ValueError):
    """A key someone chose is too short or too predictable to guard the gateway."""


def weak_secret(secret: str) -> str | None:
    """Why `secret` is too weak to be an API key (None: strong enough). Says nothing of its content."""
    if len(secret) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    from zxcvbn import zxcvbn  # only when a key is chosen (start-up), not on the request path
    if zxcvbn(secret[:128], max_length=128)["guesses_log10"] < MIN_SECRET_GUESSES_LOG10:
        return ("is too predictable (repeated, sequential or dictionary text); use a random one, e.g. "
                "`openssl rand -hex 32`")
    return None


def check_secret(secret: str, name: str) -> None:
    """Raise WeakSecret naming `name` (the setting or field) when `secret` is too weak."""
    why = weak_secret(secret)
    if why is not None:
        raise WeakSecret(f"{name} {why}")


def mask(secret: str) -> str:
    """What may be shown of a secret: its last 4 characters when it is long enough (20+) that they give
    little away, else nothing."""
    s = secret.strip()
    return f"...{s[-4:]}" if len(s) >= 20 else "***"


def label_of(secret: str) -> str:
    """A key's label: one of ours (prefix and 64 random hex digits) shows 3 + 3 of them (24 of 256 bits);
    any other key only what mask() shows."""
    if secret.startswith(KEY_PREFIX) and len(secret) == len(KEY_PREFIX) + 64:
        return f"{secret[:len(KEY_PREFIX) + 3]}...{secret[-3:]}"
    return mask(secret)


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def window_start(reset: str | None, now: datetime | None = None) -> datetime:
    """Start of the limit window that contains `now` (no reset: one window since the epoch)."""
    now = now or utcnow()
    d = day_start(now)
    if reset == "daily":
        return d
    if reset == "weekly":
        return d - timedelta(days=d.weekday())
    if reset == "monthly":
        return d.replace(day=1)
    return EPOCH


def next_reset(reset: str | None, now: datetime | None = None) -> datetime | None:
    now = now or utcnow()
    start = window_start(reset, now)
    if reset == "daily":
        return start + timedelta(days=1)
    if reset == "weekly":
        return start + timedelta(days=7)
    if reset == "monthly":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return None


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (hash and settings; shared by the requests that use the cached copy)."""
    hash: str
    name: str
    label: str
    is_management: bool
    limit_nano: int | None
    limit_reset: str | None
    include_byok_in_limit: bool
    rate_limit_rpm: int | None
    max_concurrency: int | None
    expires_at: datetime | None
    disabled: bool

    @classmethod
    def of(cls, row: ApiKey) -> Principal:
        return cls(row.hash, row.name, row.label, row.is_management, row.limit_nano, row.limit_reset,
                   row.include_byok_in_limit, row.rate_limit_rpm, row.max_concurrency, row.expires_at, row.disabled)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _nothing() -> None:
    return None


class KeyStore:
    """Keys and auth mode. The request path (auth_enabled, lookup) reads in-process copies (store/cache.py);
    reads of usage first wait for this process' queued ledger writes (`flush`), so they see every request
    this process has answered."""

    def __init__(self, db: Database, *, ttl_s: float = 2.0, flush: Callable[[], Awaitable[None]] = _nothing):
        self.db = db
        self.ttl_s = ttl_s
        self._flush = flush
        self._auth_on = False
        self._auth_checked_until = 0.0  # while auth is off, re-read it after this (monotonic)
        self._principals = TTLCache(ttl_s)  # sha256 of the token -> Principal, or None (no such key)
        db.on_change(self._changed)

    def _changed(self, topic: str) -> None:
        if topic == "byok":
            return
        self._auth_checked_until = 0.0
        if topic != "auth":
            self._principals.drop(topic[4:] if topic.startswith("key:") else None)

    # ---- auth mode ----------------------------------------------------------------------------------
    async def auth_enabled(self) -> bool:
        """True once any key has ever existed (deleting every key does not silently open the gateway)."""
        if self._auth_on:
            return True
        self.db.poll_changes()
        if time.monotonic() < self._auth_checked_until:
            return False
        async with self.db.sessions() as s:
            on = await s.scalar(select(Meta.value).where(Meta.key == "auth")) == "on"
            if not on:
                on = (await s.scalar(select(func.count()).select_from(ApiKey)) or 0) > 0
        self._auth_on = self._auth_on or on
        self._auth_checked_until = time.monotonic() + self.ttl_s
        return self._auth_on

    async def _mark_auth_on(self) -> None:
        """Record that auth is on (its own transaction: replicas may race to write it first)."""
        try:
            async with self.db.changing("auth") as s:
                if await s.get(Meta, "auth") is None:
                    s.add(Meta(key="auth", value="on"))
        except IntegrityError:
            pass  # another replica wrote it
        self._auth_on = True

    # ---- lookup -------------------------------------------------------------------------------------
    async def lookup(self, secret: str) -> Principal | None:
        """The key with this secret (None: there is none) from the cache: current as of the last change
        notice this process heard (store/db.py), and never older than ttl_s."""
        h = hash_secret(secret)
        self.db.poll_changes()
        return await self._principals.get(h, lambda: self._load(h))

    async def _load(self, h: str) -> Principal | None:
        async with self.db.sessions() as s:
            row = await s.get(ApiKey, h)
        return Principal.of(row) if row is not None and same_hash(row.hash, h) else None

    async def get(self, key_hash: str) -> ApiKey | None:
        await self._flush()
        async with self.db.sessions() as s:
            return await s.get(ApiKey, key_hash)

    async def list(self, *, include_disabled: bool, include_expired: bool, offset: int, limit: int) -> list[ApiKey]:
        q = select(ApiKey).order_by(ApiKey.created_at, ApiKey.hash)
        if not include_disabled:
            q = q.where(ApiKey.disabled.is_(False))
        if not include_expired:
            q = q.where((ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > utcnow()))
        await self._flush()
        async with self.db.sessions() as s:
            return list((await s.scalars(q.offset(offset).limit(limit))).all())

    # ---- lifecycle ----------------------------------------------------------------------------------
    async def create(self, *, name: str, is_management: bool = False, limit: float | None = None,
                     limit_reset: str | None = None, expires_at: datetime | None = None,
                     include_byok_in_limit: bool = False, rate_limit_rpm: int | None = None,
                     max_concurrency: int | None = None, source: str = "api",
                     secret: str | None = None) -> tuple[ApiKey, str]:
        if secret is not None:
            check_secret(secret, "key")
        secret = secret or new_secret()
        now = utcnow()
        row = ApiKey(hash=hash_secret(secret), name=name, label=label_of(secret), is_management=is_management,
                     disabled=False, limit_nano=None if limit is None else to_nano(limit), limit_reset=limit_reset,
                     include_byok_in_limit=include_byok_in_limit, expires_at=expires_at,
                     rate_limit_rpm=rate_limit_rpm, max_concurrency=max_concurrency, usage_nano=0,
                     byok_usage_nano=0, window_usage_nano=0, window_start=window_start(limit_reset, now),
                     reserved_nano=0, source=source, created_at=now, updated_at=None, last_used_at=None)
        async with self.db.changing(f"key:{row.hash}") as s:
            s.add(row)
        await self._mark_auth_on()
        return row, secret

    async def ensure_bootstrap(self, secret: str) -> None:
        """Register the management key given in AUDIOROUTER_MANAGEMENT_KEY (idempotent across replicas).
        Raises WeakSecret when it is too short or predictable, after disabling it if an older version
        registered it."""
        h = hash_secret(secret)
        why = weak_secret(secret)
        if why is not None:
            async with self.db.changing(f"key:{h}") as s:
                res = await s.execute(update(ApiKey).where(ApiKey.hash == h, ApiKey.disabled.is_(False))
                                      .values(disabled=True, updated_at=utcnow()))
            raise WeakSecret(f"AUDIOROUTER_MANAGEMENT_KEY {why}"
                             + ("; registered by an earlier start, it is now disabled" if rowcount(res) else ""))
        try:
            async with self.db.changing(f"key:{h}") as s:
                row = await s.get(ApiKey, h)
                if row is not None and row.label != label_of(secret):
                    row.label = label_of(secret)  # registered when labels showed more of it
                if row is None:
                    now = utcnow()
                    s.add(ApiKey(hash=h, name="management (AUDIOROUTER_MANAGEMENT_KEY)", label=label_of(secret),
                                 is_management=True, disabled=False, limit_nano=None, limit_reset=None,
                                 include_byok_in_limit=False, expires_at=None, rate_limit_rpm=None,
                                 max_concurrency=None, usage_nano=0, byok_usage_nano=0, window_usage_nano=0,
                                 window_start=EPOCH, reserved_nano=0, source="env", created_at=now))
        except IntegrityError:
            pass  # another replica registered it at the same moment
        await self._mark_auth_on()

    async def update(self, key_hash: str, changes: dict[str, Any]) -> ApiKey | None:
        values: dict[str, Any] = {}
        for k, v in changes.items():
            if k == "limit":
                values["limit_nano"] = None if v is None else to_nano(v)
            else:
                values[k] = v
        values["updated_at"] = utcnow()
        async with self.db.changing(f"key:{key_hash}") as s:
            res = await s.execute(update(ApiKey).where(ApiKey.hash == key_hash).values(**values))
        if rowcount(res) == 0:
            return None
        return await self.get(key_hash)

    async def delete(self, key_hash: str) -> bool:
        async with self.db.changing(f"key:{key_hash}") as s:
            res = await s.execute(delete(ApiKey).where(ApiKey.hash == key_hash))
        return rowcount(res) > 0

    # ---- usage --------------------------------------------------------------------------------------
    async def usage_windows(self, key_hash: str | None) -> dict[str, float]:
        """Charged cost and BYOK upstream cost today / this week / this month (UTC), from the ledger."""
        now = utcnow()
        d, w, m = window_start("daily", now), window_start("weekly", now), window_start("monthly", now)
        earliest = min(w, m)
        cols = []
        for start in (d, w, m):
            cols.append(func.coalesce(func.sum(Generation.cost_nano).filter(Generation.created_at >= start), 0))
        for start in (d, w, m):
            cols.append(func.coalesce(func.sum(Generation.upstream_cost_nano).filter(
                (Generation.created_at >= start) & Generation.is_byok.is_(True)), 0))
        q = select(*cols).where(Generation.created_at >= earliest)
        if key_hash is not None:
            q = q.where(Generation.key_hash == key_hash)
        await self._flush()
        async with self.db.sessions() as s:
            row = (await s.execute(q)).one()
        names = ("usage_daily", "usage_weekly", "usage_monthly", "byok_usage_daily", "byok_usage_weekly",
                 "byok_usage_monthly")
        return {n: to_usd(int(v or 0)) for n, v in zip(names, row)}

    async def totals(self, key_hash: str | None = None) -> tuple[float, float]:
        """(charged, byok upstream) all time, for one key or the whole gateway."""
        q = select(func.coalesce(func.sum(Generation.cost_nano), 0),
                   func.coalesce(func.sum(Generation.upstream_cost_nano).filter(Generation.is_byok.is_(True)), 0))
        if key_hash is not None:
            q = q.where(Generation.key_hash == key_hash)
        await self._flush()
        async with self.db.sessions() as s:
            a, b = (await s.execute(q)).one()
        return to_usd(int(a or 0)), to_usd(int(b or 0))


def window_usage_nano(row: ApiKey, now: datetime | None = None) -> int:
    """Settled usage counted toward the limit in the current window."""
    if row.window_start < window_start(row.limit_reset, now):
        return 0
    return row.window_usage_nano


def limit_remaining(row: ApiKey) -> float | None:
    """What a new request may still reserve: the limit less this window's settled usage and the estimates
    of requests in flight (the same sum the ledger's reservation checks)."""
    if row.limit_nano is None:
        return None
    return to_usd(max(0, row.limit_nano - window_usage_nano(row) - row.reserved_nano))


def key_data(row: ApiKey, usage: dict[str, float] | None = None) -> dict[str, Any]:
    """A key in the OpenRouter keys API shape (list / get / create / update)."""
    u = usage or {}
    return {
        "hash": row.hash,
        "name": row.name,
        "label": row.label,
        "disabled": row.disabled,
        "limit": None if row.limit_nano is None else to_usd(row.limit_nano),
        "limit_remaining": limit_remaining(row),
        "limit_reset": row.limit_reset,
        "include_byok_in_limit": row.include_byok_in_limit,
        "usage": to_usd(row.usage_nano),
        "usage_daily": u.get("usage_daily", 0.0),
        "usage_weekly": u.get("usage_weekly", 0.0),
        "usage_monthly": u.get("usage_monthly", 0.0),
        "byok_usage": to_usd(row.byok_usage_nano),
        "byok_usage_daily": u.get("byok_usage_daily", 0.0),
        "byok_usage_weekly": u.get("byok_usage_weekly", 0.0),
        "byok_usage_monthly": u.get("byok_usage_monthly", 0.0),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "last_used_at": iso(row.last_used_at),
        "expires_at": iso(row.expires_at),
        "creator_user_id": None,
        "external_user": None,
        "workspace_id": "default",
        # audiorouter extensions
        "is_management_key": row.is_management,
        "rate_limit_rpm": row.rate_limit_rpm,
        "max_concurrency": row.max_concurrency,
        "limit_reserved": to_usd(row.reserved_nano) if row.limit_nano is not None else None,
    }
