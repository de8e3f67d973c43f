"""Helpers for tests that run audiorouter against fakes: write a user catalog, start a gateway process
pointed at it (no local substitution, no preloading, no transcript cache, provider keys only as given)."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import yaml

PROVIDER_KEY_ENVS = ("OPENAI_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "OPENROUTER_API_KEY", "GOOGLE_API_KEY",
                     "DEEPGRAM_API_KEY", "ELEVENLABS_API_KEY", "GOOGLE_ACCESS_TOKEN")


def write_catalog(path: Path, providers: dict[str, Any], models: list[dict[str, Any]] | None = None) -> Path:
    path.write_text(yaml.safe_dump({"providers": providers, "models": models or []}, sort_keys=False))
    return path


def gateway_env(catalog: Path, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: "" for k in PROVIDER_KEY_ENVS}
    env.update({
        "AUDIOROUTER_CATALOG": str(catalog),
        "AUDIOROUTER_LOCAL_SUBSTITUTE": "false",
        "AUDIOROUTER_PRELOAD": "false",
        "AUDIOROUTER_CACHE_TTL_S": "0",
        "AUDIOROUTER_DATA_DIR": str(tmp / "data"),
        "AUDIOROUTER_RETRY_BACKOFF_S": "0.05",
        "AUDIOROUTER_RETRY_BACKOFF_MAX_S": "0.2",
    })
    env.update(extra)
    return env


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_attempts(header: str | None) -> list[tuple[str, int]]:
    """X-Route-Attempts "provider:status:ms,..." -> [(provider, status), ...]."""
    out = []
    for item in (header or "").split(","):
        if item:
            provider, status, _ = item.rsplit(":", 2)
            out.append((provider, int(status)))
    return out
