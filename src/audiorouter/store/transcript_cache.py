"""Transcript cache: the same audio, model and output-changing parameters give the stored transcript instead
of a new (billed) transcription. Keyed by sha256(audio bytes) plus model, task, language, prompt,
temperature, word timings and routing preferences (never the response format: rendering is ours, so json,
srt and vtt of one transcription share an entry). Stored in a local SQLite file (cache_dir/transcripts.db),
or in Redis when AUDIOROUTER_REDIS_URL is set, for AUDIOROUTER_CACHE_TTL_S seconds (0 disables it).

Per request: `Cache-Control: no-cache` skips the lookup but stores the fresh result, `Cache-Control:
no-store` or a body flag `"cache": false` skips both. Requests with provider.zdr are never stored. A cache
failure is logged and treated as a miss; it never fails the request.

The transcription job (jobs/transcription.py) decides when to look up and store; this module only keeps
entries."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from ..core.types import Segment, Transcript, TranscriptionRequest, Word

log = logging.getLogger("audiorouter.cache")
FORMAT_VERSION = 1

USE, REFRESH, OFF = "use", "refresh", "off"


def policy(cache_control: str | None, body_flag: bool | None, req: TranscriptionRequest) -> str:
    """USE (read and write), REFRESH (write only) or OFF, from the request's header, body flag and prefs."""
    if body_flag is False or req.provider.zdr:
        return OFF
    directives = {d.strip().split("=", 1)[0].lower() for d in (cache_control or "").split(",") if d.strip()}
    if "no-store" in directives:
        return OFF
    if "no-cache" in directives or "max-age=0" in (cache_control or "").lower().replace(" ", "").split(","):
        return REFRESH
    return USE


def audio_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# the request extras that change what a provider answers (logprobs, speakers, chunking): part of the key
KEYED_EXTRAS = ("diarize", "keyterms", "include", "known_speaker_names", "known_speaker_references",
                "chunking_strategy")


def cache_key(digest: str, req: TranscriptionRequest, *, words: bool, namespace: str = "") -> str:
    prefs = dataclasses.asdict(req.provider)
    parts = {
        "v": FORMAT_VERSION, "ns": namespace, "audio": digest, "model": req.model, "models": req.models or [],
        "task": req.task, "language": req.language, "prompt": req.prompt, "temperature": req.temperature,
        "words": words, "provider": prefs,
        "extra": {k: req.extra[k] for k in sorted(req.extra) if k in KEYED_EXTRAS},
    }
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---- (de)serialization ---------------------------------------------------------------------------------
def transcript_to_dict(t: Transcript) -> dict[str, Any]:
    return dataclasses.asdict(t)


def transcript_from_dict(d: dict[str, Any]) -> Transcript:
    segments = []
    for s in d.get("segments") or []:
        words = [Word(**w) for w in s.get("words") or []]
        segments.append(Segment(**{**s, "words": words}))
    return Transcript(**{**d, "segments": segments})


# ---- backends ------------------------------------------------------------------------------------------
class SqliteBackend:
    """One connection shared by worker threads behind a lock; every call runs off the event loop."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS transcripts (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                         "expires REAL NOT NULL)")
        self._writes = 0

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value, expires FROM transcripts WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            if row[1] < time.time():
                self._db.execute("DELETE FROM transcripts WHERE key = ?", (key,))
                return None
            return row[0]

    def _put(self, key: str, value: bytes, ttl: float) -> None:
        with self._lock:
            now = time.time()
            self._db.execute("INSERT OR REPLACE INTO transcripts (key, value, expires) VALUES (?, ?, ?)",
                             (key, value, now + ttl))
            self._writes += 1
            if self._writes % 200 == 1:  # sweep expired entries now and then
                self._db.execute("DELETE FROM transcripts WHERE expires < ?", (now,))

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await asyncio.to_thread(self._put, key, value, ttl)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()


class RedisBackend:
    prefix = "audiorouter:stt:"

    def __init__(self, url: str):
        import redis.asyncio as aioredis  # a dependency of audiorouter (pyproject.toml), not an extra
        self._r = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def get(self, key: str) -> bytes | None:
        raw = await self._r.get(self.prefix + key)
        return raw.encode() if isinstance(raw, str) else raw

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._r.set(self.prefix + key, value, ex=max(1, int(ttl)))

    async def aclose(self) -> None:
        await self._r.aclose()


class TranscriptCache:
    def __init__(self, backend: Any, ttl_s: float):
        self.backend = backend
        self.ttl_s = ttl_s
        self.kind = "redis" if isinstance(backend, RedisBackend) else "sqlite"

    @classmethod
    def from_settings(cls, settings: Any) -> TranscriptCache | None:
        ttl = getattr(settings, "cache_ttl_s", 0) or 0
        if ttl <= 0:
            return None
        url = getattr(settings, "redis_url", None)
        path = getattr(settings, "cache_path", None) or Path(settings.cache_dir) / "transcripts.db"
        backend = RedisBackend(url) if url else SqliteBackend(Path(path))
        return cls(backend, ttl)

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = await self.backend.get(key)
            if raw is None:
                return None
            entry = orjson.loads(raw)
            if entry.get("v") != FORMAT_VERSION:
                return None
            entry["transcript"] = transcript_from_dict(entry["transcript"])
            return entry
        except Exception as e:  # noqa: BLE001 - a broken cache is a miss, never a failed request
            log.warning("transcript cache read failed (%s: %s)", e.__class__.__name__, e)
            return None

    async def put(self, key: str, transcript: Transcript, meta: dict[str, Any]) -> None:
        try:
            value = orjson.dumps({"v": FORMAT_VERSION, "transcript": transcript_to_dict(transcript), **meta})
            await self.backend.put(key, value, self.ttl_s)
        except Exception as e:  # noqa: BLE001
            log.warning("transcript cache write failed (%s: %s)", e.__class__.__name__, e)

    async def aclose(self) -> None:
        try:
            await self.backend.aclose()
        except Exception:  # noqa: BLE001
            pass


def get_cache(app: Any, settings: Any) -> TranscriptCache | None:
    """The app's cache, created on first use (None when disabled)."""
    state = app.state
    if not hasattr(state, "transcript_cache"):
        state.transcript_cache = TranscriptCache.from_settings(settings)
    return state.transcript_cache
