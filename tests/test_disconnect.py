"""A client that goes away mid-stream: the server stops producing (the local engine is not kept busy for
nobody) and the ledger row ends `cancelled`, for streamed speech and for SSE transcription."""
from __future__ import annotations

import base64
import time

import httpx

SENTENCE = "This sentence is spoken again and again so that the answer streams for a long while. "


def final_status(client: httpx.Client, gen_id: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while True:
        r = client.get(f"/api/v1/generation?id={gen_id}")
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if data["status"] != "incomplete" or time.time() > deadline:
            return data
        time.sleep(0.2)


def test_speech_client_leaving_mid_stream_is_recorded_as_cancelled(server, client):
    body = {"model": "local/hibari", "input": SENTENCE * 40, "response_format": "pcm"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/api/v1/audio/speech", json=body) as r:
            assert r.status_code == 200
            gen_id = r.headers["x-generation-id"]
            first = next(r.iter_raw())
            assert first
        # leaving the block closes the connection with most of the audio unsent
    g = final_status(client, gen_id)
    assert g["status"] == "cancelled", g
    assert g["cancelled"] is True


def test_whole_stream_read_is_a_success(server, client):
    r = client.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": SENTENCE, "response_format": "pcm"})
    assert r.status_code == 200 and len(r.content) > 10000
    g = final_status(client, r.headers["x-generation-id"])
    assert g["status"] == "success" and g["cancelled"] is False


def test_sse_transcription_client_leaving_is_recorded_as_cancelled(server, client, manifest):
    from conftest import DEV_AUDIO
    longest = max(manifest, key=lambda m: m["duration_s"])
    audio = (DEV_AUDIO / longest["file"]).read_bytes()
    fmt = longest["container"]
    body = {"model": "local/whisper-base", "stream": True,
            "input_audio": {"data": base64.b64encode(audio).decode(), "format": fmt}}
    with httpx.Client(base_url=server.url, timeout=120) as c:
        with c.stream("POST", "/api/v1/audio/transcriptions", json=body) as r:
            assert r.status_code == 200
            gen_id = r.headers["x-generation-id"]
            next(r.iter_raw())  # the first event
    g = final_status(client, gen_id, timeout=120)
    # the longest dev file takes the local engine tens of seconds: the client left long before the end
    assert g["status"] == "cancelled" and g["cancelled"] is True, g
