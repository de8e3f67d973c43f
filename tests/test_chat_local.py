"""The offline voice-chat cascade (local Whisper -> a small local LLM -> hibari) end to end, with no key:
a spoken question from the dev set answered on topic, the spoken answer saying its transcript, substitution for
catalog audio-chat models; and a catalog-configured cascade whose text step is an OpenAI-compatible LLM server
(a fake that writes slowly), which shows the first audio leaving before the LLM has written its last word."""
from __future__ import annotations

import base64
import json
import re
import time

import httpx
import pytest
from openai import OpenAI

from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import api_client, b64, start_gateway
from fakes.openai_chat_fake import OpenAIChatFake
from fakes.runner import probe
from wer import wer

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"  # "... ask not what your country can do for you ..."
COUNT = DEV_AUDIO / "sr_english.wav"  # "one two three", 2.7 s
ON_TOPIC = {"country", "countries", "america", "americans", "american", "nation", "kennedy", "president", "citizen",
            "citizens", "fellow", "serve", "service", "freedom", "people", "patriotism", "duty", "government"}


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The shipped catalog, no provider key at all, local engines standing in."""
    tmp = tmp_path_factory.mktemp("chat-offline")
    s = ServerProcess(env={"AUDIOROUTER_PRELOAD": "false", "AUDIOROUTER_DATA_DIR": str(tmp / "data")}, tmp=tmp).start()
    yield s
    s.stop()


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.mark.slow  # the real 135M LLM on 2 cores
def test_spoken_question_answered_offline_on_topic(offline):
    r = httpx.post(offline.url + "/api/v1/chat/completions", timeout=300, json={
        "model": "local/voice-chat", "modalities": ["text", "audio"], "audio": {"voice": "heart", "format": "wav"},
        "max_tokens": 60,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Who is this speech addressed to, and what does it ask of them?"},
            {"type": "input_audio", "input_audio": {"data": b64(JFK.read_bytes()), "format": "flac"}}]}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-provider"] == "local"
    body = r.json()
    audio = body["choices"][0]["message"]["audio"]
    transcript = audio["transcript"]
    assert words(transcript) & ON_TOPIC, transcript
    wav = base64.b64decode(audio["data"])
    p = probe(wav)
    assert p.container == "wav" and p.rate == 24000 and p.duration > 0.5
    # the audio says the transcript: local Whisper hears it back
    back = httpx.post(offline.url + "/api/v1/audio/transcriptions", timeout=300, json={
        "model": "local/whisper-base", "input_audio": {"data": audio["data"], "format": "wav"}}).json()["text"]
    assert wer([transcript], [back]).wer < 0.35, (transcript, back)
    u = body["usage"]
    assert u["prompt_tokens_details"]["audio_tokens"] == 110  # 11 s of audio at 10 tokens a second
    assert u["completion_tokens_details"]["audio_tokens"] > 0 and u["cost"] == 0


@pytest.mark.slow  # the real 135M LLM on 2 cores
def test_catalog_audio_model_substituted_offline_and_streamed(offline):
    client = OpenAI(base_url=offline.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    pieces, transcript, usage = [], [], None
    with client.chat.completions.with_streaming_response.create(
            model="openai/gpt-4o-audio-preview", stream=True, modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "pcm16"}, max_tokens=40,
            messages=[{"role": "user", "content": "Say hello and tell me one fact about the sea."}]) as resp:
        assert resp.headers["x-provider-substitute"] == "true" and resp.headers["x-provider"] == "local"
        for chunk in resp.parse():
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.audio:
                a = chunk.choices[0].delta.audio
                if a.data:
                    pieces.append(base64.b64decode(a.data))
                if a.transcript:
                    transcript.append(a.transcript)
    pcm = b"".join(pieces)
    assert len(pcm) % 2 == 0 and len(pcm) / 2 / 24000 > 0.5  # s16le 24 kHz
    assert "".join(transcript).strip()
    assert usage is not None and usage.cost == 0 and usage.completion_tokens_details.audio_tokens > 0


@pytest.mark.slow  # the real 135M LLM on 2 cores
def test_text_only_answer_to_a_spoken_question(offline):
    r = httpx.post(offline.url + "/v1/chat/completions", timeout=300, json={
        "model": "local/voice-chat", "max_tokens": 24,
        "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": b64(COUNT.read_bytes()), "format": "wav"}}]}]})
    assert r.status_code == 200, r.text
    msg = r.json()["choices"][0]["message"]
    assert msg["content"] and "audio" not in msg


# ---- a cascade from the catalog: local Whisper -> an OpenAI-compatible LLM server -> hibari -------------------
@pytest.fixture(scope="module")
def llm():
    f = OpenAIChatFake(api_key="sk-test-llm-server").start()  # as a text LLM server
    yield f
    f.stop()


@pytest.fixture(scope="module")
def cascade_gw(llm, tmp_path_factory):
    providers = {"llm-server": {"name": "An LLM server", "adapter": "openai_compatible", "base_url": llm.base_url,
                                "api_key_env": "LLM_SERVER_KEY"}}
    models = [
        {"id": "test/llm", "name": "text LLM on a server", "kind": "chat",
         "endpoints": [{"provider": "llm-server", "upstream_model": "gpt-4o-mini"}]},
        {"id": "test/voice", "name": "whisper -> server LLM -> hibari", "kind": "chat", "voices": ["heart"],
         "endpoints": [{"provider": "local", "upstream_model": "voice-server",
                        "capabilities": {"audio_input": True, "audio_output": True, "streaming": True},
                        "cascade": {"transcription": "local/whisper-base", "chat": "test/llm", "speech": "local/hibari",
                                    "system_prompt": "Answer briefly."}}]},
    ]
    yield from start_gateway(tmp_path_factory.mktemp("chat-cascade"), {"providers": providers, "models": models},
                             LLM_SERVER_KEY=llm.api_key)


def test_first_audio_leaves_before_the_llm_finishes(cascade_gw, llm):
    for api in api_client(cascade_gw, llm):
        # the engines loaded first (this gateway does not preload), so the timing is the pipeline's
        assert api.post("/v1/audio/speech", json={"model": "local/hibari", "input": "Warm up.", "voice": "heart"}
                        ).status_code == 200
        llm.chunk_delay_s = 0.25
        question = "Hello there. This sentence comes later and takes the slow server a while to write out in full."
        t_first_audio = None
        with httpx.stream("POST", cascade_gw.url + "/v1/chat/completions", timeout=120, json={
                "model": "test/voice", "stream": True, "modalities": ["text", "audio"],
                "audio": {"voice": "heart", "format": "pcm16"},
                "messages": [{"role": "user", "content": question}]}) as r:
            assert r.status_code == 200
            events = []
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    ev = json.loads(line[6:])
                    events.append(ev)
                    d = ev["choices"][0]["delta"] if ev.get("choices") else {}
                    if d.get("audio", {}).get("data") and t_first_audio is None:
                        t_first_audio = time.time()
        assert t_first_audio is not None and t_first_audio < llm.last_word_at - 1.0
        sent = llm.calls[-1].json
        assert sent["model"] == "gpt-4o-mini" and sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
        assert sent["messages"][1] == {"role": "user", "content": question}
        assert "modalities" not in sent and "audio" not in sent
        said = "".join(e["choices"][0]["delta"]["audio"].get("transcript", "") for e in events
                       if e.get("choices") and "audio" in e["choices"][0]["delta"])
        assert said == f"You said: {question}"
        assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0
        llm.chunk_delay_s = 0.0
