"""The batch jobs' audio store and webhook signing, without a gateway: the local directory and an S3-compatible
bucket (moto's server mode on 127.0.0.1, through boto3 as in production), signatures, backoff, address rules."""
from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from audiorouter.jobs import webhooks
from audiorouter.store.blobs import LocalBlobs, S3Blobs, open_blobs
from batch_support import MotoS3, verify_signature


async def _roundtrip(store, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024 + 17))  # over boto3's 8 MiB threshold: a multipart upload to S3
    await store.put_file("audio/job-1", src)
    out = tmp_path / "out.bin"
    await store.get_file("audio/job-1", out)
    assert out.read_bytes() == src.read_bytes()
    moved = tmp_path / "spooled.part"  # an upload spooled to disk: moved into the store, gone from where it was
    moved.write_bytes(src.read_bytes()[::-1])
    await store.move_file("audio/job-2", moved)
    assert not moved.exists()
    await store.get_file("audio/job-2", out)
    assert out.read_bytes() == src.read_bytes()[::-1]
    await store.delete("audio/job-2")
    await store.put_bytes("results/job-1.json", b'{"text": "hi"}')
    assert await store.get_bytes("results/job-1.json") == b'{"text": "hi"}'
    await store.delete("results/job-1.json")
    await store.delete("results/job-1.json")  # deleting twice is fine
    assert await store.get_bytes("results/job-1.json") is None
    with pytest.raises(ValueError):
        await store.put_bytes("../escape", b"x")


def test_local_directory_store(tmp_path):
    asyncio.run(_roundtrip(LocalBlobs(tmp_path / "blobs"), tmp_path))


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = MotoS3(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


def test_s3_store_against_a_local_s3_server(moto, tmp_path):
    bucket = moto.bucket("ar-blobs-test")
    store = S3Blobs(bucket, "prefix/x", client=moto.client())
    asyncio.run(_roundtrip(store, tmp_path))
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["prefix/x/audio/job-1"]  # under the prefix; the result was deleted


def test_store_url_selects_the_backend(tmp_path, moto, monkeypatch):
    for k, v in moto.env.items():
        monkeypatch.setenv(k, v)
    s = SimpleNamespace(jobs_store_url=None, data_dir=tmp_path, jobs_s3_endpoint_url=None)
    assert isinstance(open_blobs(s), LocalBlobs)
    s.jobs_store_url, s.jobs_s3_endpoint_url = "s3://bkt/pre", moto.url
    b = open_blobs(s)
    assert isinstance(b, S3Blobs) and b.bucket == "bkt" and b.prefix == "pre"
    s.jobs_store_url = "gs://x"
    with pytest.raises(ValueError, match="not supported"):
        open_blobs(s)


def test_signature_matches_the_documented_check():
    body = b'{"id":"job-1","status":"succeeded"}'
    header = webhooks.sign("whsec_abc", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert webhooks.verify("whsec_abc", header, body, now=1_700_000_010)
    assert not webhooks.verify("whsec_abc", header, body, now=1_700_001_000)  # too old: a replay
    assert not webhooks.verify("whsec_abd", header, body, now=1_700_000_010)
    assert not webhooks.verify("whsec_abc", header, body + b"x", now=1_700_000_010)
    now = webhooks.sign("s" * 20, int(__import__("time").time()), body)
    assert verify_signature("s" * 20, now, body)  # the tests' receiver does the docs' snippet independently


def test_backoff_spans_more_than_an_hour():
    delays = [webhooks.next_delay(n) for n in range(1, 12)]
    assert delays == sorted(delays) and delays[0] >= 10
    assert sum(delays[:8]) >= 3600


@pytest.mark.parametrize("url,status", [
    ("http://127.0.0.1/x", 403), ("http://10.0.0.5/x", 403), ("http://[fd00::1]/x", 403),
    ("http://169.254.169.254/latest", 403), ("http://[64:ff9b::a00:1]/", 403), ("ftp://8.8.8.8/", 400),
    ("http://user:pw@8.8.8.8/", 400), ("not a url", 400)])
def test_webhook_urls_follow_the_url_input_rules(url, status):
    s = SimpleNamespace(url_fetch_allow_private=False, url_fetch_allow_hosts="")
    with pytest.raises(webhooks.WebhookURLError) as e:
        asyncio.run(webhooks.resolve_checked(url, s))
    assert e.value.status == status


def test_allowed_hosts_let_a_private_receiver_through():
    s = SimpleNamespace(url_fetch_allow_private=False, url_fetch_allow_hosts="127.0.0.1/32")
    scheme, host, addrs = asyncio.run(webhooks.resolve_checked("http://127.0.0.1:9/x", s))
    assert (scheme, host, str(addrs[0])) == ("http", "127.0.0.1", "127.0.0.1")


def test_sweep_resends_lost_messages_and_fences_out_a_stale_worker(tmp_path):
    """The job row is the truth: a queued job whose message is lost is re-sent (once, not on every sweep), a
    running job whose lease expired is queued again, and the worker that lost it can neither renew nor finish."""
    from audiorouter.config import Settings
    from audiorouter.core.types import Transcript, Usage
    from audiorouter.jobs.batch import JobRuntime
    from audiorouter.jobs.queue import JobQueue
    from audiorouter.routing.router import Route
    from audiorouter.store import Store

    async def main():
        settings = Settings(data_dir=tmp_path, jobs_lease_s=0.3, preload=False, _env_file=None)
        store = Store(settings)
        await store.start(check_bind=False)
        queue = JobQueue(settings)
        rt = JobRuntime(settings, None, store, queue, LocalBlobs(tmp_path / "blobs"))
        try:
            base = {"params": {"model": "m"}, "generation_id": "gen-x", "reserved_nano": 0}
            await rt.jobs.create({"id": "job-lost", **base})  # stored, but its message never sent
            await rt.jobs.create({"id": "job-run", **base, "generation_id": "gen-y"})
            old = await rt.jobs.claim("job-run", "worker-a", 0.3)
            assert old is not None and old.fence == 1 and old.attempts == 1
            assert await rt.jobs.claim("job-run", "worker-b", 0.3) is None  # held by a
            await asyncio.sleep(0.5)  # a dies: no renewal
            swept = await rt.sweep()
            assert swept["requeued"] == 2
            assert queue.huey.pending_count() == 2
            assert (await rt.sweep())["requeued"] == 0  # the messages are there now: nothing re-sent again
            new = await rt.jobs.claim("job-run", "worker-b", 30)
            assert new is not None and new.fence == 2 and new.attempts == 2
            assert not await rt.jobs.renew("job-run", old.fence, 30)  # a's lease is gone
            assert not await rt.jobs.finish("job-run", old.fence, {"status": "succeeded"})
            assert await rt.jobs.finish("job-run", new.fence, {"status": "succeeded"})
            assert (await rt.jobs.get("job-run")).status == "succeeded"

            # two workers finish the same job (the first lost its lease while it worked): only the fence
            # holder's result, charge and webhook count, and the loser's result object is gone
            await rt.jobs.create({"id": "job-race", **base, "generation_id": "gen-z"})
            first = await rt.jobs.claim("job-race", "worker-a", 0.2)
            await asyncio.sleep(0.3)
            assert (await rt.sweep())["requeued"] == 1
            second = await rt.jobs.claim("job-race", "worker-b", 30)

            def result(text):
                return SimpleNamespace(route=Route(model="m", provider="local", endpoint="local/m"),
                                       usage=Usage(seconds=1.0, cost=0.001), transcript=Transcript(text=text))
            assert await rt._succeed(second, result("the winner"), {}, 5.0) == "succeeded"
            assert await rt._succeed(first, result("the loser"), {}, 5.0) is None
            done = await rt.jobs.get("job-race")
            assert done.status == "succeeded" and done.attempts == 2 and done.cost_nano == 1_000_000
            transcript, _ = await rt.result(done)
            assert transcript.text == "the winner"
            assert sorted(p.name for p in (tmp_path / "blobs" / "results").iterdir()) == ["job-race.2.json"]
        finally:
            queue.close()
            await store.close()

    asyncio.run(main())
