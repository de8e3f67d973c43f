"""Chat on the built-in local LLM (providers/local_llm.py), text in and text out: the text step of the offline
voice-chat cascade, and the `local/smollm2-135m-instruct` catalog model on its own. Generation runs in its own
bounded worker pool (a full queue answers 503 like the other local engines) and streams text pieces as the
model produces them; the client leaving stops generation."""
from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

from ..core.chat import ChatDelta, ChatReply, ChatRequest, ChatUsage
from ..core.errors import InvalidRequest
from .local_llm import ChatLLM, XLlamaCppLLM
from .workers import WorkerPool

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS = 1024
# What the model reads before it answers, at most (~4 characters a token): the system messages and as many of
# the latest turns as fit. Prefill time grows with the prompt, and a voice answer should not wait on a long
# conversation's history; the model's context (2048 tokens) must also hold the answer.
MAX_PROMPT_CHARS = 3000
# The voice-chat cascade's default system prompt (a catalog cascade may set its own). The LLM is warmed with
# it at start-up, so its tokens are already in the model's cache when the first question comes.
VOICE_SYSTEM_PROMPT = ("You are a helpful voice assistant. Your answer will be spoken aloud: answer in one to three "
                       "short, plain sentences, without lists, markdown or emoji.")


def text_messages(req: ChatRequest, system_prompt: str | None = None,
                  max_chars: int = MAX_PROMPT_CHARS) -> list[dict[str, str]]:
    """The conversation as role/content strings (audio parts must have been transcribed into text parts by
    then; an earlier spoken answer is its transcript): the system messages, then the latest turns that fit in
    `max_chars` together (older ones are left out; the last message is kept, cut to its end if it alone is too
    long)."""
    system: list[dict[str, str]] = []
    turns: list[dict[str, str]] = []
    if system_prompt and not any(m.role in ("system", "developer") for m in req.messages):
        system.append({"role": "system", "content": system_prompt})
    for m in req.messages:
        role = "system" if m.role == "developer" else m.role
        if role not in ("system", "user", "assistant"):
            continue  # tool turns: the local model has no tools
        text = m.text() or (m.extra.get("audio_transcript") or "")
        (system if role == "system" else turns).append({"role": role, "content": text})
    budget = max(0, max_chars - sum(len(m["content"]) for m in system))
    kept: list[dict[str, str]] = []
    for turn in reversed(turns):
        if len(turn["content"]) > budget:
            if not kept:  # the question itself: its end, where the question usually is
                kept.append({"role": turn["role"], "content": turn["content"][-budget:] if budget else ""})
            break
        budget -= len(turn["content"])
        kept.append(turn)
    return system + kept[::-1]


class LocalChat:
    def __init__(self, settings: Any, llm: ChatLLM | None = None):
        self.settings = settings
        self.llm: ChatLLM = llm or XLlamaCppLLM(settings.cache_dir)
        self.pool = WorkerPool(1, getattr(settings, "queue_size", 16), name="llm")

    def _params(self, req: ChatRequest) -> dict[str, Any]:
        n = req.max_tokens or DEFAULT_MAX_TOKENS
        if n > MAX_TOKENS:
            raise InvalidRequest(f"max_tokens: the local model answers at most {MAX_TOKENS} tokens",
                                 param="max_tokens", metadata={"max": MAX_TOKENS})
        stop = req.params.get("stop")
        return {"max_tokens": n, "temperature": req.params.get("temperature"), "top_p": req.params.get("top_p"),
                "stop": [stop] if isinstance(stop, str) else stop, "seed": req.params.get("seed")}

    async def stream(self, req: ChatRequest, system_prompt: str | None = None) -> AsyncIterator[ChatDelta]:
        messages = text_messages(req, system_prompt)
        params = self._params(req)
        cancel = threading.Event()
        llm = self.llm

        def produce(emit) -> None:
            for item in llm.stream(messages, cancelled=cancel.is_set, **params):
                emit(item)
                if cancel.is_set():
                    return

        q = self.pool.submit_stream(produce)

        async def deltas() -> AsyncIterator[ChatDelta]:
            try:
                while True:
                    item = await q.get()
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    if isinstance(item, str):
                        yield ChatDelta(text=item)
                    elif isinstance(item, dict):
                        yield ChatDelta(finish_reason=str(item.get("finish_reason") or "stop"),
                                        usage=ChatUsage(prompt_tokens=int(item.get("prompt_tokens") or 0),
                                                        completion_tokens=int(item.get("completion_tokens") or 0),
                                                        cached_tokens=int(item.get("cached_tokens") or 0)))
            finally:
                cancel.set()

        return deltas()

    async def complete(self, req: ChatRequest, system_prompt: str | None = None) -> ChatReply:
        parts: list[str] = []
        reply = ChatReply(text="")
        async for d in await self.stream(req, system_prompt):
            if d.text:
                parts.append(d.text)
            if d.usage is not None:
                reply.usage = d.usage
            if d.finish_reason:
                reply.finish_reason = d.finish_reason
        reply.text = "".join(parts).strip()
        return reply

    def load(self) -> None:
        load = getattr(self.llm, "load", None)
        if load is not None:
            load()

    def warm_up(self, system_prompt: str = VOICE_SYSTEM_PROMPT) -> None:
        """Load the model and answer one short question with `system_prompt` (blocking; at start-up): the
        first decode's set-up is paid now, and the prompt's tokens stay in the model's cache, so a later
        request that starts with the same system prompt only reads its own messages."""
        self.load()
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": "Hello."}]
        for _ in self.llm.stream(messages, max_tokens=2, temperature=None, top_p=None, stop=None, seed=None,
                                 cancelled=lambda: False):
            pass

    def close(self) -> None:
        self.pool.shutdown()
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()
