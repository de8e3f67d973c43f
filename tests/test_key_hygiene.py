"""Keys and spend, as a hostile or unlucky client meets them (SQLite store, a fake OpenAI upstream):
a management key someone chose must be long and unpredictable; labels give away at most the last 4
characters of a secret; `limit_remaining` counts the reservations of requests in flight; spend resets at the
daily / weekly / monthly boundary (and not before); a locked database answers 503 + Retry-After after
AUDIOROUTER_DB_BUSY_TIMEOUT_S, not after 30 s."""
from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conftest import ROOT, free_port
from fakes.openai_fake import OpenAIFake
from test_keys_support import Gateway, SqliteDatabase, clean_environ, gateway_env, new_management_key

TEXT = "Hello there."  # 12 characters: $0.012 at $1000 per million characters
PRICE = len(TEXT) * 0.001


# ---- management keys someone chose ------------------------------------------------------------------------
def test_weak_keys_are_refused_and_generated_ones_pass():
    from audiorouter.store.keys import new_secret, weak_secret
    for weak in ("1", "sk-ar-admin-short", "a" * 40, "abcdefghijklmnopqrstuvwxyz0123456789",
                 "sk-ar-admin-" + "password" * 4, "sk-ar-admin-" + "0123456789" * 3):
        assert weak_secret(weak) is not None, weak
    for _ in range(50):
        assert weak_secret(new_secret()) is None
        assert weak_secret(secrets.token_hex(16)) is None  # `openssl rand -hex 16`: 128 bits
        assert weak_secret(secrets.token_urlsafe(32)) is None
    assert weak_secret("correct horse battery staple, then " + secrets.token_hex(8)) is None


async def test_a_chosen_key_is_checked_wherever_it_enters(tmp_path):
    from audiorouter.config import Settings
    from audiorouter.store import Store
    from audiorouter.store.keys import WeakSecret
    store = Store(Settings(_env_file=None, data_dir=tmp_path, secret_key="test-secret"))
    await store.start(check_bind=False)
    try:
        with pytest.raises(WeakSecret, match=r"^key is shorter than 32 characters"):
            await store.keys.create(name="x", secret="sk-ar-v1-1")
        with pytest.raises(WeakSecret, match=r"^AUDIOROUTER_MANAGEMENT_KEY is too predictable"):
            await store.keys.ensure_bootstrap("x" * 64)
        # a weak key an older version registered stops working when this version refuses it
        from audiorouter.store.keys import hash_secret
        from audiorouter.store.models import ApiKey, utcnow
        weak = "sk-ar-admin-" + "hunter2" * 6
        async with store.db.changing("*") as s:
            s.add(ApiKey(hash=hash_secret(weak), name="old", label="...ter2", is_management=True, disabled=False,
                         usage_nano=0, byok_usage_nano=0, window_usage_nano=0, window_start=utcnow(),
                         reserved_nano=0, source="env", created_at=utcnow()))
        with pytest.raises(WeakSecret, match="now disabled"):
            await store.keys.ensure_bootstrap(weak)
        assert (await store.keys.lookup(weak)).disabled
    finally:
        await store.close()


@pytest.mark.parametrize("weak, says", [
    ("1", "AUDIOROUTER_MANAGEMENT_KEY is shorter than 32 characters"),
    ("sk-ar-admin-" + "hunter2" * 6, "AUDIOROUTER_MANAGEMENT_KEY is too predictable"),
])
def test_server_refuses_to_start_with_a_weak_management_key(tmp_path, weak, says):
    env = {**clean_environ(), **gateway_env(tmp_path, management_key=weak)}
    proc = subprocess.Popen([sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(free_port())],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail("the server started with a weak AUDIOROUTER_MANAGEMENT_KEY")
    assert proc.returncode != 0 and says in out, out[-2000:]
    assert "hunter2" not in out  # the key is never printed, not even in part


# ---- gateway on a fake upstream ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake():
    f = OpenAIFake("sk-upstream-" + secrets.token_hex(8)).start()
    yield f
    f.stop()


def catalog(fake: OpenAIFake) -> str:
    return f"""
providers:
  fakeai:
    name: Fake OpenAI
    adapter: openai
    base_url: {fake.base_url}
    api_key: {fake.api_key}
models:
  - id: hy/tts
    name: priced speech on the fake
    kind: speech
    voices: [alloy]
    endpoints:
      - provider: fakeai
        upstream_model: tts-1
        pricing: {{per_million_characters: 1000}}
        output_formats: [mp3, pcm]
"""


def start(tmp, fake, **extra: str) -> Gateway:
    (tmp / "hy.yaml").write_text(catalog(fake), encoding="utf-8")
    db = SqliteDatabase(tmp / "data" / "ledger.db")
    mgmt = new_management_key()
    env = gateway_env(tmp, database_url=db.url, management_key=mgmt, AUDIOROUTER_CATALOG=str(tmp / "hy.yaml"),
                      AUDIOROUTER_RETRY_ATTEMPTS="1", **extra)
    return Gateway(tmp, env, mgmt, db)


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    g = start(tmp_path_factory.mktemp("hygiene"), fake)
    yield g
    g.stop()


@pytest.fixture
def upstream(fake):
    fake.clear()
    fake.delay_s = 0.0
    yield fake
    fake.delay_s = 0.0
    assert not fake.violations, fake.violations


def speak(gw: Gateway, key: str, timeout: float = 60) -> httpx.Response:
    return gw.client.post("/api/v1/audio/speech", headers=gw.auth(key), timeout=timeout,
                          json={"model": "hy/tts", "input": TEXT, "voice": "alloy", "response_format": "pcm"})


# ---- labels -----------------------------------------------------------------------------------------------
def test_labels_show_at_most_the_last_4_characters(gw):
    # the management key from AUDIOROUTER_MANAGEMENT_KEY (chosen, not one of ours)
    assert gw.key_info(gw.mgmt)["label"] == "..." + gw.mgmt[-4:]
    # provider keys: a short one shows nothing, a long one its last 4
    short, long_ = "sk-" + secrets.token_hex(3), "sk-proj-" + secrets.token_hex(16)
    labels = []
    for key in (short, long_):
        r = gw.client.post("/api/v1/byok", json={"provider": "fakeai", "key": key, "disabled": True},
                           headers=gw.auth())
        assert r.status_code == 201, r.text
        labels.append(r.json()["data"]["label"])
        listed = gw.client.get(f"/api/v1/byok/{r.json()['data']['id']}", headers=gw.auth()).json()["data"]
        assert listed["label"] == labels[-1]
    assert labels == ["***", "..." + long_[-4:]]
    assert not any(c in labels[0] for c in short)


def test_labels_stored_by_older_versions_are_redone_at_start(gw):
    key = "sk-proj-" + secrets.token_hex(16)
    r = gw.client.post("/api/v1/byok", json={"provider": "fakeai", "key": key, "disabled": True}, headers=gw.auth())
    byok_id = r.json()["data"]["id"]
    gw.db.query(f"UPDATE ar_byok_keys SET label = '{key[:4]}...{key[-4:]}' WHERE id = '{byok_id}'")
    gw.db.query(f"UPDATE ar_api_keys SET label = '{gw.mgmt[:12]}...{gw.mgmt[-3:]}' WHERE is_management")
    gw.restart()
    assert gw.client.get(f"/api/v1/byok/{byok_id}", headers=gw.auth()).json()["data"]["label"] == "..." + key[-4:]
    assert gw.key_info(gw.mgmt)["label"] == "..." + gw.mgmt[-4:]


# ---- limit_remaining and open reservations ----------------------------------------------------------------
def test_limit_remaining_subtracts_reservations_in_flight(gw, upstream):
    key, _ = gw.create_key(limit=1)
    upstream.delay_s = 3.0  # the upstream holds the request (and its reservation) open for 3 s
    results: list[httpx.Response] = []
    t = threading.Thread(target=lambda: results.append(speak(gw, key)), daemon=True)
    t.start()
    deadline = time.time() + 30
    info = gw.key_info(key)
    while info["limit_reserved"] == 0 and time.time() < deadline and t.is_alive():
        time.sleep(0.05)
        info = gw.key_info(key)
    assert info["limit_reserved"] == pytest.approx(PRICE), "no reservation was seen while the upstream worked"
    assert info["limit_remaining"] == pytest.approx(1 - PRICE)
    assert info["effective_budget"]["remaining_usd"] == pytest.approx(1 - PRICE)
    credits = gw.client.get("/api/v1/credits", headers=gw.auth(key)).json()["data"]
    assert credits["limit_remaining"] == pytest.approx(1 - PRICE) and credits["total_usage"] == 0
    listed = gw.client.get(f"/api/v1/keys/{info['hash']}", headers=gw.auth()).json()["data"]
    assert listed["limit_remaining"] == pytest.approx(1 - PRICE)
    t.join(30)
    assert results and results[0].status_code == 200, results and results[0].text
    info = gw.key_info(key)  # settled: the reservation became usage
    assert info["limit_reserved"] == 0 and info["limit_remaining"] == pytest.approx(1 - PRICE)


# ---- spend windows ----------------------------------------------------------------------------------------
def current_window_start(reset: str, now: datetime) -> datetime:
    day = datetime(now.year, now.month, now.day)  # naive UTC, as stored
    return {"daily": day, "weekly": day - timedelta(days=day.weekday()), "monthly": day.replace(day=1)}[reset]


@pytest.mark.parametrize("reset", ["daily", "weekly", "monthly"])
def test_spend_resets_at_the_window_boundary_and_not_before(gw, upstream, reset):
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 58:
        time.sleep(150)  # not across midnight UTC: the boundary would move under the test
        now = datetime.now(UTC)
    key, data = gw.create_key(limit=0.05, limit_reset=reset)
    start = current_window_start(reset, now)

    def spent_all(window_start: datetime) -> None:
        gw.db.query(f"UPDATE ar_api_keys SET window_usage_nano = limit_nano, "
                    f"window_start = '{window_start:%Y-%m-%d %H:%M:%S.%f}' WHERE hash = '{data['hash']}'")

    spent_all(start)  # the whole limit spent in this very window (which began at its boundary)
    assert gw.key_info(key)["limit_remaining"] == 0
    r = speak(gw, key)
    assert r.status_code == 402, r.text

    spent_all(start - timedelta(seconds=1))  # ... spent in the window before: nothing of it counts now
    assert gw.key_info(key)["limit_remaining"] == pytest.approx(0.05)
    r = speak(gw, key)
    assert r.status_code == 200, r.text
    info = gw.key_info(key)
    assert info["limit_remaining"] == pytest.approx(0.05 - PRICE) and info["limit_reserved"] == 0
    stored = gw.db.query(f"SELECT window_start FROM ar_api_keys WHERE hash = '{data['hash']}'")[0][0]
    assert stored.startswith(f"{start:%Y-%m-%d %H:%M:%S}")


# ---- a locked database --------------------------------------------------------------------------------------
def test_a_locked_database_answers_503_after_the_configured_busy_timeout(fake, tmp_path, upstream):
    """A limited key's reservation is written before the upstream is called: with another process holding
    the write lock it fails after the busy timeout (0.5 s here), also when it queues behind the rows of an
    unlimited key's request that the ledger keeps retrying meanwhile. Those rows are written once the lock
    is gone."""
    g = start(tmp_path, fake, AUDIOROUTER_DB_BUSY_TIMEOUT_S="0.5")
    try:
        limited, _ = g.create_key(limit=1)
        unlimited, _ = g.create_key()
        assert speak(g, limited).status_code == 200
        lock = sqlite3.connect(g.db.path, timeout=5, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        answers = []
        try:
            for key in (limited, unlimited, limited, limited):
                t0 = time.monotonic()
                r = speak(g, key, timeout=20)  # the old 30 s busy timeout ran past this
                answers.append((r, time.monotonic() - t0))
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        (first, t1), (free, _), *queued = answers
        assert free.status_code == 200, free.text  # nothing to reserve: its rows are written behind it
        for r, waited in [(first, t1), *queued]:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["metadata"]["type"] == "store_unavailable" and r.headers["retry-after"] == "2"
            assert waited < 10, waited
        assert speak(g, limited).status_code == 200  # the lock gone, requests go through again
        g.client.get("/api/v1/key", headers=g.auth(unlimited))  # (waits for this process' queued writes)
        rows = g.db.query(f"SELECT status FROM ar_generations WHERE id = '{free.headers['x-generation-id']}'")
        assert rows == [("success",)]
    finally:
        g.stop()


def test_busy_timeout_default_is_short():
    from audiorouter.config import Settings
    assert Settings(_env_file=None).db_busy_timeout_s <= 5
    assert "AUDIOROUTER_DB_BUSY_TIMEOUT_S" in (ROOT / "docs" / "deployment.md").read_text()
