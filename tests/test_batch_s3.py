"""Batch jobs end to end on the S3-compatible audio store: one `audiorouter serve` (the embedded default: SQLite,
the huey SQLite queue, its in-process worker thread) whose audio store is a bucket on a local S3-compatible server
(moto's server mode, standing in for the cloud service; boto3 as in production). Jobs are submitted through the
HTTP API (multipart and base64 JSON), run, and read back; the bucket is then checked object by object: the audio
and the result are there until the retention period ends and gone after it; a zero-data-retention job's audio
goes when the job ends and its result once it has been read. The upstream is the strict OpenAI fake."""
from __future__ import annotations

import secrets

import pytest

from batch_support import (
    FAKE_WHISPER,
    JOBS,
    MotoS3,
    fake_whisper_catalog,
    short_clips,
    submit_json,
    wait_final,
    wait_for,
)
from fakes.openai_fake import OpenAIFake
from test_keys_support import STT_PRICE_PER_SECOND, Gateway, SqliteDatabase, gateway_env, new_management_key

pytestmark = pytest.mark.slow  # waits out a retention period
MODEL = FAKE_WHISPER
PREFIX = "jobs"
RETENTION_S = 30  # long enough to read the results on a loaded machine, short enough to wait out


def _catalog(fake: OpenAIFake) -> str:
    return fake_whisper_catalog(fake.base_url, STT_PRICE_PER_SECOND, zdr=True)


@pytest.fixture(scope="module")
def s3_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3-jobs")
    moto = MotoS3(tmp)
    bucket = moto.bucket("ar-e2e-" + secrets.token_hex(4))
    fake = OpenAIFake().start()
    db = SqliteDatabase(tmp / "data" / "ledger.db")
    mgmt = new_management_key()
    env = gateway_env(tmp, database_url=db.url, management_key=mgmt, OPENAI_API_KEY=fake.api_key,
                      AUDIOROUTER_JOBS_STORE_URL=f"s3://{bucket}/{PREFIX}", AUDIOROUTER_JOBS_S3_ENDPOINT_URL=moto.url,
                      AUDIOROUTER_JOBS_RETENTION_S=str(RETENTION_S), AUDIOROUTER_JOBS_LEASE_S="4",
                      AUDIOROUTER_RETRY_ATTEMPTS="1", **moto.env)
    (tmp / "catalog.yaml").write_text(_catalog(fake), encoding="utf-8")
    g = None
    try:
        g = Gateway(tmp, env, mgmt, db)
        yield g, moto, bucket
    finally:
        if g is not None:
            g.stop()
        assert not fake.violations, fake.violations
        fake.stop()
        moto.stop()


def _objects(moto: MotoS3, bucket: str) -> set[str]:
    listed = moto.client().list_objects_v2(Bucket=bucket, Prefix=PREFIX + "/")
    return {o["Key"] for o in listed.get("Contents", [])}


def test_jobs_through_the_api_on_s3_and_retention(s3_gateway):
    g, moto, bucket = s3_gateway
    key, _ = g.create_key(name="s3")
    h = g.auth(key)
    (path_a, seconds_a), (path_b, _) = short_clips(2)
    # A: a multipart upload (spooled, then uploaded to the bucket), kept for the retention period
    ra = g.client.post(JOBS, headers=h, data={"model": MODEL, "response_format": "srt"},
                       files={"file": (path_a.name, path_a.read_bytes())})
    # B: base64 JSON with zero data retention
    rb = submit_json(g.client, path_b, h, MODEL, provider={"zdr": True})
    assert ra.status_code == rb.status_code == 202, (ra.text, rb.text)
    a, b = ra.json()["id"], rb.json()["id"]
    final = wait_final(g.client, [a, b], h)
    assert final[a]["status"] == final[b]["status"] == "succeeded", final
    assert final[a]["progress"]["seconds_total"] == pytest.approx(seconds_a, abs=0.05)
    assert final[a]["cost"] == pytest.approx(final[a]["usage"]["seconds"] * STT_PRICE_PER_SECOND, rel=1e-6)

    # B (zdr) was read once by the GET that saw it succeed: that answer had its result, and the bucket has
    # nothing of B left (its audio went when the job ended, its result once read)
    assert final[b]["result"]["text"].strip()
    objects = _objects(moto, bucket)
    assert not {o for o in objects if f"/{b}" in o}, objects
    audio_a = f"{PREFIX}/audio/{a}"
    results_a = {o for o in objects if o.startswith(f"{PREFIX}/results/{a}.")}
    assert audio_a in objects and len(results_a) == 1  # A: kept until the retention period ends
    assert moto.client().get_object(Bucket=bucket, Key=audio_a)["Body"].read() == path_a.read_bytes()

    srt = g.client.get(f"{JOBS}/{a}", params={"response_format": "srt"}, headers=h)  # A's result, from the bucket
    assert srt.status_code == 200 and srt.text.startswith("1\n00:00:") and "-->" in srt.text
    assert g.client.get(f"{JOBS}/{a}", headers=h).json()["result"]["text"].strip()  # and again: A is not zdr
    again = g.client.get(f"{JOBS}/{b}", headers=h).json()
    assert again["status"] == "succeeded" and again["result_available"] is False and "result" not in again
    assert g.client.get(f"{JOBS}/{b}", params={"response_format": "text"}, headers=h).status_code == 410

    # after the retention period the sweep deletes A's audio and result; the row (status, usage, cost) stays
    assert wait_for(lambda: not _objects(moto, bucket), RETENTION_S + 120, 1.0), _objects(moto, bucket)
    gone = g.client.get(f"{JOBS}/{a}", params={"response_format": "srt"}, headers=h)
    assert gone.status_code == 410 and gone.json()["error"]["metadata"]["param"] == "response_format"
    row = g.client.get(f"{JOBS}/{a}", headers=h).json()
    assert row["status"] == "succeeded" and row["cost"] == final[a]["cost"] and row["result_available"] is False
