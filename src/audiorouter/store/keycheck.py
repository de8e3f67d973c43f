"""Every process that shares a database must hold the same secret key (store/crypto.py): it encrypts the
provider keys (BYOK) and the batch jobs' webhook secrets at rest. A process whose key cannot decrypt what is
already stored refuses to start, naming where its key came from and what to do, instead of failing later on
every webhook or BYOK request.

The proof is a canary in ar_meta (`secret_key_check`): a Fernet token of a fixed text, written by the first
process that starts with a key. Before writing it (a database that predates the canary) the newest stored
secrets are tried instead, so an existing installation is checked too."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .crypto import Vault
from .db import Database, StoreConfigError, safe_url
from .models import ByokKey, Job, Meta

log = logging.getLogger("audiorouter.store")
CANARY_KEY = "secret_key_check"
CANARY_TEXT = "audiorouter secret key check v1"


def key_source(settings: Any) -> str:
    """Where this process' key comes from, as a person would look for it (never the key itself)."""
    if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
        return "AUDIOROUTER_SECRET_KEY"
    if settings.secret_key_file is not None:
        return f"AUDIOROUTER_SECRET_KEY_FILE={settings.secret_key_file}"
    return f"the key file {Path(settings.data_dir) / 'secret.key'} (generated: no AUDIOROUTER_SECRET_KEY is set)"


def mismatch(settings: Any, db: Database) -> StoreConfigError:
    return StoreConfigError(
        f"the secret key of this process ({key_source(settings)}) cannot decrypt the secrets already stored in the "
        f"database {safe_url(db.url)} (provider keys, webhook secrets): every server and worker that shares a "
        "database must use the same key. Copy the key of the machine that stored them (its AUDIOROUTER_SECRET_KEY, "
        "or the file secret.key in its AUDIOROUTER_DATA_DIR) into AUDIOROUTER_SECRET_KEY or "
        "AUDIOROUTER_SECRET_KEY_FILE here (docs/deployment.md, \"One secret key for all nodes\")")


async def _stored_samples(db: Database) -> list[str]:
    """The newest encrypted provider key and webhook secret, if any (rows stored before the canary existed)."""
    async with db.sessions() as s:
        byok = await s.scalar(select(ByokKey.encrypted_key).order_by(ByokKey.created_at.desc()).limit(1))
        hook = await s.scalar(select(Job.webhook_secret).where(Job.webhook_secret.is_not(None),
                                                               Job.webhook_secret.not_like("plain:%"))
                              .order_by(Job.created_at.desc()).limit(1))
    return [t for t in (byok, hook) if t]


async def check_secret_key(db: Database, vault: Vault, settings: Any) -> None:
    """Raise StoreConfigError when this process' key is not the database's; record the key's canary on a
    database that has none yet."""
    if not vault.ready:
        return
    async with db.sessions() as s:
        canary = await s.scalar(select(Meta.value).where(Meta.key == CANARY_KEY))
    if canary is not None:
        if vault.decrypt(canary) != CANARY_TEXT:
            raise mismatch(settings, db)
        return
    for token in await _stored_samples(db):
        if vault.decrypt(token) is None:
            raise mismatch(settings, db)
    try:
        async with db.writer() as s, s.begin():
            s.add(Meta(key=CANARY_KEY, value=vault.encrypt(CANARY_TEXT)))
    except IntegrityError:  # another process wrote it at the same moment: it must be our key too
        async with db.sessions() as s:
            canary = await s.scalar(select(Meta.value).where(Meta.key == CANARY_KEY))
        if canary is None or vault.decrypt(canary) != CANARY_TEXT:
            raise mismatch(settings, db) from None
        return
    if not db.is_sqlite:
        log.warning("this database's secret key is now the one from %s: every other server and worker that shares "
                    "it must use the same key", key_source(settings))
