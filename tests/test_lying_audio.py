"""Audio whose header lies about its length (issue 11, item 3): a FLAC whose STREAMINFO claims 10 s but
whose frames hold hours. Decoding never trusts the claim: the in-memory path stops at the chunk limit and the
rest goes to the disk spool (int16), so the server's memory stays bounded whatever the bytes say; audio that
really is longer than the server accepts is a 413 `audio_too_long`. Against a fake OpenAI upstream (no local
engine): the server's resident memory is sampled from /proc while requests run."""
from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import numpy as np
import pytest

from conftest import ServerProcess
from fakes.harness import gateway_env, write_catalog
from fakes.openai_fake import OpenAIFake

MB = 1 << 20
MAX_AUDIO_S = 7200  # the server's limit here: 2 h (float32 at 16 kHz: 460 MB, what the old decoder held)


def lying_flac(real_s: float, claim_s: float, rate: int = 8000) -> bytes:
    """A FLAC of `real_s` seconds of silence whose STREAMINFO says `claim_s`: up to 10 minutes are encoded
    (65535-sample frames of a few bytes each) and the frames repeated; the total-samples field patched."""
    unit = min(real_s, 600.0)
    silence = np.zeros((1, int(rate * unit)), np.int16)
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as c:
        s = c.add_stream("flac", rate=rate, layout="mono", options={"frame_size": "65535"})
        s.codec_context.format = "s16"
        frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
        frame.rate = rate
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    data = buf.getvalue()
    pos = 4
    while True:  # metadata blocks: 1 byte type (high bit: last), 3 bytes length
        last, length = data[pos] & 0x80, int.from_bytes(data[pos + 1:pos + 4], "big")
        pos += 4 + length
        if last:
            break
    head = bytearray(data[:pos])
    out = head + data[pos:] * round(real_s / unit)
    total = int(claim_s * rate)  # STREAMINFO (at byte 8): total samples are 36 bits from byte 21's low nibble
    out[21] = (out[21] & 0xF0) | (total >> 32)
    out[22:26] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)


def claimed_and_real(data: bytes) -> tuple[float, float]:
    with av.open(io.BytesIO(data)) as c:
        st = c.streams.audio[0]
        claimed = float(st.duration * st.time_base)
        return claimed, sum(f.samples for f in c.decode(st)) / st.rate


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


class PeakRSS:
    """The highest resident set size of `pid` seen while the block runs (sampled every 10 ms)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRSS:
        self.start = rss(self.pid)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    fake = OpenAIFake().start()
    tmp = tmp_path_factory.mktemp("lying-audio")
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"}}
    models = [{"id": "test/whisper-30s", "name": "Whisper with a 30 s limit", "kind": "transcription",
               "endpoints": [{"provider": "openai", "upstream_model": "whisper-1", "limits": {"max_seconds": 30}}]}]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    env = gateway_env(cat, tmp, OPENAI_API_KEY=fake.api_key, AUDIOROUTER_RETRY_ATTEMPTS="1",
                      AUDIOROUTER_MAX_AUDIO_SECONDS=str(MAX_AUDIO_S), AUDIOROUTER_TMP_DIR=str(tmp))
    s = ServerProcess(env=env, tmp=tmp).start()
    yield s, fake
    s.stop()
    fake.stop()


def post(gw: ServerProcess, data: bytes) -> httpx.Response:
    with httpx.Client(base_url=gw.url, timeout=300) as c:
        return c.post("/api/v1/audio/transcriptions", headers={"Cache-Control": "no-store"}, json={
            "model": "test/whisper-30s", "input_audio": {"data": base64.b64encode(data).decode(), "format": "flac"}})


def test_the_lying_file_is_what_it_says():
    claimed, real = claimed_and_real(lying_flac(90, 10))
    assert claimed == 10 and real == pytest.approx(90, abs=10)


def test_longer_than_claimed_is_chunked_from_the_spool(gw):
    """90 s claiming 10 s, on an endpoint taking 30 s: decoded in memory only up to the chunk limit, then
    from the spool, and sent in chunks that fit."""
    s, fake = gw
    fake.clear()
    r = post(s, lying_flac(90, 10))
    assert r.status_code == 200, r.text
    duration = float(r.headers["x-audio-duration"])
    assert 80 < duration < 100
    calls = [c for c in fake.calls if c.path.endswith("/audio/transcriptions")]
    assert len(calls) == int(r.headers["x-chunks"]) >= 3
    assert all(c.info["probe"].duration <= 30 for c in calls)
    assert not fake.violations


@pytest.mark.slow  # hours of frames decoded up to the limit, per request
@pytest.mark.parametrize("concurrent", [1, 3])
def test_hours_behind_a_10_s_header_cost_bounded_memory(gw, concurrent):
    """10 h of frames behind a 10 s header: a 413 naming the limit, and the server's memory grows by far
    less than the 460 MB of float32 that decoding to the limit in memory held (per request)."""
    s, _fake = gw
    data = lying_flac(10 * 3600, 10)
    assert len(data) < 200_000
    post(s, lying_flac(20, 10))  # warm: the first decode loads what every later one uses
    with PeakRSS(s.proc.pid) as mem, ThreadPoolExecutor(concurrent) as pool:
        answers = list(pool.map(lambda _: post(s, data), range(concurrent)))
    print(f"{concurrent} request(s): server RSS {mem.start / MB:.0f} MB -> peak {mem.peak / MB:.0f} MB")
    assert mem.growth < 300 * MB, f"grew {mem.growth / MB:.0f} MB"
    for r in answers:
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == 413 and err["metadata"]["limit_seconds"] == MAX_AUDIO_S
        assert "longer than this server accepts" in err["message"]
