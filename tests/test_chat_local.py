"""The offline voice-chat cascade (local Whisper -> a small local LLM -> hibari) end to end, with no key:
spoken questions from the dev set answered on topic, whole and streamed (the stream's audio decodes and says its
transcript, and its first audio comes before the answer's last words), substitution for catalog audio-chat
models; the local LLM's prompt (system prompt kept in the model's cache by the start-up warm-up, long
conversations cut to their latest turns) and the cut of the first piece to speak; and a catalog-configured
cascade whose text step is an OpenAI-compatible LLM server (a fake that writes slowly), which shows the first
audio leaving before the LLM has written its last word."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import wave

import httpx
import pytest
from openai import OpenAI

from audiorouter.config import Settings
from audiorouter.core.chat import ChatMessage, ChatRequest
from audiorouter.jobs.chat import _Sentences
from audiorouter.providers.local_chat import VOICE_SYSTEM_PROMPT, LocalChat, text_messages
from conftest import DEV_AUDIO, ServerProcess
from fakes.harness import api_client, b64, start_gateway
from fakes.openai_chat_fake import OpenAIChatFake
from fakes.runner import probe
from wer import wer

JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"  # "... ask not what your country can do for you ..."
COUNT = DEV_AUDIO / "sr_english.wav"  # "one two three", 2.7 s
# a spoken question, 5.2 s: "When are you getting rid of these cats? I'm not fixing to start an annex to Kate's
# cat home."
CATS = DEV_AUDIO / "librispeech_dev-clean_1988-24833-0003.flac"
CAT_WORDS = {"cat", "cats", "kitten", "kittens", "pet", "pets", "animal", "animals", "shelter", "adopt", "adopted",
             "adoption", "annex", "kate", "kate's"}
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
def test_spoken_question_streamed_offline(offline):
    """A real 5 s spoken question, streamed pcm16: the answer is on topic, comes in pieces whose first audio
    arrives before the answer's last words, and the audio decodes to speech that says the transcript."""
    events = []
    with httpx.stream("POST", offline.url + "/v1/chat/completions", timeout=300, json={
            "model": "local/voice-chat", "stream": True, "modalities": ["text", "audio"],
            "audio": {"voice": "heart", "format": "pcm16"}, "max_tokens": 80,
            "messages": [  # a voice app's own system prompt (the 135M model needs the setting to stay on topic)
                {"role": "system", "content": "You are a friendly assistant in a family home that has two cats."},
                {"role": "user", "content": [
                    {"type": "input_audio", "input_audio": {"data": b64(CATS.read_bytes()), "format": "flac"}}]}]}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    pieces = [(i, e["choices"][0]["delta"]["audio"]) for i, e in enumerate(events)
              if e.get("choices") and e["choices"][0].get("delta", {}).get("audio")]
    with_audio = [i for i, a in pieces if a.get("data")]
    with_text = [i for i, a in pieces if a.get("transcript")]
    # the answer is spoken sentence by sentence (audio before the last sentence's transcript), not after the
    # whole text; that the first audio leaves before the LLM's last token is test_chat_pipeline's check
    assert with_audio and len(with_text) >= 2 and with_audio[0] < with_text[-1]
    transcript = "".join(a.get("transcript", "") for _, a in pieces).strip()
    assert words(transcript) & CAT_WORDS, transcript
    pcm = b"".join(base64.b64decode(a["data"]) for _, a in pieces if a.get("data"))
    assert len(pcm) % 2 == 0 and len(pcm) / 2 / 24000 > 1.0  # s16le, 24 kHz
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(pcm)
    back = httpx.post(offline.url + "/api/v1/audio/transcriptions", timeout=300, json={
        "model": "local/whisper-base", "input_audio": {"data": b64(buf.getvalue()), "format": "wav"}}).json()["text"]
    assert wer([transcript], [back]).wer < 0.35, (transcript, back)
    assert events[-1]["choices"] == [] and events[-1]["usage"]["prompt_tokens_details"]["audio_tokens"] == 52


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


# ---- the local LLM's prompt and the first piece to speak ------------------------------------------------------
def test_warm_up_leaves_the_voice_system_prompt_in_the_models_cache(tmp_path):
    chat = LocalChat(Settings(preload=False, cache_dir=tmp_path))
    try:
        chat.warm_up()  # what the server does at start-up (AUDIOROUTER_PRELOAD)
        req = ChatRequest(model="local/smollm2-135m-instruct", max_tokens=8,
                          messages=[ChatMessage("user", "What is the capital of France?")])
        reply = asyncio.run(chat.complete(req, VOICE_SYSTEM_PROMPT))
        u = reply.usage
        # the system prompt (~35 tokens) was read from the cache; the question was not
        assert 20 <= u.cached_tokens < u.prompt_tokens, u
        other = asyncio.run(chat.complete(req, "You are a pirate. Answer like one."))
        assert other.usage.cached_tokens < u.cached_tokens  # another system prompt: not from the cache
    finally:
        chat.close()


def test_long_conversations_are_cut_to_their_latest_turns():
    turns = [ChatMessage("user" if i % 2 == 0 else "assistant", f"turn {i} " + "x" * 90) for i in range(40)]
    req = ChatRequest(model="m", messages=[ChatMessage("system", "Be brief."), *turns])
    msgs = text_messages(req, "unused: the request has its own", max_chars=1000)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    kept = msgs[1:]
    assert kept[-1]["content"].startswith("turn 39 ") and kept[0]["content"].startswith(f"turn {40 - len(kept)} ")
    assert 1 < len(kept) < 40 and sum(len(m["content"]) for m in msgs) <= 1000
    long_q = ChatMessage("user", "a" * 5000 + " the question?")
    only = text_messages(ChatRequest(model="m", messages=[long_q]), "sys", max_chars=1000)
    assert only[0] == {"role": "system", "content": "sys"} and only[1]["content"].endswith(" the question?")
    assert len(only[1]["content"]) == 1000 - 3


@pytest.mark.parametrize("pieces, want", [
    (["Paris is the capital", " of France, and", " it is famous for art. More"],
     ["Paris is the capital of France,", "and it is famous for art.", "More"]),
    (["Yes, that is right. Go", " on."], ["Yes, that is right.", "Go on."]),  # a short first clause waits
    (["One, two, three, four, five. Six,", " seven."], ["One, two, three, four,", "five.", "Six, seven."]),
])
def test_the_first_clause_is_spoken_before_its_sentence_ends(pieces, want):
    cut = _Sentences()
    out = []
    for p in pieces:
        out += cut.feed(p)
    out += cut.flush()
    assert out == want


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
