import base64

from conftest import DEV_AUDIO


def test_health_and_generation_id(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = client.get("/api/v1/models")
    assert r.headers["x-generation-id"].startswith("gen-")


def test_json_transcription_jfk(client):
    data = base64.b64encode((DEV_AUDIO / "jfk_inaugural_excerpt.flac").read_bytes()).decode()
    r = client.post("/api/v1/audio/transcriptions", json={"model": "local/whisper-base",
                                                          "input_audio": {"data": data, "format": "flac"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "ask not what your country can do for you" in body["text"].lower()
    assert abs(body["usage"]["seconds"] - 11.0) < 0.05
    assert body["usage"]["cost"] == 0
