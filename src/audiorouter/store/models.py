"""Tables of the store. Money is kept as integer nano-dollars (1e-9 USD) so sums and the atomic limit checks
are exact; times are naive UTC in the database and aware UTC in Python."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NANO = 1_000_000_000


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def to_usd(nano: int | None) -> float:
    return round((nano or 0) / NANO, 9)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stored naive (UTC) on every backend; read back as an aware UTC datetime."""
    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Small facts about this installation (e.g. auth: once any key has existed, auth stays on)."""
    __tablename__ = "ar_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ApiKey(Base):
    __tablename__ = "ar_api_keys"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the secret
    name: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(64))  # masked secret, safe to show
    is_management: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    limit_nano: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    limit_reset: Mapped[str | None] = mapped_column(String(16), nullable=True)  # daily | weekly | monthly
    include_byok_in_limit: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rate_limit_rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # counters, updated atomically by the ledger
    usage_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # all time, charged
    byok_usage_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # all time, upstream cost on BYOK
    window_usage_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # counted toward the limit
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    reserved_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # estimates of requests in flight
    source: Mapped[str] = mapped_column(String(16), default="api")  # api | cli | env
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Generation(Base):
    """One row per billable request, written `incomplete` before any provider is called."""
    __tablename__ = "ar_generations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    api_type: Mapped[str] = mapped_column(String(8))  # stt | tts
    path: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(200), nullable=True)
    substitute: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[list | None] = mapped_column(JSON, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    characters: Mapped[int | None] = mapped_column(Integer, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    estimate_nano: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # held on the key until settled
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # charged
    upstream_cost_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # list price of what was served
    settled: Mapped[bool] = mapped_column(Boolean, default=False)
    is_byok: Mapped[bool] = mapped_column(Boolean, default=False)
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # incomplete | success | error | cancelled
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    generation_time_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    http_referer: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_ar_generations_key_created", "key_hash", "created_at"),
        Index("ix_ar_generations_created", "created_at"),
        Index("ix_ar_generations_unsettled", "settled", "created_at"),
    )


class ByokKey(Base):
    """A provider key of the caller's own (BYOK), Fernet-encrypted at rest."""
    __tablename__ = "ar_byok_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    label: Mapped[str] = mapped_column(String(64))  # masked
    encrypted_key: Mapped[str] = mapped_column(Text)
    allowed_api_key_hashes: Mapped[list | None] = mapped_column(JSON, nullable=True)
    allowed_models: Mapped[list | None] = mapped_column(JSON, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    """A batch transcription job (jobs/batch.py). The row is the truth; the queue only wakes a worker. A worker
    owns a running job while its lease holds; `fence` grows with every claim, so a worker that lost its lease
    can neither finish nor renew it."""
    __tablename__ = "ar_jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(330), nullable=True)  # "<key hash or ->:<client key>"
    status: Mapped[str] = mapped_column(String(16))  # queued | running | succeeded | failed | cancelled
    params: Mapped[dict] = mapped_column(JSON)  # the request without its audio
    audio_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    audio_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    done_s: Mapped[float] = mapped_column(Float, default=0.0)
    generation_id: Mapped[str] = mapped_column(String(64))
    reserved_nano: Mapped[int] = mapped_column(BigInteger, default=0)
    include_byok: Mapped[bool] = mapped_column(Boolean, default=False)
    zdr: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    fence: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    result_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    usage: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)  # Fernet-encrypted when a secret key exists
    webhook_state: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending | delivered | failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    webhook_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    purge_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    purged: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_ar_jobs_key_created", "key_hash", "created_at"),
        Index("ix_ar_jobs_status_lease", "status", "lease_until"),
        Index("ix_ar_jobs_idem", "idempotency_key", unique=True),
        Index("ix_ar_jobs_webhook", "webhook_state", "webhook_next_at"),
        Index("ix_ar_jobs_purge", "purged", "purge_at"),
        Index("ix_ar_jobs_generation", "generation_id"),
    )


class ChatAudio(Base):
    """A spoken chat answer by its gateway audio id (store/chat_audio.py): what a later turn's
    {"role": "assistant", "audio": {"id"}} stands for, until `expires_at` (unix seconds)."""
    __tablename__ = "ar_chat_audio"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(64))  # the caller key's hash ("" without auth)
    transcript: Mapped[str] = mapped_column(Text)
    upstream: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"provider", "id", "expires_at"}
    expires_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_ar_chat_audio_expires", "expires_at"),)
