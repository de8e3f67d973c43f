"""Settings, from environment variables (AUDIOROUTER_*) or a .env file."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
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
    upstream_timeout_s: float = 60.0

    # local engines
    local_substitute: bool = True  # serve catalog models whose upstream has no key with the local engines
    workers: int = default_workers()
    queue_size: int = 16  # local jobs waiting beyond `workers` before new ones get 503
    whisper_beam_size: int = 5
    whisper_model_dir: Path | None = None  # a CTranslate2 Whisper directory to use instead of the bundled base
    preload: bool = True  # load local models at start-up rather than on the first request

    log_level: str = "info"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
