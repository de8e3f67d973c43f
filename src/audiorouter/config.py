"""Settings, from environment variables (AUDIOROUTER_*) or a .env file."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audiorouter"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "audiorouter"


def default_workers() -> int:
    # On small machines one thread per request and one request per core beats threads per request.
    return max(1, min(os.cpu_count() or 1, 8))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIOROUTER_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    catalog: str | None = None  # path of a user catalog that overrides/extends the shipped one
    cache_dir: Path = default_cache_dir()

    max_body_bytes: int = 100 * 1024 * 1024
    max_speech_chars: int = 4096
    upstream_timeout_s: float = 60.0  # per attempt, for providers whose catalog entry sets no timeout_s

    # routing: retries, fallbacks and the circuit breaker (routing/router.py, routing/health.py)
    retry_attempts: int = 2          # attempts per endpoint before moving to the next (1 = no retry)
    retry_backoff_s: float = 0.25    # first backoff; doubles per retry, with jitter
    retry_backoff_max_s: float = 2.0
    retry_after_max_s: float = 5.0   # honour an upstream Retry-After up to this; longer moves on at once
    request_deadline_s: float = 300.0  # all attempts of one request together
    breaker_threshold: int = 5       # consecutive failures that pause an endpoint
    breaker_cooldown_s: float = 30.0  # then one probe request is let through

    # local engines
    local_substitute: bool = True  # serve catalog models whose upstream has no key with the local engines
    workers: int = default_workers()
    queue_size: int = 16  # local jobs waiting beyond `workers` before new ones get 503
    whisper_beam_size: int = 5
    whisper_model_dir: Path | None = None  # a CTranslate2 Whisper directory to use instead of the bundled base
    preload: bool = True  # load local models at start-up rather than on the first request
    preload_vad: bool | None = None  # load the VAD that cuts long audio at start-up; None: follows `preload`
    # load and warm the local LLM of the voice-chat cascade at start-up (~0.5 s, ~215 MB); None: follows `preload`
    preload_llm: bool | None = None
    # glibc, `serve`: allocations this big or bigger get their own mappings, returned when freed (0: leave
    # glibc's own policy); see core/malloc.py
    malloc_mmap_threshold: int = 1024 * 1024
    # FastAPI's built-in OpenTelemetry (spans, metrics, logs for the standard OTEL_* configuration). Off by
    # default: even with no provider configured, its per-request check looked up environment variables and
    # cost ~5 % of a relayed speech request's CPU
    opentelemetry: bool = False

    # long audio (jobs/transcription.py): audio longer than this, or than the serving endpoint's limits, is
    # split at silences and the chunks transcribed `chunk_concurrency` at a time (0 = local workers, or 4
    # for upstream providers); each chunk gets the previous chunk's text as prompt where supported
    chunk_seconds: float = 180.0
    # the local engine decodes <= 30 s windows and batches them: chunks of two windows, cut at pauses, keep
    # memory flat at ~90 % of whole-file throughput (measured; 25 s chunks: ~70 %), same accuracy
    local_chunk_seconds: float = 55.0
    chunk_concurrency: int = 0
    chunk_context: bool = True
    tmp_dir: str | None = None  # where decoded long audio is spilled (default: the system temp dir)

    # transcript cache (store/transcript_cache.py): SQLite in cache_dir, or Redis when redis_url is set; ttl 0 disables
    cache_ttl_s: int = 7 * 24 * 3600
    cache_path: Path | None = None  # the SQLite file (default: cache_dir/transcripts.db)

    # input_audio.url (api/url_input.py)
    url_fetch: bool = True
    url_fetch_allow_private: bool = False  # allow loopback/private/link-local targets (only for trusted setups)
    url_fetch_allow_hosts: str = ""  # comma-separated IPs or CIDRs allowed even though private
    url_fetch_max_bytes: int | None = None  # default: max_body_bytes
    url_fetch_timeout_s: float = 30.0
    url_fetch_max_redirects: int = 5

    log_level: str = "info"
    # observability (api/metrics.py, core/logs.py, docs/observability.md): Prometheus /metrics (management key
    # when auth is on) and request metrics; logs as text or one JSON object per line, with the generation id
    metrics: bool = True
    log_format: str = "text"  # text | json

    # connections (api/protocol.py, `serve`): what one slow or greedy client can hold
    header_timeout_s: float = 10.0  # a request's head must be complete this long after its first byte (408)
    body_timeout_s: float = 30.0  # a body must progress by body_min_rate in every window this long (408)
    body_min_rate: int = 256  # bytes/s averaged over each window (0: any progress at all will do)
    max_connections: int = 1000  # open connections per process; more are answered 503 and closed (0: no cap)
    max_connections_per_client: int = 100  # per client IP (IPv6: per /64); more: 429 (0: no cap)
    # browsers (api/guard.py): Host names accepted while no key exists, besides loopback ones ("*": any), and
    # origins allowed to call the API cross-origin (CORS), comma-separated ("*": any)
    allowed_hosts: str = ""
    cors_origins: str = ""

    # keys, ledger, limits (store/): SQLite file in data_dir unless database_url names PostgreSQL
    data_dir: Path = default_data_dir()
    database_url: str | None = None  # postgresql://user@host/db or sqlite:///path; default sqlite in data_dir
    # SQLite: how long a write waits for another process' lock before the request answers 503 + Retry-After
    db_busy_timeout_s: float = 5.0
    # redis://host:6379/0: rate limits and concurrency shared by all replicas, and the transcript cache
    redis_url: str | None = None
    redis_prefix: str = "audiorouter:"
    migrate_on_start: bool = True
    require_auth: bool = False  # demand a key even before any key exists
    insecure_no_auth: bool = False  # allow binding a non-loopback address with auth off
    management_key: SecretStr | None = None  # bootstrap management key, registered at start-up
    secret_key: SecretStr | None = None  # encrypts stored provider keys (BYOK); or secret_key_file
    secret_key_file: Path | None = None
    byok_fee: float = 0.05  # share of the list price charged when the caller's own provider key is used
    default_rpm: int | None = None  # per-key requests per minute when the key sets none (None: unlimited)
    default_concurrency: int | None = None  # per-key concurrent requests when the key sets none
    reservation_ttl_s: float = 900.0  # an unsettled reservation older than this is released (crashed replica)
    # keys, auth mode and BYOK keys are cached per process; a change made by another process applies at once
    # where it is heard (PostgreSQL NOTIFY, SQLite stamp file), within this many seconds in any case
    key_cache_ttl_s: float = 2.0
    # the ledger writer gathers a batch for up to this long before its transaction (unless someone waits for
    # it): fewer, bigger transactions; a hard kill can lose the last window's rows
    ledger_linger_ms: float = 10.0

    # batch jobs (jobs/batch.py, docs/deployment.md "Batch jobs"): the queue (huey: SQLite file in data_dir, or
    # redis://), the audio store (a directory in data_dir, or s3://bucket/prefix), and the worker lease
    jobs_queue_url: str | None = None
    jobs_store_url: str | None = None
    jobs_s3_endpoint_url: str | None = None  # S3-compatible service (MinIO, R2, ...); credentials: AWS_* variables
    jobs_lease_s: float = 60.0  # a job whose worker stops renewing its lease this long is picked up again
    jobs_max_attempts: int = 3  # workers that died running one job before it fails
    jobs_in_process: int | None = None  # job threads inside `serve` (None: 1 with the SQLite queue, else 0)
    jobs_concurrency: int = 1  # jobs one `audiorouter worker` runs at once
    jobs_retention_s: float = 7 * 24 * 3600.0  # audio and results are deleted this long after a job ends
    jobs_max_upload_bytes: int = 2 * 1024 ** 3
    jobs_shutdown_grace_s: float = 25.0  # SIGTERM: running jobs get this long to finish, then are handed back
    webhook_timeout_s: float = 10.0
    webhook_retry_window_s: float = 6 * 3600.0  # failed deliveries are retried with backoff for this long (>= 1 h)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
