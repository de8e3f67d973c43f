"""Webhook secrets at rest: always encrypted (store/crypto.py; a key is made once in the data dir, mode 0600, when
none is configured), every process sharing a database on the same key (store/keycheck.py refuses to start one
that cannot decrypt what is stored, naming where its key came from), and rows an older version stored in clear
(`plain:<secret>`) encrypted at start-up, their webhooks still signed with the right secret."""
from __future__ import annotations

import asyncio
import shutil
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from audiorouter.config import Settings
from audiorouter.jobs.batch import JobRuntime
from audiorouter.jobs.queue import JobQueue
from audiorouter.store import Store
from audiorouter.store.blobs import LocalBlobs
from audiorouter.store.db import StoreConfigError
from audiorouter.store.jobs import JobStore
from audiorouter.store.models import Meta, utcnow
from batch_support import SECRET, WebhookReceiver, wait_for
from conftest import ServerProcess
from test_keys_support import cli, gateway_env, pg_db  # noqa: F401  (pg_db is a fixture)


def _settings(data_dir: Path, database_url: str | None = None, **kw) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, database_url=database_url, preload=False, **kw)


async def _start(settings: Settings) -> Store:
    store = Store(settings)
    try:
        await store.start(check_bind=False)
    except BaseException:
        await store.close()
        raise
    return store


def test_nodes_with_different_keys_refuse_to_start(pg_db, tmp_path):
    """PostgreSQL, no AUDIOROUTER_SECRET_KEY anywhere: the first node's generated key becomes the database's; a
    second node with its own data dir (so its own generated key) refuses to start, and starts with a copy of the
    first one's key file. A configured key that differs refuses too; the message never shows a key."""
    a_dir, b_dir = tmp_path / "node-a", tmp_path / "node-b"

    async def main():
        a = await _start(_settings(a_dir, pg_db.url))
        key_file = a_dir / "secret.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        await a.close()
        with pytest.raises(StoreConfigError) as e:
            await _start(_settings(b_dir, pg_db.url))
        msg = str(e.value)
        assert "cannot decrypt" in msg and str(b_dir / "secret.key") in msg and "AUDIOROUTER_SECRET_KEY" in msg
        assert (b_dir / "secret.key").read_text() not in msg and key_file.read_text() not in msg
        shutil.copy(key_file, b_dir / "secret.key")
        b = await _start(_settings(b_dir, pg_db.url))  # the same key: it starts
        await b.close()
        with pytest.raises(StoreConfigError, match="AUDIOROUTER_SECRET_KEY\\)") as e:
            await _start(_settings(b_dir, pg_db.url, secret_key="another-passphrase-for-this-node"))
        assert "another-passphrase" not in str(e.value)

    asyncio.run(main())


def test_a_database_from_before_the_check_is_checked_on_its_secrets(tmp_path):
    """No canary yet (a database an older version wrote): its stored webhook secrets decide."""
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"

    async def main():
        a = await _start(_settings(tmp_path / "a", db_url))
        await JobStore(a.db).create(
            {"id": "job-old", "params": {"model": "m"}, "generation_id": "g", "reserved_nano": 0,
             "webhook_url": "https://example.com/h", "webhook_secret": a.vault.encrypt(SECRET)})
        async with a.db.writer() as s, s.begin():  # as if the database predated the canary
            await s.execute(delete(Meta).where(Meta.key == "secret_key_check"))
        await a.close()
        with pytest.raises(StoreConfigError, match="cannot decrypt"):
            await _start(_settings(tmp_path / "b", db_url))
        again = await _start(_settings(tmp_path / "a", db_url))  # its own key: fine, and the canary is back
        await again.close()
        with pytest.raises(StoreConfigError, match="cannot decrypt"):
            await _start(_settings(tmp_path / "b", db_url))

    asyncio.run(main())


def test_plain_rows_are_encrypted_at_start_and_still_sign(tmp_path):
    """A webhook secret stored in clear by an older version is encrypted by the runtime's start-up; the delivery
    that follows is signed with the original secret (the receiver checks it the documented way)."""
    hook = WebhookReceiver(SECRET)

    async def main():
        settings = _settings(tmp_path, url_fetch_allow_hosts="127.0.0.1/32")
        store = await _start(settings)
        queue = JobQueue(settings)
        rt = JobRuntime(settings, None, store, queue, LocalBlobs(tmp_path / "blobs"))
        try:
            now = utcnow()
            for i in range(3):
                await rt.jobs.create({"id": f"job-{i}", "params": {"model": "m"}, "generation_id": f"g{i}",
                                      "reserved_nano": 0, "status": "failed", "finished_at": now - timedelta(seconds=1),
                                      "error": {"code": 502, "type": "upstream_error", "message": "x"},
                                      "webhook_url": hook.url, "webhook_secret": "plain:" + SECRET})
            await rt.prepare()
            stored = {}
            for i in range(3):
                job = await rt.jobs.get(f"job-{i}")
                assert job.webhook_secret and SECRET not in job.webhook_secret
                assert not job.webhook_secret.startswith("plain:")
                assert rt._secret(job) == SECRET
                stored[job.id] = job.webhook_secret
            await rt.prepare()  # nothing left to do: the encrypted rows are not rewritten
            assert {j: (await rt.jobs.get(j)).webhook_secret for j in stored} == stored
            assert await rt.deliver("job-0") == "delivered"
        finally:
            queue.close()
            await store.close()

    try:
        asyncio.run(main())
        assert wait_for(lambda: hook.for_job("job-0"), 10)
        events = hook.for_job("job-0")
        assert events[0]["valid"] and events[0]["json"]["status"] == "failed"
    finally:
        hook.close()


@pytest.mark.slow  # two processes that load the app (~17 s here)
def test_server_and_worker_refuse_a_key_that_cannot_decrypt(tmp_path):
    """The same refusal from `audiorouter serve` and `audiorouter worker`: exit status 1, one line saying why."""
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"

    async def first_node():
        store = await _start(_settings(tmp_path / "data", db_url, secret_key="the-first-nodes-passphrase"))
        await store.close()
    asyncio.run(first_node())
    other = gateway_env(tmp_path, database_url=db_url, AUDIOROUTER_SECRET_KEY="a-different-passphrase",
                        AUDIOROUTER_DATA_DIR=str(tmp_path / "w"))
    r = cli(other, "worker")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "audiorouter worker: the secret key of this process (AUDIOROUTER_SECRET_KEY) cannot decrypt" in r.stderr
    assert "a-different-passphrase" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    with pytest.raises(RuntimeError, match="cannot decrypt the secrets already stored"):
        ServerProcess(env=other, tmp=tmp_path).start()


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_processes_creating_the_key_at_once_all_get_the_same_whole_key(tmp_path, monkeypatch, links):
    """Eight threads making the data dir's key at once (as a server and its workers starting together) all read
    the one key that won, mode 0600; on a filesystem without hard links (os.link failing as on some network
    mounts) too, through the exclusive in-place create."""
    import threading

    from audiorouter.store import crypto

    if not links:
        def no_link(src, dst, *a, **kw):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(crypto.os, "link", no_link)
    settings = _settings(tmp_path / "data")
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def make() -> None:
        start.wait()
        f = crypto.load_secret(settings, may_create=True)
        keys.append(f.decrypt(f.encrypt(b"x")) and (tmp_path / "data" / "secret.key").read_bytes())

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == crypto.KEY_CHARS
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left behind
    token = crypto.load_secret(settings, may_create=True).encrypt(b"secret")
    assert crypto.load_secret(settings, may_create=True).decrypt(token) == b"secret"  # the same key, read again
