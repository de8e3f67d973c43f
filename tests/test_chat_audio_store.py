"""Spoken chat answers' audio ids live in the database (store/chat_audio.py), so a multi-turn conversation may
land on any replica: two gateway processes over one database (SQLite file, and PostgreSQL where it can be
reached; under CI=true it must be) resolve each other's ids within expires_at, scoped to the caller. The store
itself: scoping, expiry, the sweep of long-expired rows."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from audiorouter.store.chat_audio import ChatAudioStore, new_audio_id
from audiorouter.store.db import Database
from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import ONE_ATTEMPT, b64, gateway_env, write_catalog
from fakes.openai_chat_fake import OpenAIChatFake
from fakes.runner import probe
from test_keys_support import PgDatabase

QUESTION = DEV_AUDIO / "sr_english.wav"


# ---- the store ------------------------------------------------------------------------------------------------
@pytest.fixture
async def store(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    await db.upgrade()
    yield ChatAudioStore(db, grace_s=60, sweep_every_s=1e9)  # no sweep from put: the test sweeps itself
    await db.close()


async def test_store_scopes_expires_and_sweeps(store):
    now = int(time.time())
    live, old, recent = new_audio_id(), new_audio_id(), new_audio_id()
    assert live != old and live.startswith("audio_")
    assert await store.put(live, "key-a", "It is sunny.", now + 600, {"provider": "openai", "id": "audio_up",
                                                                      "expires_at": now + 600})
    assert await store.put(old, "key-a", "Long gone.", now - 3600)
    assert await store.put(recent, "key-a", "Just expired.", now - 5)
    rec, expired = await store.get(live, "key-a")
    assert not expired and rec.transcript == "It is sunny." and rec.upstream["id"] == "audio_up"
    assert await store.get(live, "key-b") == (None, False)  # another caller's id is unknown to it
    assert await store.get("audio_never", "key-a") == (None, False)
    rec, expired = await store.get(recent, "key-a")
    assert expired and rec.expires_at == now - 5
    assert await store.sweep(now=now) == 1  # only the row expired longer than grace_s ago (clock: the test's)
    assert await store.get(old, "key-a") == (None, False)
    assert (await store.get(recent, "key-a"))[1] is True and (await store.get(live, "key-a"))[0] is not None


async def test_put_starts_the_sweep_without_waiting_for_it(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    await db.upgrade()
    try:
        store = ChatAudioStore(db, grace_s=60, sweep_every_s=0)
        old = new_audio_id()
        assert await store.put(old, "k", "Long gone.", int(time.time()) - 3600)
        task = store._sweeping
        assert task is not None  # started by that put, not awaited by it
        await task
        assert store._sweeping is None
        assert await store.get(old, "k") == (None, False)  # swept: it had expired more than grace_s ago
    finally:
        await db.close()


# ---- two replicas over one database --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake():
    f = OpenAIChatFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def replicas(request, fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"chat-replicas-{request.param}")
    pg = PgDatabase().create() if request.param == "postgres" else None
    url = pg.url if pg is not None else f"sqlite:///{tmp / 'shared.db'}"
    cat = write_catalog(tmp / "catalog.yaml", {
        "openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url, "api_key_env": "OPENAI_API_KEY"}},
        [{"id": "test/voice", "name": "audio chat", "kind": "chat", "voices": ["nova"],
          "endpoints": [{"provider": "openai", "upstream_model": "gpt-4o-audio-preview", "input_formats": ["wav"],
                         "capabilities": {"audio_input": True, "audio_output": True, "streaming": True}}]}])
    env = gateway_env(cat, tmp, **ONE_ATTEMPT, OPENAI_API_KEY=fake.api_key, AUDIOROUTER_DATABASE_URL=url,
                      AUDIOROUTER_SECRET_KEY="test-secret-chat-replicas")
    procs = [ServerProcess(env=env, tmp=tmp) for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:  # both start (and migrate the empty database) at once
            list(pool.map(lambda p: p.start(), procs))
        yield procs
    finally:
        for p in procs:
            p.stop()
        if pg is not None:
            pg.drop()


@pytest.mark.slow  # two gateway processes per database backend (~15 s to start on 2 cores)
def test_an_audio_id_from_one_replica_is_resolved_by_the_other(replicas, fake):
    a, b = replicas
    fake.clear()
    question = {"role": "user", "content": [{"type": "input_audio",
                                             "input_audio": {"data": b64(QUESTION.read_bytes()), "format": "wav"}}]}
    first = httpx.post(a.url + "/v1/chat/completions", timeout=60, json={
        "model": "test/voice", "modalities": ["text", "audio"], "audio": {"voice": "nova", "format": "mp3"},
        "messages": [question]})
    assert first.status_code == 200, first.text
    spoken = first.json()["choices"][0]["message"]["audio"]
    assert spoken["expires_at"] > time.time()
    upstream_id = list(fake.issued)[-1]  # the id the upstream gave that answer
    turn = [question, {"role": "assistant", "audio": {"id": spoken["id"]}}, {"role": "user", "content": "Again?"}]
    second = httpx.post(b.url + "/api/v1/chat/completions", timeout=60, json={"model": "test/voice", "messages": turn})
    assert second.status_code == 200, second.text
    heard = probe(QUESTION.read_bytes()).duration
    assert second.json()["choices"][0]["message"]["content"] == f"I heard {heard:.1f} seconds of audio."
    # replica b found a's record: the upstream got its own id for that turn back
    assert fake.calls[-1].json["messages"][1] == {"role": "assistant", "audio": {"id": upstream_id}}
    # an id neither replica gave out is a 400 on both
    for gw in (a, b):
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=60, json={"model": "test/voice", "messages": [
            question, {"role": "assistant", "audio": {"id": "audio_" + "0" * 24}}, {"role": "user", "content": "?"}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages[1].audio.id", r.text
    assert not fake.violations, fake.violations
