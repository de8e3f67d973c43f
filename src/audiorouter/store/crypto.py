"""Encryption at rest for provider keys (BYOK): Fernet (AES-128-CBC + HMAC-SHA256). The key material comes
from AUDIOROUTER_SECRET_KEY, else the file named by AUDIOROUTER_SECRET_KEY_FILE; else a random one is created
once in the data dir (mode 0600). Every process sharing a database must use the same key (store/keycheck.py
refuses to start one that cannot decrypt what is stored)."""
from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class SecretUnavailable(RuntimeError):
    pass


def _fernet_from(secret: str) -> Fernet:
    s = secret.strip()
    try:
        if len(base64.urlsafe_b64decode(s.encode())) == 32:
            return Fernet(s.encode())
    except (ValueError, TypeError):
        pass
    # any other passphrase: derive a Fernet key from it
    digest = hashlib.sha256(b"audiorouter/byok/v1\0" + s.encode("utf-8")).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def load_secret(settings: Any, *, may_create: bool) -> Fernet | None:
    if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
        return _fernet_from(settings.secret_key.get_secret_value())
    path: Path | None = settings.secret_key_file
    if path is not None:
        try:
            return _fernet_from(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise SecretUnavailable(f"AUDIOROUTER_SECRET_KEY_FILE: cannot read {path}: {e.strerror}") from None
    if not may_create:
        return None
    path = Path(settings.data_dir) / "secret.key"
    if not path.exists():
        _create_key_file(path)
    return _fernet_from(_read_key_file(path))


def _create_key_file(path: Path) -> None:
    """A new random key at `path` (0600), or nothing where another process made it first. Written whole under
    another name, then linked into place: processes starting at once over one data dir (a server and its
    workers) all end up with the one file that won, never an empty or half one. On a filesystem without hard
    links (some network and container mounts) the file is created exclusively in place instead, and readers
    wait for it to be whole (_read_key_file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    tmp = path.with_name(f".secret.key.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        _write_new(tmp, key)
        os.link(tmp, path)
        return
    except FileExistsError:
        return  # another process created it first: use theirs
    except OSError:
        pass  # no hard links here: created in place below
    finally:
        tmp.unlink(missing_ok=True)
    try:
        _write_new(path, key)
    except FileExistsError:
        pass


def _write_new(path: Path, text: str) -> None:
    """`text` into a file that must not exist yet (0600), flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


KEY_CHARS = 44  # a Fernet key: 32 bytes, url-safe base64
KEY_WAIT_S = 5.0


def _read_key_file(path: Path) -> str:
    """The generated key; a file shorter than a key is one still being written by another process (only where
    hard links are missing), read again until it is whole or KEY_WAIT_S passed."""
    deadline = time.monotonic() + KEY_WAIT_S
    while True:
        text = path.read_text(encoding="utf-8")
        if len(text.strip()) >= KEY_CHARS or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


class Vault:
    def __init__(self, fernet: Fernet | None):
        self.fernet = fernet

    @property
    def ready(self) -> bool:
        return self.fernet is not None

    def encrypt(self, plaintext: str) -> str:
        if self.fernet is None:
            raise SecretUnavailable("storing provider keys needs AUDIOROUTER_SECRET_KEY or AUDIOROUTER_SECRET_KEY_FILE "
                                    "(the same on every replica)")
        return self.fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str | None:
        if self.fernet is None:
            return None
        try:
            return self.fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            return None
