"""Back-pressure: local inference runs in a bounded pool. With the pool full, new local jobs get 503 with
Retry-After at once (in the dialect's envelope), /health keeps answering while the models are busy, a
queued job waits its turn and succeeds, and a slot is given back when its job ends or its client leaves.

Each test runs its own server with one local worker and a queue of 0 or 1. A long speech stream that the
test holds open (reading only its first chunk) keeps the one speech worker busy for as long as needed, so
nothing here depends on timing."""
from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from audio_factory import load_clip, make_audio, silence
from conftest import ServerProcess

LONG_TEXT = " ".join(f"Sentence {i} of a very long reading that keeps the single speech worker busy."
                     for i in range(1, 300))  # ~23000 characters: minutes of speech


def start_server(tmp_path_factory, queue_size: int) -> ServerProcess:
    return ServerProcess(env={"AUDIOROUTER_WORKERS": "1", "AUDIOROUTER_QUEUE_SIZE": str(queue_size),
                              "AUDIOROUTER_MAX_SPEECH_CHARS": "40000", "AUDIOROUTER_PRELOAD": "false",
                              "AUDIOROUTER_CACHE_TTL_S": "0"},  # every transcription really runs
                         tmp=tmp_path_factory.mktemp(f"bp-q{queue_size}")).start()


@pytest.fixture(scope="module")
def server_q0(tmp_path_factory):
    s = start_server(tmp_path_factory, 0)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server_q1(tmp_path_factory):
    s = start_server(tmp_path_factory, 1)
    yield s
    s.stop()


def health(c: httpx.Client) -> dict:
    r = c.get("/health", timeout=10)
    assert r.status_code == 200
    return r.json()


def wait_pending(c: httpx.Client, want: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while health(c)["local_queue"]["pending"] != want and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health(c)["local_queue"]["pending"] == want


class HeldStream:
    """A speech request whose response we start reading and then leave open: its job occupies a worker."""

    def __init__(self, c: httpx.Client):
        self.cm = c.stream("POST", "/api/v1/audio/speech", json={"model": "local/hibari", "input": LONG_TEXT})

    def __enter__(self):
        self.r = self.cm.__enter__()
        assert self.r.status_code == 200, self.r.read()[:300]
        # keep the iterator: dropping it would close the connection, and the server would stop the job
        self.chunks = self.r.iter_raw()
        assert next(self.chunks)  # the job is running: its first audio has arrived
        return self

    def __exit__(self, *exc):
        self.cm.__exit__(*exc)


def assert_503(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-generation-id"].startswith("gen-")
    err = r.json()["error"]
    if r.request.url.path.startswith("/v1/"):
        assert set(err) == {"message", "type", "param", "code"}
    else:
        assert set(err) == {"code", "message", "metadata"} and err["code"] == 503
    assert "busy" in err["message"]


def test_full_pool_gives_503_with_retry_after_and_health_answers(server_q0):
    with httpx.Client(base_url=server_q0.url, timeout=120) as c:
        wait_pending(c, 0)
        with HeldStream(c):
            h = health(c)  # answered while the only worker is busy
            assert h["status"] == "ok" and h["local_queue"] == {"pending": 1, "workers": 1, "queue_size": 0}
            paths = ["/api/v1/audio/speech", "/v1/audio/speech"] * 3
            with ThreadPoolExecutor(len(paths)) as ex:
                results = list(ex.map(lambda p: c.post(p, json={"model": "tts-1", "input": "Hello there."}), paths))
            for r in results:
                assert_503(r)
            assert health(c)["local_queue"]["pending"] == 1  # refused jobs were never counted
        # the held client went away: its slot comes back and new work is accepted
        wait_pending(c, 0)
        r = c.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": "Free again."})
        assert r.status_code == 200 and len(r.content) > 0


def test_queue_of_one_waits_then_succeeds(server_q1):
    with httpx.Client(base_url=server_q1.url, timeout=300) as c:
        wait_pending(c, 0)
        queued: dict[str, httpx.Response] = {}
        with HeldStream(c):
            t = threading.Thread(target=lambda: queued.setdefault(
                "r", c.post("/v1/audio/speech", json={"model": "tts-1", "input": "I waited my turn.",
                                                      "response_format": "wav"})))
            t.start()
            wait_pending(c, 2)  # one running, one waiting
            assert "r" not in queued  # still waiting for the busy worker
            assert_503(c.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": "No room."}))
            assert health(c)["local_queue"]["pending"] == 2
        t.join(120)
        r = queued["r"]
        assert r.status_code == 200, r.text[:300]
        assert r.content[:4] == b"RIFF"
        wait_pending(c, 0)


def test_transcription_burst_gets_503s_and_health_stays_up(server_q0):
    """Many transcriptions at once on one worker and no queue: more than the pool holds are refused with
    503 + Retry-After; the admitted ones finish; /health answers 200 all along."""
    speech = load_clip("librispeech_test-other_1688-142285-0002.flac")  # "you don't mean that you thought me so silly"
    n = 24
    # every request different audio (a little more silence at the end), so no cache can answer for the engine
    bodies = [{"model": "local/whisper-base", "language": "en", "input_audio": {
        "data": base64.b64encode(make_audio(np.concatenate([speech, silence(0.01 * i)]), "mp3")).decode(),
        "format": "mp3"}} for i in range(n + 1)]
    with httpx.Client(base_url=server_q0.url, timeout=300) as c:
        # load Whisper first, so the burst is about capacity and not about the model loading
        warm = c.post("/api/v1/audio/transcriptions", json=bodies[n])
        assert warm.status_code == 200, warm.text[:300]
        barrier = threading.Barrier(n)

        def one(i: int) -> httpx.Response:
            barrier.wait()
            path = "/api/v1/audio/transcriptions" if i % 2 else "/v1/audio/transcriptions"
            return c.post(path, json=bodies[i], headers={"Cache-Control": "no-store"})

        with ThreadPoolExecutor(n) as ex:
            futures = [ex.submit(one, i) for i in range(n)]
            health_codes = []
            while not all(f.done() for f in futures):
                health_codes.append(c.get("/health", timeout=10).status_code)
                time.sleep(0.05)
            results = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in results if r.status_code == 503]
    served = [r for r in results if r.status_code == 200]
    assert refused, statuses
    assert served, statuses
    for r in refused:
        assert_503(r)
    for r in served:
        assert "silly" in r.json()["text"].lower()
    assert health_codes and set(health_codes) == {200}
    print(f"{len(served)} served, {len(refused)} refused, {len(health_codes)} /health answers during the burst")
