"""Mistral Voxtral as an audio-in chat upstream (providers/mistral_chat.py) against a strict fake of Mistral's
chat completions API (tests/fakes/mistral_chat_fake.py, mistralai SDK 2.10.2 shapes): the audio chunk is
Mistral's base64 string, OpenAI-only parameters are renamed or left out (Mistral answers them with a 422),
usage counts the audio, and answers come whole and streamed, through the openai SDK against our API."""
from __future__ import annotations

import base64
import math

import pytest
from openai import BadRequestError, OpenAI

from conftest import DEV_AUDIO
from fakes.harness import b64, start_gateway
from fakes.mistral_chat_fake import TOKENS_PER_AUDIO_SECOND, MistralChatFake
from fakes.runner import probe

QUESTION = DEV_AUDIO / "sr_english.wav"  # 2.7 s
JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"  # 11 s
# test prices: text tokens in / out per million, audio per minute (how Mistral bills Voxtral's audio)
PIN, POUT, PER_MINUTE = 0.1, 0.3, 0.004


@pytest.fixture(scope="module")
def fake():
    f = MistralChatFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(fake, tmp_path_factory):
    providers = {"mistral": {"name": "Mistral", "adapter": "mistral", "base_url": fake.base_url,
                             "api_key_env": "MISTRAL_API_KEY"}}
    models = [{"id": "test/voxtral-small", "name": "Voxtral Small (chat)", "kind": "chat", "endpoints": [
        {"provider": "mistral", "upstream_model": "voxtral-small-latest", "input_formats": ["wav", "mp3", "flac"],
         "pricing": {"per_million_input_tokens": PIN, "per_million_output_tokens": POUT, "per_minute": PER_MINUTE,
                     "per_million_audio_input_tokens": 0.0},
         "capabilities": {"audio_input": True, "streaming": True}}]}]
    yield from start_gateway(tmp_path_factory.mktemp("chat-mistral"), {"providers": providers, "models": models},
                             MISTRAL_API_KEY=fake.api_key)


@pytest.fixture
def oai(gw, fake):
    fake.clear()
    with OpenAI(base_url=gw.url + "/v1", api_key="sk-unused", max_retries=0) as c:
        yield c
    assert not fake.violations, fake.violations


def _question(path=QUESTION, fmt="wav"):
    return [{"role": "developer", "content": "Answer in one sentence."},
            {"role": "user", "content": [{"type": "text", "text": "What do you hear?"},
                                         {"type": "input_audio", "input_audio": {"data": b64(path.read_bytes()),
                                                                                 "format": fmt}}]}]


def test_voxtral_audio_in_whole(oai, fake):
    r = oai.chat.completions.create(model="test/voxtral-small", messages=_question(), temperature=0.2, seed=7,
                                    max_completion_tokens=64, user="u-1")
    heard = probe(QUESTION.read_bytes()).duration
    assert r.choices[0].message.content == f"I heard {heard:.1f} seconds of audio."
    sent = fake.calls[-1].json
    assert sent["model"] == "voxtral-small-latest"
    assert sent["messages"][0] == {"role": "system", "content": "Answer in one sentence."}
    chunk = sent["messages"][1]["content"][1]
    assert chunk["type"] == "input_audio" and base64.b64decode(chunk["input_audio"]) == QUESTION.read_bytes()
    assert sent["random_seed"] == 7 and sent["max_tokens"] == 64 and sent["temperature"] == 0.2
    assert not {"seed", "user", "max_completion_tokens", "stream_options"} & set(sent)
    u = r.usage.model_dump()
    audio_tokens = math.ceil(round(heard) * TOKENS_PER_AUDIO_SECOND)
    assert u["prompt_tokens_details"]["audio_tokens"] == audio_tokens
    text_in = u["prompt_tokens"] - audio_tokens
    assert u["cost"] == pytest.approx((text_in * PIN + u["completion_tokens"] * POUT) / 1e6
                                      + heard / 60 * PER_MINUTE, rel=1e-3)


def test_voxtral_audio_in_streamed(oai, fake):
    chunks = list(oai.chat.completions.create(model="test/voxtral-small", messages=_question(JFK, "flac"),
                                              stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"I heard {probe(JFK.read_bytes()).duration:.1f} seconds of audio."
    assert fake.calls[-1].json["stream"] is True and "stream_options" not in fake.calls[-1].json
    sent = base64.b64decode(fake.calls[-1].json["messages"][1]["content"][1]["input_audio"])
    assert sent == JFK.read_bytes()  # flac is one of the endpoint's input formats: sent as it came
    last = chunks[-1]
    assert last.choices == [] and last.usage.prompt_tokens_details.audio_tokens > 0 and last.usage.cost > 0


def test_voxtral_does_not_speak(oai, fake):
    with pytest.raises(BadRequestError) as e:
        oai.chat.completions.create(model="test/voxtral-small", messages=_question(), modalities=["text", "audio"],
                                    audio={"voice": "alloy", "format": "mp3"})
    assert e.value.body["param"] == "modalities" and "test/voxtral-small" in e.value.body["message"]
    assert not fake.calls
