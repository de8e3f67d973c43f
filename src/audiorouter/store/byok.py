"""Provider keys of the caller's own (BYOK), shaped like OpenRouter's /byok API. Each is encrypted at rest
and may be restricted to some API keys (allowed_api_key_hashes) and models (allowed_models)."""
from __future__ import annotations

import builtins  # ByokStore.list shadows the builtin in its class body
import logging
import secrets
from typing import Any

from sqlalchemy import delete, func, select, update

from .cache import TTLCache
from .crypto import Vault
from .db import Database, rowcount
from .keys import iso, mask
from .models import ByokKey, utcnow

log = logging.getLogger("audiorouter.byok")


class ByokStore:
    def __init__(self, db: Database, vault: Vault, *, ttl_s: float = 2.0):
        self.db = db
        self.vault = vault
        self._usable = TTLCache(ttl_s)  # "rows" -> the enabled keys, decrypted, in order of preference
        db.on_change(self._changed)

    def _changed(self, topic: str) -> None:
        if topic in ("byok", "*"):
            self._usable.drop()

    async def create(self, *, provider: str, key: str, name: str | None, allowed_api_key_hashes: list[str] | None,
                     allowed_models: list[str] | None, disabled: bool, is_fallback: bool) -> ByokKey:
        now = utcnow()
        async with self.db.changing("byok") as s:
            order = await s.scalar(select(func.count()).select_from(ByokKey).where(ByokKey.provider == provider))
            row = ByokKey(id=secrets.token_hex(16), provider=provider, name=name, label=mask(key),
                          encrypted_key=self.vault.encrypt(key), allowed_api_key_hashes=allowed_api_key_hashes,
                          allowed_models=allowed_models, disabled=disabled, is_fallback=is_fallback,
                          sort_order=int(order or 0), created_at=now, updated_at=None)
            s.add(row)
        return row

    async def relabel(self) -> int:
        """Give every stored key the label mask() gives it now (labels of keys stored by older versions
        showed their first 4 characters too). Keys that cannot be decrypted keep theirs."""
        async with self.db.sessions() as s:
            rows = list((await s.execute(select(ByokKey.id, ByokKey.label, ByokKey.encrypted_key))).all())
        stale = {}
        for byok_id, label, encrypted in rows:
            plain = self.vault.decrypt(encrypted)
            if plain is not None and label != mask(plain):
                stale[byok_id] = mask(plain)
        if stale:
            async with self.db.changing("byok") as s:
                for byok_id, label in stale.items():
                    await s.execute(update(ByokKey).where(ByokKey.id == byok_id).values(label=label))
        return len(stale)

    async def list(self, *, offset: int, limit: int, provider: str | None) -> tuple[list[ByokKey], int]:
        q = select(ByokKey)
        c = select(func.count()).select_from(ByokKey)
        if provider:
            q, c = q.where(ByokKey.provider == provider), c.where(ByokKey.provider == provider)
        async with self.db.sessions() as s:
            rows = list((await s.scalars(q.order_by(ByokKey.provider, ByokKey.sort_order, ByokKey.created_at)
                                         .offset(offset).limit(limit))).all())
            total = int(await s.scalar(c) or 0)
        return rows, total

    async def get(self, byok_id: str) -> ByokKey | None:
        async with self.db.sessions() as s:
            return await s.get(ByokKey, byok_id)

    async def update(self, byok_id: str, changes: dict[str, Any]) -> ByokKey | None:
        values = dict(changes)
        if "key" in values:
            secret = values.pop("key")
            values["encrypted_key"] = self.vault.encrypt(secret)
            values["label"] = mask(secret)
        values["updated_at"] = utcnow()
        async with self.db.changing("byok") as s:
            res = await s.execute(update(ByokKey).where(ByokKey.id == byok_id).values(**values))
        if not rowcount(res):
            return None
        return await self.get(byok_id)

    async def delete(self, byok_id: str) -> bool:
        async with self.db.changing("byok") as s:
            res = await s.execute(delete(ByokKey).where(ByokKey.id == byok_id))
        return rowcount(res) > 0

    async def keys_for(self, key_hash: str | None, models: builtins.list[str]) -> dict[str, str]:
        """provider slug -> plaintext key usable by this API key for these models (first in sort order;
        a non-fallback key before a fallback one). Reads the in-process copy (store/cache.py)."""
        self.db.poll_changes()
        out: dict[str, str] = {}
        for provider, hashes, allowed_models, plain in await self._usable.get("rows", self._load):
            if provider in out:
                continue
            if hashes is not None and key_hash not in hashes:
                continue
            if allowed_models is not None and not any(m in allowed_models for m in models):
                continue
            out[provider] = plain
        return out

    async def _load(self) -> builtins.list[tuple[str, frozenset | None, frozenset | None, str]]:
        async with self.db.sessions() as s:
            rows = list((await s.scalars(select(ByokKey).where(ByokKey.disabled.is_(False))
                                         .order_by(ByokKey.is_fallback, ByokKey.sort_order, ByokKey.created_at))).all())
        usable = []
        for r in rows:
            plain = self.vault.decrypt(r.encrypted_key)
            if plain is None:
                log.warning("BYOK key %s (%s) cannot be decrypted with the configured secret; skipped",
                            r.id, r.provider)
                continue
            hashes, models = r.allowed_api_key_hashes, r.allowed_models
            usable.append((r.provider, None if hashes is None else frozenset(hashes),
                           None if models is None else frozenset(models), plain))
        return usable


def byok_data(r: ByokKey) -> dict[str, Any]:
    """OpenRouter's BYOKKey shape (the key itself is never returned)."""
    return {
        "id": r.id,
        "provider": r.provider,
        "name": r.name,
        "label": r.label,
        "disabled": r.disabled,
        "is_fallback": r.is_fallback,
        "is_byok_only": False,
        "is_required": False,
        "sort_order": r.sort_order,
        "allowed_api_key_hashes": r.allowed_api_key_hashes,
        "allowed_models": r.allowed_models,
        "allowed_user_ids": None,
        "declared_region": None,
        "declared_zdr": None,
        "workspace_id": "default",
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }
