"""Batch jobs on the embedded default: one `audiorouter serve` process, SQLite, the huey SQLite queue and the
local audio directory, jobs run by its in-process worker thread on the local engine (priced test catalog, so
charges are real numbers). Submit (JSON, multipart), result in srt/json, signed webhooks to a local receiver,
idempotency, 402 at submit, cancel, refusals, and a server restart in the middle of a batch."""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter

import pytest

from batch_support import JOBS, SECRET, WebhookReceiver, short_clips, submit_json, wait_final, wait_for
from conftest import ROOT
from test_keys_support import STT_PRICE_PER_SECOND, clean_environ, start_gateway


@pytest.fixture(scope="module")
def hook():
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = start_gateway("sqlite", tmp_path_factory.mktemp("jobs"), AUDIOROUTER_JOBS_LEASE_S="4",
                      AUDIOROUTER_URL_FETCH_ALLOW_HOSTS="127.0.0.1/32", AUDIOROUTER_JOBS_SHUTDOWN_GRACE_S="1")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw):
    k, _ = gw.create_key(name="batch")
    return k


def _generation(gw, gen_id):
    r = gw.client.get("/api/v1/generation", params={"id": gen_id}, headers=gw.auth())
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_submit_run_result_webhook_and_charge(gw, key, hook):
    h = gw.auth(key)
    clips = short_clips(3)
    ids = []
    for path, _ in clips:
        r = submit_json(gw.client, path, h, webhook={"url": hook.url, "secret": SECRET}, response_format="srt")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued" and body["id"].startswith("job-") and body["created_at"] > 0
        ids.append(body["id"])
    final = wait_final(gw.client, ids, h)
    for (_path, seconds), jid in zip(clips, ids):
        job = final[jid]
        assert job["status"] == "succeeded", job
        assert job["progress"]["seconds_total"] == pytest.approx(seconds, abs=0.05)  # measured at submit
        assert job["progress"]["seconds_done"] == pytest.approx(job["progress"]["seconds_total"], abs=0.05)
        assert job["cost"] == pytest.approx(job["usage"]["seconds"] * STT_PRICE_PER_SECOND, rel=1e-6)
        assert job["result"]["text"].strip()  # the job's own response_format is srt; the status is JSON
        srt = gw.client.get(f"{JOBS}/{jid}", params={"response_format": "srt"}, headers=h)
        assert srt.status_code == 200 and srt.text.startswith("1\n00:00:") and "-->" in srt.text
        vj = gw.client.get(f"{JOBS}/{jid}", params={"response_format": "verbose_json"}, headers=h).json()
        assert vj["result"]["segments"] and vj["result"]["words"]
        gen = _generation(gw, job["generation_id"])  # the ledger row of the job: charged once, what the job says
        assert gen["total_cost"] == pytest.approx(job["cost"], abs=1e-9)
    assert wait_for(lambda: all(hook.for_job(j) for j in ids), 30), hook.events
    for jid in ids:
        events = hook.for_job(jid)
        assert all(e["valid"] for e in events)
        assert {e["body"] for e in events} == {events[0]["body"]}  # at least once, always the same body
        ev = events[0]
        assert ev["json"]["status"] == "succeeded" and ev["json"]["type"] == "transcription.job.succeeded"
        assert ev["json"]["result"]["text"] == final[jid]["result"]["text"]
        assert ev["headers"]["Webhook-Id"] == f"{jid}.succeeded"
    usage = gw.key_info(key)["usage"]
    assert usage == pytest.approx(sum(final[j]["cost"] for j in ids), abs=1e-9)


def test_tampered_body_does_not_verify(hook):
    from batch_support import verify_signature
    assert hook.events, "run after the webhook test"
    ev = hook.events[0]
    assert verify_signature(SECRET, ev["headers"]["Webhook-Signature"], ev["body"])
    assert not verify_signature(SECRET, ev["headers"]["Webhook-Signature"], ev["body"] + b" ")
    assert not verify_signature("whsec_other_secret_xxxxxxxx", ev["headers"]["Webhook-Signature"], ev["body"])


def test_webhook_secrets_are_encrypted_at_rest(gw, key, hook):
    """No AUDIOROUTER_SECRET_KEY is set: a key was made in the data dir (mode 0600) and every stored webhook
    secret, given or generated, is encrypted with it; the generated one still signs its delivery."""
    import stat

    from batch_support import verify_signature
    assert stat.S_IMODE((gw.tmp / "data" / "secret.key").stat().st_mode) == 0o600
    path, _ = short_clips(1)[0]
    given = submit_json(gw.client, path, gw.auth(key), webhook={"url": hook.url, "secret": SECRET})
    r = submit_json(gw.client, path, gw.auth(key), webhook={"url": hook.url})
    assert given.status_code == r.status_code == 202, r.text
    jid, generated = r.json()["id"], r.json()["webhook"]["secret"]
    final = wait_final(gw.client, [given.json()["id"], jid], gw.auth(key))
    assert {j["status"] for j in final.values()} == {"succeeded"}
    assert wait_for(lambda: hook.for_job(jid), 30)
    ev = hook.for_job(jid)[0]
    assert verify_signature(generated, ev["headers"]["Webhook-Signature"], ev["body"])
    stored = [row[0] for row in gw.db.query("SELECT webhook_secret FROM ar_jobs WHERE webhook_url IS NOT NULL")]
    assert len(stored) >= 2 and all(stored)
    for column in stored:
        assert SECRET not in column and generated not in column and not column.startswith("plain:")


def test_multipart_upload_and_idempotency_key(gw, key):
    h = gw.auth(key)
    path, _ = short_clips(1)[0]
    files = {"file": (path.name, path.read_bytes())}
    data = {"model": "test/priced-whisper", "idempotency_key": "batch-test-1"}
    r1 = gw.client.post(JOBS, headers=h, data=data, files=files)
    assert r1.status_code == 202, r1.text
    r2 = gw.client.post(JOBS, headers=h, data=data, files=files)
    assert r2.status_code == 200 and r2.json()["id"] == r1.json()["id"]
    job = wait_final(gw.client, [r1.json()["id"]], h)[r1.json()["id"]]
    assert job["status"] == "succeeded"
    txt = gw.client.get(f"{JOBS}/{job['id']}", params={"response_format": "text"}, headers=h)
    assert txt.status_code == 200 and txt.text.strip()
    listed = gw.client.get(JOBS, params={"status": "succeeded", "limit": 100}, headers=h).json()
    assert job["id"] in [j["id"] for j in listed["data"]]
    # another key never sees it
    other, _ = gw.create_key(name="other")
    assert gw.client.get(f"{JOBS}/{job['id']}", headers=gw.auth(other)).status_code == 404
    assert job["id"] not in [j["id"] for j in gw.client.get(JOBS, headers=gw.auth(other)).json()["data"]]


def test_402_at_submit_when_the_estimate_exceeds_the_limit(gw):
    path, seconds = short_clips(1)[0]
    poor, _ = gw.create_key(name="poor", limit=seconds * STT_PRICE_PER_SECOND / 2)
    r = submit_json(gw.client, path, gw.auth(poor))
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == 402
    assert gw.client.get(JOBS, headers=gw.auth(poor)).json()["data"] == []


@pytest.mark.parametrize("extra,param,status", [
    ({"webhook": {"secret": SECRET}}, "webhook.url", 400),
    ({"webhook": {"url": "ftp://example.com/x"}}, "webhook.url", 400),
    ({"webhook": {"url": "http://10.1.2.3/hook"}}, "webhook.url", 403),   # private address: SSRF rules
    ({"webhook": {"url": "http://[::ffff:169.254.169.254]/"}}, "webhook.url", 403),
    ({"webhook": {"url": "http://127.0.0.1:9/x", "secret": "short"}}, "webhook.secret", 400),
    ({"idempotency_key": ""}, "idempotency_key", 400),
    ({"stream": True}, "stream", 400),
])
def test_bad_submissions_name_the_field(gw, key, extra, param, status):
    path, _ = short_clips(1)[0]
    r = submit_json(gw.client, path, gw.auth(key), **extra)
    assert r.status_code == status, r.text
    assert r.json()["error"]["metadata"]["param"] == param


def test_bad_queries(gw, key):
    h = gw.auth(key)
    assert gw.client.get(JOBS, params={"status": "done"}, headers=h).json()["error"]["metadata"]["param"] == "status"
    assert gw.client.get(JOBS, params={"limit": "0"}, headers=h).status_code == 400
    assert gw.client.get(f"{JOBS}/job-nope", headers=h).status_code == 404
    assert gw.client.delete(f"{JOBS}/job-nope", headers=h).status_code == 404


def test_cancel_queued_job_charges_nothing(gw, key):
    h = gw.auth(key)
    clips = short_clips(4)
    before = gw.key_info(key)["usage"]
    ids = [submit_json(gw.client, p, h).json()["id"] for p, _ in clips]
    last = ids[-1]  # one worker thread: the last is still queued
    r = gw.client.delete(f"{JOBS}/{last}", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    again = gw.client.delete(f"{JOBS}/{last}", headers=h)
    assert again.status_code == 409 and again.json()["error"]["metadata"]["param"] == "id"
    final = wait_final(gw.client, ids, h)
    assert final[last]["status"] == "cancelled"
    assert gw.client.get(f"{JOBS}/{last}", params={"response_format": "srt"}, headers=h).status_code == 409
    gen = _generation(gw, final[last]["generation_id"])
    assert gen["total_cost"] == 0 and gen["cancelled"] is True
    done = [final[j] for j in ids[:-1]]
    assert all(j["status"] == "succeeded" for j in done)
    assert gw.key_info(key)["usage"] == pytest.approx(before + sum(j["cost"] for j in done), abs=1e-9)


@pytest.mark.slow
def test_server_restart_mid_batch_finishes_every_job_once(gw, key, hook):
    h = gw.auth(key)
    clips = short_clips(6)
    before = gw.key_info(key)["usage"]
    ids = []
    for p, _ in clips:
        r = submit_json(gw.client, p, h, webhook={"url": hook.url, "secret": SECRET})
        assert r.status_code == 202
        ids.append(r.json()["id"])
    assert wait_for(lambda: gw.client.get(f"{JOBS}/{ids[0]}", headers=h).json()["status"] != "queued", 60)
    gw.restart()  # SIGTERM mid-batch: the running job finishes or is handed back; the queue is on disk
    h = gw.auth(key)
    final = wait_final(gw.client, ids, h)
    assert [final[j]["status"] for j in ids] == ["succeeded"] * len(ids), final
    assert wait_for(lambda: all(hook.for_job(j) for j in ids), 30)
    for jid in ids:
        assert all(e["valid"] for e in hook.for_job(jid))
        assert len({e["body"] for e in hook.for_job(jid)}) == 1
        assert _generation(gw, final[jid]["generation_id"])["total_cost"] == pytest.approx(final[jid]["cost"], abs=1e-9)
    total = sum(final[j]["cost"] for j in ids)
    assert total > 0
    assert gw.key_info(key)["usage"] == pytest.approx(before + total, abs=1e-9)
    rows = gw.db.query("SELECT status, count(*) FROM ar_jobs GROUP BY status")
    assert Counter(dict(rows))["running"] == 0


def test_failed_webhook_is_retried_and_job_still_readable(gw, key, hook):
    h = gw.auth(key)
    hook.status = 500
    try:
        path, _ = short_clips(1)[0]
        jid = submit_json(gw.client, path, h, webhook={"url": hook.url, "secret": SECRET}).json()["id"]
        job = wait_final(gw.client, [jid], h)[jid]
        assert job["status"] == "succeeded"
        assert wait_for(lambda: len(hook.for_job(jid)) >= 2, 40)  # first try, then the 10 s backoff step
        st = gw.client.get(f"{JOBS}/{jid}", headers=h).json()
        assert st["webhook"]["state"] == "pending" and st["webhook"]["last_error"] == "HTTP 500"
        assert st["result"]["text"]
    finally:
        hook.status = 200


def test_base64_body_is_the_same_as_sync(gw, key):
    """A job's transcript is the synchronous endpoint's transcript of the same audio."""
    h = gw.auth(key)
    path, _ = short_clips(1)[0]
    sync = gw.transcribe(key, path)
    assert sync.status_code == 200, sync.text
    jid = submit_json(gw.client, path, h).json()["id"]
    job = wait_final(gw.client, [jid], h)[jid]
    assert job["result"]["text"] == sync.json()["text"]


def _cli(*args: str, key: str) -> subprocess.CompletedProcess:
    env = {**clean_environ(), "AUDIOROUTER_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "audiorouter.cli", *args], env=env, capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


def test_cli_submits_a_folder_and_writes_srt(gw, key, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    clips = short_clips(2)
    for path, _ in clips:
        shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("not audio")  # skipped: not an audio file name
    out = tmp_path / "out"
    assert _cli("transcribe", "--async", str(folder), "--server", gw.url, key=key).returncode == 2  # no -o
    r = _cli("transcribe", "--async", str(folder), "-o", str(out), "--format", "srt", "--server", gw.url,
             "--model", "test/priced-whisper", key=key)
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{p.stem}.srt" for p, _ in clips)
    for p in out.iterdir():
        assert p.read_text().startswith("1\n00:00:")
    listed = _cli("jobs", "list", "--status", "succeeded", "--server", gw.url, key=key)
    assert listed.returncode == 0 and "succeeded" in listed.stdout
    job_id = gw.client.get(JOBS, headers=gw.auth(key)).json()["data"][0]["id"]
    shown = _cli("jobs", "show", job_id, "--format", "text", "--server", gw.url, key=key)
    assert shown.returncode == 0 and shown.stdout.strip()
    again = _cli("jobs", "cancel", job_id, "--server", gw.url, key=key)
    assert again.returncode == 1 and "already succeeded" in again.stderr
