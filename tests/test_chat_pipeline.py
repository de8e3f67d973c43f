"""The voice-chat cascade's pipelining, in process and deterministic: a scripted LLM (behind the same ChatLLM
interface as the real one) writes its first sentence, then refuses to write the second until the first audio
of the answer has left the job. A cascade that synthesized only after the whole answer would never get there.
Also: the sentence cutter, and the local LLM's weights check."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from audiorouter.config import Settings
from audiorouter.core.chat import ChatMessage, ChatRequest
from audiorouter.jobs.chat import ChatAudioStore, ChatJob, _Sentences
from audiorouter.providers.local_chat import LocalChat
from audiorouter.providers.local_llm import LLMUnavailable, _verified
from audiorouter.providers.registry import build_adapters
from audiorouter.routing.catalog import Catalog
from audiorouter.routing.router import Router
from audiorouter.store.db import Database


class ScriptedLLM:
    """Sentence one; then waits (in its worker thread) for `spoken` before sentence two."""

    def __init__(self):
        self.spoken = threading.Event()
        self.waited = None
        self.finished_at = 0.0
        self.messages = None

    def stream(self, messages, *, max_tokens, temperature=None, top_p=None, stop=None, seed=None,
               cancelled=lambda: False):
        self.messages = messages
        for w in "The sea is salty because rivers carry minerals into it.".split(" "):
            yield w + " "
        self.waited = self.spoken.wait(timeout=60)
        for w in "Over millions of years the salt has built up.".split(" "):
            yield w + " "
        self.finished_at = time.time()
        yield {"prompt_tokens": 30, "completion_tokens": 22, "finish_reason": "stop"}


@pytest.fixture
async def spoken(tmp_path):
    """The spoken answers' store on a fresh SQLite database (migrated)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    await db.upgrade()
    yield ChatAudioStore(db)
    await db.close()


@pytest.fixture
def router(tmp_path):
    settings = Settings(preload=False, cache_dir=tmp_path, data_dir=tmp_path / "data")
    catalog = Catalog.load()
    adapters = build_adapters(catalog, settings)
    return Router(catalog, adapters, settings)


async def test_first_sentence_is_spoken_while_the_llm_writes(router, spoken):
    llm = ScriptedLLM()
    local = router.adapters["local"]
    local.__dict__["_chat_client"] = LocalChat(router.settings, llm=llm)  # the cascade's text step
    req = ChatRequest(model="local/voice-chat", messages=[ChatMessage("user", "Why is the sea salty?")],
                      modalities=["text", "audio"], voice="heart", audio_format="pcm16", stream=True)
    job = ChatJob(router, req, router.settings, memory=spoken, namespace="k")
    await job.prepare()
    deltas = await job.open_stream()
    first_audio_at = None
    pcm = bytearray()
    said = []
    usage = None
    async for d in deltas:
        if d.audio and first_audio_at is None:
            first_audio_at = time.time()
            llm.spoken.set()  # only now may the LLM go on
        if d.audio:
            pcm += d.audio
        if d.transcript:
            said.append(d.transcript)
        if d.usage is not None:
            usage = d.usage
    assert llm.waited is True  # the first audio came while sentence two was not written yet
    assert first_audio_at < llm.finished_at
    assert "".join(said) == ("The sea is salty because rivers carry minerals into it. "
                             "Over millions of years the salt has built up.")
    samples = np.frombuffer(bytes(pcm), "<i2")
    assert samples.size / 24000 > 2.0 and np.abs(samples).max() > 1000  # speech, at 24 kHz
    assert llm.messages[0]["role"] == "system" and llm.messages[-1] == {"role": "user", "content": "Why is the sea salty?"}
    assert usage.completion_audio_tokens > 0 and usage.prompt_tokens == 30 and usage.cost == 0
    assert job.result is not None and job.result.audio_id.startswith("audio_")
    rec, expired = await spoken.get(job.result.audio_id, "k")  # kept for a later turn, with what it said
    assert not expired and rec.transcript == "".join(said) and rec.expires_at == job.result.expires_at


@pytest.mark.parametrize("pieces, want", [
    (["Yes. ", "That is right. ", "Go on"], ["Yes. That is right.", "Go on"]),
    (["Hello there, friend. How", " are you?"], ["Hello there, friend.", "How are you?"]),
    (["Line one\n", "line two"], ["Line one", "line two"]),
])
def test_sentence_cutter(pieces, want):
    cut = _Sentences()
    out = []
    for p in pieces:
        out += cut.feed(p)
    out += cut.flush()
    assert out == want


def test_weights_checksum_refuses_a_changed_file(tmp_path):
    import hashlib
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 100)
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    assert _verified(f, good, tmp_path) == f
    f.write_bytes(b"GGUF" + b"\1" * 100)
    with pytest.raises(LLMUnavailable) as e:
        _verified(f, good, tmp_path)
    assert e.value.status == 503 and "checksum" in e.value.message


@pytest.mark.slow  # loads the local LLM (~20 s on 2 cores)
def test_local_llm_listener_refuses_callers_without_its_key(tmp_path):
    """xllamacpp opens an HTTP listener on 127.0.0.1 we do not use: it must not serve anyone (docs/chat.md)."""
    import urllib.error
    import urllib.request

    from audiorouter.providers.local_llm import XLlamaCppLLM
    llm = XLlamaCppLLM(tmp_path)
    llm.load()
    addr = llm._server.listening_address
    url = (addr if addr.startswith("http") else f"http://{addr}") + "/v1/chat/completions"
    assert "127.0.0.1" in url
    req = urllib.request.Request(url, data=b'{"messages": [{"role": "user", "content": "hi"}]}',
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401
    out = list(llm.stream([{"role": "user", "content": "Say hi."}], max_tokens=4))
    assert isinstance(out[-1], dict) and out[-1]["completion_tokens"] >= 1 and any(isinstance(x, str) for x in out)
