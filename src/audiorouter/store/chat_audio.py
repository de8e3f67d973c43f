"""Spoken chat answers by gateway audio id (ar_chat_audio), shared by every process on the database.

A spoken answer gets an id (`audio_<hex>`, new_audio_id) that a later turn may send back as
{"role": "assistant", "audio": {"id"}}: the row keeps the answer's transcript, the caller it belongs to (the key's
hash, "" without auth) and, where an upstream made the audio, the upstream's own id and expiry. Any replica can
resolve an id until its `expires_at`; after that `get` still tells "expired" (for the 400's message) until the
sweep deletes the row, `grace_s` after it expired. The sweep is started by `put`, at most every `sweep_every_s`
per process, as a task of its own (the answer that called put does not wait for it), and runs on demand.

A failed write is logged, not raised (the answer it belongs to has been produced and billed; only a later turn
that names it is affected). A failed read raises (SQLAlchemyError: the API answers 503)."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from .db import Database, rowcount
from .models import ChatAudio

log = logging.getLogger("audiorouter.store.chat_audio")


def new_audio_id() -> str:
    return "audio_" + secrets.token_hex(12)


@dataclass
class SpokenAnswer:
    namespace: str
    transcript: str
    expires_at: int
    upstream: dict[str, Any] = field(default_factory=dict)


class ChatAudioStore:
    def __init__(self, db: Database, *, sweep_every_s: float = 300.0, grace_s: float = 3600.0):
        self.db = db
        self.sweep_every_s = sweep_every_s
        self.grace_s = grace_s
        self._swept = 0.0  # time.monotonic() of this process' last sweep
        self._sweeping: asyncio.Task[None] | None = None  # the sweep under way (a reference keeps it alive)

    async def put(self, audio_id: str, namespace: str, transcript: str, expires_at: int,
                  upstream: dict[str, Any] | None = None) -> bool:
        """Keep a spoken answer; False (logged) when the database refused the write."""
        try:
            async with self.db.writer() as s, s.begin():
                s.add(ChatAudio(id=audio_id, namespace=namespace, transcript=transcript, expires_at=int(expires_at),
                                upstream=dict(upstream) if upstream else None))
        except SQLAlchemyError as e:
            log.warning("could not keep spoken answer %s (%s): a later turn naming it will get a 400",
                        audio_id[:16], type(e).__name__)
            return False
        if time.monotonic() - self._swept >= self.sweep_every_s and self._sweeping is None:
            self._swept = time.monotonic()
            self._sweeping = asyncio.get_running_loop().create_task(self._sweep_logged())
        return True

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except Exception as e:  # noqa: BLE001 (a background task: whatever stops it is logged, never lost)
            log.warning("chat audio sweep failed (%s)", type(e).__name__)
        finally:
            self._sweeping = None

    async def get(self, audio_id: str, namespace: str) -> tuple[SpokenAnswer | None, bool]:
        """(answer, expired): None when the id is unknown to this caller (or swept)."""
        async with self.db.sessions() as s:
            row = (await s.execute(select(ChatAudio).where(ChatAudio.id == audio_id))).scalar_one_or_none()
        if row is None or row.namespace != namespace:
            return None, False
        rec = SpokenAnswer(row.namespace, row.transcript, int(row.expires_at), dict(row.upstream or {}))
        return rec, rec.expires_at <= time.time()

    async def sweep(self, now: float | None = None) -> int:
        """Delete answers that expired more than grace_s ago; returns how many."""
        cutoff = int((time.time() if now is None else now) - self.grace_s)
        async with self.db.writer() as s, s.begin():
            res = await s.execute(delete(ChatAudio).where(ChatAudio.expires_at < cutoff))
        return rowcount(res)
