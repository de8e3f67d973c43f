"""A big multipart upload to a batch job costs the server little memory, whatever its size: the file part is
spooled to disk as it arrives and moved into the audio store (api/batch.py), and the worker (here the server's
own in-process worker thread, the embedded default) fetches it to a file and decodes it from there onto the PCM
spool, one chunk at a time (jobs/transcription.py, Audio.path). Measured by the kernel: the server process's
peak RSS (VmHWM, reset with /proc/<pid>/clear_refs) while an ~80 MB WAV is submitted and transcribed. Before,
the upload was read into memory at submit and again by the worker: growth of at least the file's size.

A big JSON body (base64 input_audio.data) likewise: decoded piece by piece straight into the upload spool as it
arrives (api/json_body.py BodyScanner(spool=...)), measured at submit by a gateway that runs no jobs.

The upstream is the strict OpenAI fake (tests/fakes) on a priced catalog, so the job is quick and charged."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from batch_support import FAKE_WHISPER, JOBS, fake_whisper_catalog, wait_final
from fakes.openai_fake import OpenAIFake
from test_keys_support import STT_PRICE_PER_SECOND, Gateway, SqliteDatabase, gateway_env, new_management_key

MODEL = FAKE_WHISPER
RATE = 16000


def _catalog(fake: OpenAIFake) -> str:
    return fake_whisper_catalog(fake.base_url, STT_PRICE_PER_SECOND)


def write_wav(path: Path, seconds: int, seed: int = 0) -> int:
    """16 kHz mono s16 WAV, written a minute at a time: tone bursts with a pause every 10 s (cut points)."""
    rng = np.random.default_rng(seed)
    n = seconds * RATE
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE,
                                                                                     2 * RATE, 2, 16)
                + b"data" + struct.pack("<I", 2 * n))
        t = np.arange(60 * RATE) / RATE
        for start in range(0, seconds, 60):
            m = min(60, seconds - start)
            x = 0.3 * np.sin(2 * np.pi * (220 + 40 * rng.random()) * t[: m * RATE])
            x += 0.02 * rng.standard_normal(m * RATE)
            x[(t[: m * RATE] % 10) > 9.0] = 0.0  # a second of silence every ten
            f.write((x * 32767).astype("<i2").tobytes())
    return path.stat().st_size


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now


def _gateway(tmp: Path, **env: str):
    """A gateway on SQLite with the OpenAI fake, its uploads spilled to tmp/spill: (gateway, tmp)."""
    fake = OpenAIFake().start()
    db = SqliteDatabase(tmp / "data" / "ledger.db")
    mgmt = new_management_key()
    env = gateway_env(tmp, database_url=db.url, management_key=mgmt, OPENAI_API_KEY=fake.api_key,
                      AUDIOROUTER_TMP_DIR=str(tmp / "spill"), **env)
    (tmp / "spill").mkdir()
    (tmp / "catalog.yaml").write_text(_catalog(fake), encoding="utf-8")  # over gateway_env's default one
    g = Gateway(tmp, env, mgmt, db)
    try:
        yield g, tmp
    finally:
        g.stop()
        assert not fake.violations, fake.violations
        fake.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    yield from _gateway(tmp_path_factory.mktemp("upload-mem"), AUDIOROUTER_RETRY_ATTEMPTS="1",
                        AUDIOROUTER_CHUNK_CONCURRENCY="1")


def _submit(g: Gateway, key: str, path: Path) -> str:
    with open(path, "rb") as f:  # httpx streams a file object in the multipart body
        r = g.client.post(JOBS, headers=g.auth(key), data={"model": MODEL}, files={"file": (path.name, f, "audio/wav")},
                          timeout=300)
    assert r.status_code == 202, r.text
    return r.json()["id"]


@pytest.mark.parametrize("fmt, rate", [("wav", 16000), ("wav", 44100), ("flac", 16000), ("mp3", 22050),
                                       ("ogg", 48000), ("pcm", 16000)])
def test_decoding_from_a_file_equals_decoding_the_bytes(tmp_path, fmt, rate):
    """The worker's path-backed decode (read a piece at a time) gives what the in-memory decode gives."""
    from audio_factory import make_audio, noise
    from audiorouter.audio.chunking import decode_file_to_spool, decode_to_spool, probe_duration, probe_file_duration
    data = make_audio(noise(7.5, level=0.2, rate=rate, seed=3), fmt, rate)
    path = tmp_path / f"a.{fmt}"
    path.write_bytes(data)
    declared = "pcm" if fmt == "pcm" else None
    mem, mem_fmt = decode_to_spool(data, declared)
    disk, disk_fmt = decode_file_to_spool(path, declared)
    try:
        assert disk_fmt == mem_fmt
        assert disk.n_samples == mem.n_samples > 0
        assert np.array_equal(disk.read(0, disk.n_samples), mem.read(0, mem.n_samples))
    finally:
        mem.close()
        disk.close()
    assert probe_file_duration(path, declared) == probe_duration(data, declared)


def test_a_bad_or_empty_file_is_a_400_naming_the_field(tmp_path):
    from audiorouter.audio.chunking import decode_file_to_spool
    from audiorouter.core.errors import InvalidRequest
    for name, body in (("empty.wav", b""), ("junk.wav", b"RIFF" + b"\x00" * 4 + b"WAVE" + b"junk" * 100)):
        p = tmp_path / name
        p.write_bytes(body)
        with pytest.raises(InvalidRequest) as e:
            decode_file_to_spool(p, None, field="file")
        assert e.value.param == "file"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_big_multipart_upload_is_spooled_not_held(gw):
    g, tmp = gw
    key, _ = g.create_key(name="uploads")
    pid = g.proc.proc.pid
    # warm-up: a long-enough job loads what any job loads once (chunk planning's VAD, the upstream client...)
    warm = tmp / "warm.wav"
    write_wav(warm, 400, seed=1)
    jid = _submit(g, key, warm)
    assert wait_final(g.client, [jid], g.auth(key), timeout=300)[jid]["status"] == "succeeded"
    warm.unlink()

    big = tmp / "big.wav"
    seconds = 2600
    size = write_wav(big, seconds, seed=2)  # ~83 MB
    _reset_peak(pid)
    before = _status(pid, "VmRSS:")
    jid = _submit(g, key, big)
    at_submit = _status(pid, "VmHWM:") - before
    job = wait_final(g.client, [jid], g.auth(key), timeout=600)[jid]
    growth = _status(pid, "VmHWM:") - before
    assert job["status"] == "succeeded", job
    assert job["progress"]["seconds_total"] == pytest.approx(seconds, abs=0.05)
    assert job["usage"]["seconds"] == pytest.approx(seconds, rel=0.01)
    assert job["cost"] == pytest.approx(job["usage"]["seconds"] * STT_PRICE_PER_SECOND, rel=1e-6)
    assert job["result"]["text"].strip()
    print(f"upload {size / 2**20:.0f} MiB: server peak RSS growth {at_submit / 2**20:.1f} MiB by the 202, "
          f"{growth / 2**20:.1f} MiB by the end of the job")
    # Measured: 2 and 15 MiB here; before, 79 MiB by the 202 (the upload read into memory) and 95 MiB in all.
    # (What stays is the chunked transcription's own: one 180 s chunk as float32 and its upload, times
    # AUDIOROUTER_CHUNK_CONCURRENCY, pinned to 1 above: bounded by the chunk size, not by the file's.)
    assert at_submit < size * 0.15, f"submit: peak RSS grew {at_submit / 2**20:.1f} MiB for {size / 2**20:.0f} MiB"
    assert growth < size * 0.3, f"peak RSS grew {growth / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB upload"
    # the spooled upload was moved into the audio store and the worker's copy deleted: nothing left behind
    assert list((tmp / "spill").iterdir()) == []
    assert not list(Path(g.env["AUDIOROUTER_DATA_DIR"]).glob("**/*.part"))


# ---- a big JSON body (base64 input_audio.data) --------------------------------------------------------------
@pytest.fixture(scope="module")
def gw_no_worker(tmp_path_factory):
    """A gateway that runs no jobs (AUDIOROUTER_JOBS_IN_PROCESS=0): what is measured is the submit alone."""
    yield from _gateway(tmp_path_factory.mktemp("json-mem"), AUDIOROUTER_JOBS_IN_PROCESS="0")


def _json_body(path: Path, step: int = 3 * 64 * 1024):
    """The JSON body of a job, streamed (chunked transfer encoding): the test never holds the base64 text."""
    import base64
    yield b'{"model": "' + MODEL.encode() + b'", "input_audio": {"format": "wav", "data": "'
    with open(path, "rb") as f:
        while block := f.read(step):
            yield base64.b64encode(block)
    yield b'"}, "response_format": "srt"}'


def _submit_json(g: Gateway, key: str, path: Path) -> str:
    r = g.client.post(JOBS, headers={**g.auth(key), "Content-Type": "application/json"}, content=_json_body(path),
                      timeout=300)
    assert r.status_code == 202, r.text
    return r.json()["id"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_big_json_base64_body_is_decoded_to_disk_not_memory(gw_no_worker):
    """input_audio.data is decoded piece by piece into the upload spool as the body arrives (api/json_body.py
    BodyScanner(spool=...)) and moved into the audio store: the server's peak RSS hardly moves by the 202, and
    the stored audio is the file, byte for byte."""
    import hashlib
    g, tmp = gw_no_worker
    key, _ = g.create_key(name="json-uploads")
    pid = g.proc.proc.pid
    warm = tmp / "warm.wav"  # warm-up: whatever a first JSON job loads once
    write_wav(warm, 60, seed=3)
    jid = _submit_json(g, key, warm)
    assert g.client.delete(f"{JOBS}/{jid}", headers=g.auth(key)).status_code == 200
    warm.unlink()

    big = tmp / "big.wav"
    seconds = 2600
    size = write_wav(big, seconds, seed=4)  # ~83 MB of audio, ~111 MB of base64
    _reset_peak(pid)
    before = _status(pid, "VmRSS:")
    jid = _submit_json(g, key, big)
    growth = _status(pid, "VmHWM:") - before
    print(f"JSON body {size * 4 / 3 / 2**20:.0f} MiB (audio {size / 2**20:.0f} MiB): server peak RSS growth "
          f"{growth / 2**20:.1f} MiB by the 202")
    # Measured: 0.9 MiB here (2 cores, load ~10); before (input_audio.data decoded into memory): 80.6 MiB.
    assert growth < size * 0.15, f"peak RSS grew {growth / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB upload"
    job = g.client.get(f"{JOBS}/{jid}", headers=g.auth(key)).json()
    assert job["status"] == "queued"
    assert job["progress"]["seconds_total"] == pytest.approx(seconds, abs=0.05)  # measured from the file at submit
    stored = Path(g.env["AUDIOROUTER_DATA_DIR"]) / "jobs" / "audio" / jid
    digest = hashlib.sha256()
    with open(big, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    stored_digest = hashlib.sha256()
    with open(stored, "rb") as f:
        while block := f.read(1 << 20):
            stored_digest.update(block)
    assert stored.stat().st_size == size and stored_digest.hexdigest() == digest.hexdigest()
    assert list((tmp / "spill").iterdir()) == []  # the spool was moved into the store, nothing left behind
    assert g.client.delete(f"{JOBS}/{jid}", headers=g.auth(key)).json()["status"] == "cancelled"
    assert not stored.exists()
