"""Batch jobs across processes as on several machines: one gateway (no job threads of its own), two
`audiorouter worker` processes, each with its own data dir, sharing only PostgreSQL, the Redis queue and an
S3-compatible audio store (moto's server on 127.0.0.1). The upstream is the strict OpenAI fake (tests/fakes),
answering after a delay so that jobs take a while, on a priced catalog. One worker is SIGKILLed in the middle of a job: every
job still succeeds exactly once (one charge, one result, webhooks with one body each, all signed), and the
key's usage equals the sum of the jobs' costs. Another is stopped with SIGTERM while busy: its job finishes or
is handed back."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from batch_support import (
    FAKE_WHISPER,
    SECRET,
    MotoS3,
    WebhookReceiver,
    fake_whisper_catalog,
    short_clips,
    submit_json,
    wait_final,
    wait_for,
)
from conftest import ROOT
from fakes.openai_fake import OpenAIFake
from test_keys_support import (
    REDIS_URL,
    STT_PRICE_PER_SECOND,
    Gateway,
    PgDatabase,
    RedisPrefix,
    clean_environ,
    gateway_env,
    new_management_key,
)

pytestmark = pytest.mark.slow
N_JOBS = int(os.environ.get("AUDIOROUTER_TEST_BATCH_JOBS", "40"))
MODEL = FAKE_WHISPER


def _catalog(fake: OpenAIFake) -> str:
    return fake_whisper_catalog(fake.base_url, STT_PRICE_PER_SECOND, capabilities={"translation": True})


class Worker:
    def __init__(self, env: dict[str, str], tmp, name: str):
        self.log_path = tmp / f"worker-{name}.log"
        self.log = open(self.log_path, "wb")
        env = {**clean_environ(), **env, "AUDIOROUTER_DATA_DIR": str(tmp / f"worker-{name}-data")}
        self.proc = subprocess.Popen([sys.executable, "-m", "audiorouter.cli", "worker", "--log-level", "info"],
                                     env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    redis = RedisPrefix().check()
    pg = PgDatabase().create()
    moto = MotoS3(tmp)
    bucket = moto.bucket("ar-jobs-" + secrets.token_hex(4))
    hook = WebhookReceiver()
    fake = OpenAIFake().start()
    fake.delay_s = 0.5  # every job holds its worker for a while: room to kill one mid-job
    mgmt = new_management_key()
    env = gateway_env(tmp, database_url=pg.url, redis=redis, management_key=mgmt,
                      AUDIOROUTER_SECRET_KEY="test-secret-" + secrets.token_hex(8),
                      AUDIOROUTER_JOBS_QUEUE_URL=REDIS_URL, AUDIOROUTER_JOBS_STORE_URL=f"s3://{bucket}/jobs",
                      AUDIOROUTER_JOBS_S3_ENDPOINT_URL=moto.url, AUDIOROUTER_JOBS_LEASE_S="4",
                      AUDIOROUTER_JOBS_IN_PROCESS="0", AUDIOROUTER_JOBS_SHUTDOWN_GRACE_S="20",
                      AUDIOROUTER_URL_FETCH_ALLOW_HOSTS="127.0.0.1/32", AUDIOROUTER_RETRY_ATTEMPTS="1",
                      OPENAI_API_KEY=fake.api_key, **moto.env)
    (tmp / "catalog.yaml").write_text(_catalog(fake), encoding="utf-8")
    gw = Gateway(tmp, env, mgmt, pg)
    workers: list[Worker] = []
    try:
        yield gw, env, tmp, hook, workers, pg
    finally:
        for w in workers:
            w.stop()
        gw.stop()
        assert not fake.violations, fake.violations
        fake.stop()
        hook.close()
        moto.stop()
        pg.drop()
        redis.cleanup()


def _running_on(pg, pid: int) -> list[str]:
    return [r[0] for r in pg.query(f"SELECT id FROM ar_jobs WHERE status = 'running' AND lease_owner LIKE '%:{pid}:%'")]


def test_two_workers_one_killed_every_job_once(cluster):
    gw, env, tmp, hook, workers, pg = cluster
    key, _ = gw.create_key(name="batch")
    h = gw.auth(key)
    a, b = Worker(env, tmp, "a"), Worker(env, tmp, "b")
    workers += [a, b]
    clips = short_clips(N_JOBS)
    ids = []
    for path, _ in clips:
        r = submit_json(gw.client, path, h, MODEL, webhook={"url": hook.url, "secret": SECRET})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    # SIGKILL worker a while it holds a job
    assert wait_for(lambda: _running_on(pg, a.pid), 120, 0.02), a.log_path.read_text()[-3000:]
    killed_job = _running_on(pg, a.pid)[0]
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    t_kill = time.time()
    final = wait_final(gw.client, ids, h, timeout=900)
    statuses = [final[j]["status"] for j in ids]
    assert statuses == ["succeeded"] * len(ids), [(j, final[j].get("error")) for j in ids if final[j]["status"] != "succeeded"]
    assert final[killed_job]["attempts"] == 2  # picked up again after the lease ran out
    assert final[killed_job]["finished_at"] >= t_kill - 1
    # exactly once: one charge per job, equal to the job's cost; the key's usage is their sum
    gens = {final[j]["generation_id"]: final[j] for j in ids}
    rows = pg.query("SELECT id, status, cost_nano, settled FROM ar_generations WHERE id IN ("
                    + ",".join(f"'{g}'" for g in gens) + ")")
    assert len(rows) == len(ids)
    for gid, status, cost_nano, settled in rows:
        assert status == "success" and settled
        assert cost_nano == round(gens[gid]["cost"] * 1e9)
    total = sum(final[j]["cost"] for j in ids)
    assert total == pytest.approx(sum(final[j]["usage"]["seconds"] for j in ids) * STT_PRICE_PER_SECOND, rel=1e-6)
    assert gw.key_info(key)["usage"] == pytest.approx(total, abs=1e-9)
    # every webhook arrived, signed, one body per job (at least once: a retry repeats the same bytes)
    assert wait_for(lambda: all(hook.for_job(j) for j in ids), 60)
    for j in ids:
        events = hook.for_job(j)
        assert all(e["valid"] for e in events)
        assert len({e["body"] for e in events}) == 1
        assert events[0]["json"]["result"]["text"] == gw.client.get(
            f"/api/v1/audio/transcriptions/jobs/{j}", headers=h).json()["result"]["text"]
    assert "re-queued" in (b.log_path.read_text() + gw.log())


def test_sigterm_finishes_or_hands_back(cluster):
    gw, env, tmp, _hook, workers, pg = cluster
    key, _ = gw.create_key(name="term")
    h = gw.auth(key)
    for w in workers:  # an idle worker stops at once on SIGTERM
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
            assert w.proc.wait(30) == 0
    c = Worker(env, tmp, "c")
    workers.append(c)
    ids = [submit_json(gw.client, p, h, MODEL).json()["id"] for p, _ in short_clips(6)]
    assert wait_for(lambda: _running_on(pg, c.pid), 120, 0.02), c.log_path.read_text()[-2000:]
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(60) == 0
    # nothing is left running under the stopped worker's lease: finished, or back in the queue at once
    assert not _running_on(pg, c.pid)
    assert pg.query("SELECT count(*) FROM ar_jobs WHERE status = 'queued'")[0][0] >= 1  # the rest waits
    workers.append(Worker(env, tmp, "d"))
    final = wait_final(gw.client, ids, h, timeout=600)
    assert all(final[j]["status"] == "succeeded" for j in ids)
    assert all(final[j]["attempts"] == 1 for j in ids)  # a hand-back is not a failed attempt
