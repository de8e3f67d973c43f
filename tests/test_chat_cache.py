"""The transcript cache on audio chat: a configured cascade (transcription model -> chat model -> speech model, all
on a strict fake OpenAI upstream) transcribes each audio question through the transcription use case, so the
transcript cache's keying rules apply exactly as on /audio/transcriptions: the same audio asked again is not
transcribed again (the fake sees no second transcription, and the answer's cost drops by the transcription's
price), the entry is the one the transcription endpoint reads, and `Cache-Control: no-store`, a body
`"cache": false` and provider.zdr store nothing."""
from __future__ import annotations

import base64

import pytest

from conftest import DEV_AUDIO
from fakes.harness import api_client, start_gateway
from fakes.openai_chat_fake import OpenAIChatFake
from fakes.runner import encode_audio, probe, tone

QUESTION = DEV_AUDIO / "sr_english.wav"
STT_PER_MINUTE = 0.006


@pytest.fixture(scope="module")
def fake():
    f = OpenAIChatFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat-cache")
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"}}
    models = [
        {"id": "test/whisper", "name": "zero-retention whisper", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1", "zdr": True,
             "pricing": {"per_minute": STT_PER_MINUTE}}]},
        {"id": "test/text-chat", "name": "zero-retention text chat", "kind": "chat", "endpoints": [
            {"provider": "openai", "upstream_model": "gpt-4o-mini", "zdr": True, "capabilities": {"streaming": True},
             "pricing": {"per_million_input_tokens": 0.15, "per_million_output_tokens": 0.6}}]},
        {"id": "test/tts", "name": "zero-retention tts", "kind": "speech", "voices": ["alloy"], "endpoints": [
            {"provider": "openai", "upstream_model": "tts-1", "zdr": True,
             "output_formats": ["mp3", "pcm", "wav", "opus", "aac", "flac"]}]},
        {"id": "test/cascade", "name": "whisper -> text chat -> tts", "kind": "chat", "voices": ["alloy"],
         "endpoints": [{"provider": "local", "upstream_model": "cascade",
                        "capabilities": {"audio_input": True, "audio_output": True, "streaming": True},
                        "cascade": {"transcription": "test/whisper", "chat": "test/text-chat",
                                    "speech": "test/tts"}}]},
    ]
    yield from start_gateway(tmp, {"providers": providers, "models": models}, OPENAI_API_KEY=fake.api_key,
                             AUDIOROUTER_CACHE_TTL_S="3600", AUDIOROUTER_CACHE_PATH=str(tmp / "transcripts.db"))


@pytest.fixture
def client(gw, fake):
    yield from api_client(gw, fake, timeout=60)


def _ask(client, audio: bytes, headers=None, /, **extra):
    body = {"model": "test/cascade", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Answer briefly."},
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}]}],
        **extra}
    return client.post("/api/v1/chat/completions", json=body, headers=headers or {})


def _transcriptions(fake) -> int:
    return sum(1 for c in fake.calls if c.path == "/v1/audio/transcriptions")


def test_the_same_audio_question_is_not_transcribed_twice(client, fake):
    audio = QUESTION.read_bytes()
    first = _ask(client, audio)
    assert first.status_code == 200, first.text
    assert _transcriptions(fake) == 1
    second = _ask(client, audio)
    assert second.status_code == 200, second.text
    assert _transcriptions(fake) == 1  # answered from the transcript cache
    a, b = first.json(), second.json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["choices"][0]["message"]["content"].startswith("You said:")  # the LLM got the transcript
    stt = probe(audio).duration / 60 * STT_PER_MINUTE
    assert a["usage"]["cost"] - b["usage"]["cost"] == pytest.approx(stt, rel=1e-3)
    # the ledger charged the second one without the transcription
    rows = [client.get("/api/v1/generation", params={"id": r.headers["x-generation-id"]}).json()["data"]
            for r in (first, second)]
    assert rows[0]["total_cost"] - rows[1]["total_cost"] == pytest.approx(stt, rel=1e-3)
    # the entry is the transcription endpoint's own: same keys, same scope
    r = client.post("/api/v1/audio/transcriptions", json={
        "model": "test/whisper", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}})
    assert r.status_code == 200 and r.headers["x-cache"] == "HIT", (r.status_code, r.headers, r.text)
    assert _transcriptions(fake) == 1


@pytest.mark.parametrize("how", ["no-store", "cache-false", "zdr"])
def test_cache_off_and_zero_retention_store_nothing(client, fake, how):
    # audio no other test asks about (its length is the fake's only cue)
    seconds = {"no-store": 1.3, "cache-false": 1.7, "zdr": 2.1}[how]
    audio = encode_audio(tone(seconds, 16000), 16000, "wav")
    headers = {"Cache-Control": "no-store"} if how == "no-store" else None
    extra = {"cache": False} if how == "cache-false" else {"provider": {"zdr": True}} if how == "zdr" else {}
    r = _ask(client, audio, headers, **extra)
    assert r.status_code == 200, r.text
    assert _transcriptions(fake) == 1
    again = _ask(client, audio)  # a plain request: nothing was stored for it to find
    assert again.status_code == 200, again.text
    assert _transcriptions(fake) == 2
    assert _ask(client, audio).status_code == 200
    assert _transcriptions(fake) == 2  # and the plain one did store


def test_zero_retention_keeps_no_spoken_answer_for_a_later_turn(client, fake):
    audio = encode_audio(tone(2.4, 16000), 16000, "wav")
    spoken = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}  # `audio` is _ask's
    kept = _ask(client, audio, None, **spoken)
    zdr = _ask(client, audio, None, provider={"zdr": True}, **spoken)
    assert kept.status_code == 200 and zdr.status_code == 200, (kept.text[:300], zdr.text[:300])
    for r, ok in ((kept, True), (zdr, False)):
        aid = r.json()["choices"][0]["message"]["audio"]["id"]  # the shape the SDKs read, in both cases
        turn = client.post("/api/v1/chat/completions", json={"model": "test/cascade", "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "audio": {"id": aid}},
            {"role": "user", "content": "and then?"}]})
        if ok:
            assert turn.status_code == 200, turn.text
        else:  # nothing of the zero-retention answer was kept: the id is unknown
            assert turn.status_code == 400, turn.text
            assert turn.json()["error"]["metadata"]["param"] == "messages[1].audio.id"
