"""The chat wire protocol of OpenAI-compatible upstreams (OpenAI's audio models, OpenRouter, vLLM / llama.cpp /
LocalAI servers, Groq, Mistral's OpenAI-style endpoint), for the adapters that already talk HTTP to them.

POST {base}/chat/completions, JSON, `Authorization: Bearer <key>`:
  {model, messages, modalities?, audio?: {voice, format}, stream?, stream_options?: {include_usage}, ...}
- a user message's content is a string or parts: {"type": "text", "text"} and
  {"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav" | "mp3"}} (OpenAI takes only wav and
  mp3 here; other containers are re-encoded to wav by the gateway before they are sent, see `input_formats`);
- an assistant turn may be {"role": "assistant", "audio": {"id"}} (an earlier spoken answer, by id);
- the answer: choices[0].message {content, audio?: {id, data, expires_at, transcript}, tool_calls?, refusal?},
  finish_reason, usage {prompt_tokens, completion_tokens, prompt_tokens_details {audio_tokens, cached_tokens},
  completion_tokens_details {audio_tokens, reasoning_tokens}};
- streamed: `data: {chat.completion.chunk}` events, choices[0].delta {content?, audio?: {id?, data?, transcript?,
  expires_at?}}, a last chunk with `usage` and empty choices (stream_options.include_usage), then `data: [DONE]`.
Errors: {"error": {"message", "type", "param", "code"}}, mapped by HTTPProvider.

The body relayed is the client's own (unknown parameters such as tools pass through) with the model, the
messages and the stream options rewritten; OpenRouter's routing fields are dropped except when the upstream is
OpenRouter itself (then the whole body passes)."""
from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from ..core.chat import ChatDelta, ChatReply, ChatRequest, ChatUsage, InputAudioPart
from ..core.errors import UpstreamError
from .http import HTTPProvider
from .openai_compatible import iter_sse_data

# OpenRouter-only request fields: not sent to other upstreams (OpenAI answers 400 to unknown parameters)
OPENROUTER_FIELDS = ("provider", "models", "route", "transforms", "session_id", "usage", "plugins", "cache",
                     "reasoning", "prediction_id", "debug")
GATEWAY_FIELDS = ("messages", "model", "stream", "stream_options")


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def parse_usage(u: Any) -> ChatUsage | None:
    if not isinstance(u, dict):
        return None
    pd = u.get("prompt_tokens_details")
    cd = u.get("completion_tokens_details")
    pd = pd if isinstance(pd, dict) else {}
    cd = cd if isinstance(cd, dict) else {}
    return ChatUsage(prompt_tokens=_int(u.get("prompt_tokens")), completion_tokens=_int(u.get("completion_tokens")),
                     prompt_audio_tokens=_int(pd.get("audio_tokens")), cached_tokens=_int(pd.get("cached_tokens")),
                     completion_audio_tokens=_int(cd.get("audio_tokens")),
                     reasoning_tokens=_int(cd.get("reasoning_tokens")))



class OpenAIChat:
    """Chat completions through an HTTPProvider (its base URL, key, pooled client and error mapping)."""

    def __init__(self, adapter: HTTPProvider, *, path: str = "/chat/completions"):
        self.adapter = adapter
        self.path = path

    @property
    def slug(self) -> str:
        return self.adapter.slug

    @property
    def passes_routing(self) -> bool:
        return self.adapter.spec.adapter == "openrouter"

    def headers(self, req: ChatRequest) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = self.adapter.api_key_for(req)
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    # ---- the request ---------------------------------------------------------------------------------------
    def wire_messages(self, req: ChatRequest, endpoint: Any,
                      audio_bytes: Callable[[InputAudioPart, list[str] | None], tuple[bytes, str]],
                      recall: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages in OpenAI's wire shape. `audio_bytes(part, accepted_formats)` gives the part's bytes in
        a format the endpoint takes; `recall(audio_id)` the gateway's record of an earlier spoken answer
        ({"transcript", "upstream": {"provider", "id", "expires_at"}})."""
        out: list[dict[str, Any]] = []
        for m in req.messages:
            msg: dict[str, Any] = {"role": m.role, **m.extra}
            if m.name is not None:
                msg["name"] = m.name
            if isinstance(m.content, list):
                parts = []
                for p in m.content:
                    if isinstance(p, dict) and isinstance(p.get("input_audio"), InputAudioPart):
                        data, fmt = audio_bytes(p["input_audio"], endpoint.input_formats)
                        parts.append({"type": "input_audio",
                                      "input_audio": {"data": base64.b64encode(data).decode("ascii"), "format": fmt}})
                    else:
                        parts.append(p)
                msg["content"] = parts
            elif m.content is not None or m.audio_id is None:
                msg["content"] = m.content
            if m.audio_id is not None:
                rec = recall(m.audio_id)
                up = rec.get("upstream") or {}
                if up.get("provider") == self.slug and up.get("id") and (up.get("expires_at") or 0) > time.time():
                    msg["audio"] = {"id": up["id"]}  # the upstream still holds it: refer to it by its own id
                elif msg.get("content") in (None, ""):
                    msg["content"] = rec.get("transcript") or ""
            out.append(msg)
        return out

    def body(self, req: ChatRequest, endpoint: Any, messages: list[dict[str, Any]], *, stream: bool,
             options: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in req.raw.items() if k not in GATEWAY_FIELDS}
        if not self.passes_routing:
            for k in OPENROUTER_FIELDS:
                body.pop(k, None)
        body.update(options)
        body["model"] = endpoint.upstream_model
        body["messages"] = messages
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def build(self, req: ChatRequest, endpoint: Any,
              audio_bytes: Callable[[InputAudioPart, list[str] | None], tuple[bytes, str]],
              recall: Callable[[str], dict[str, Any]], *, stream: bool, options: dict[str, Any]) -> dict[str, Any]:
        """The upstream request body (what every chat client offers the use case)."""
        return self.body(req, endpoint, self.wire_messages(req, endpoint, audio_bytes, recall), stream=stream,
                         options=options)

    # ---- the answer ----------------------------------------------------------------------------------------
    def text_of(self, content: Any) -> str | None:
        """A message's content as text (OpenAI: a string or null; anything else is a malformed reply)."""
        if content is None or isinstance(content, str):
            return content
        raise self._malformed("content is not a string")

    def delta_text(self, content: Any) -> str | None:
        """A streamed delta's content as text (None: no text in it)."""
        return content if isinstance(content, str) else None

    def usage_of(self, u: Any) -> ChatUsage | None:
        return parse_usage(u)

    def _malformed(self, why: str) -> UpstreamError:
        return UpstreamError(f"{self.slug}: malformed upstream reply ({why})", retryable=True,
                             metadata={"provider_name": self.slug, "reason": "malformed_reply"})

    async def complete(self, req: ChatRequest, endpoint: Any, body: dict[str, Any]) -> ChatReply:
        resp = await self.adapter.post_checked(self.adapter.base_url + self.path, content=orjson.dumps(body),
                                               headers=self.headers(req))
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise self._malformed("not JSON") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._malformed("no choices")
        msg = choices[0].get("message")
        if not isinstance(msg, dict):
            raise self._malformed("no message")
        reply = ChatReply(text=self.text_of(msg.get("content")),
                          finish_reason=str(choices[0].get("finish_reason") or "stop"),
                          usage=self.usage_of(data.get("usage")) or ChatUsage())
        audio = msg.get("audio")
        if isinstance(audio, dict):
            try:
                reply.audio = base64.b64decode(audio.get("data") or "", validate=True)
            except (ValueError, TypeError):
                raise self._malformed("audio.data is not base64") from None
            reply.transcript = audio.get("transcript") if isinstance(audio.get("transcript"), str) else None
            reply.upstream_audio_id = audio.get("id") if isinstance(audio.get("id"), str) else None
            reply.upstream_expires_at = _int(audio.get("expires_at")) or None
        reply.extra = {k: v for k, v in msg.items()
                       if k in ("tool_calls", "refusal", "function_call") and v is not None}
        return reply

    async def stream(self, req: ChatRequest, endpoint: Any, body: dict[str, Any]) -> AsyncIterator[ChatDelta]:
        """The upstream's events as deltas; an upstream that answers plain JSON gives one delta with all of it."""
        resp = await self.adapter.open_checked(self.adapter.base_url + self.path, content=orjson.dumps(body),
                                               headers={**self.headers(req), "Accept": "text/event-stream"})
        return self._deltas(resp)

    async def _deltas(self, resp: Any) -> AsyncIterator[ChatDelta]:
        ctype = resp.headers.get("content-type", "").lower()
        got = False
        try:
            if "text/event-stream" not in ctype:
                raise self._malformed(f"expected an event stream, got Content-Type {ctype or 'none'!r}")
            async for data in iter_sse_data(resp.aiter_lines()):
                if data.strip() == "[DONE]":
                    return
                try:
                    ev = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise self._malformed("an event is not JSON") from None
                if not isinstance(ev, dict):
                    continue
                if isinstance(ev.get("error"), dict):
                    msg = ev["error"].get("message")
                    raise UpstreamError(f"{self.slug}: upstream stream failed: "
                                        f"{self.adapter.scrub(msg if isinstance(msg, str) else 'error', 300)}",
                                        retryable=not got, metadata={"provider_name": self.slug})
                d = ChatDelta(usage=self.usage_of(ev.get("usage")))
                choices = ev.get("choices")
                if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                    c = choices[0]
                    delta = c.get("delta")
                    delta = delta if isinstance(delta, dict) else {}
                    d.text = self.delta_text(delta.get("content"))
                    audio = delta.get("audio")
                    if isinstance(audio, dict):
                        if isinstance(audio.get("data"), str) and audio["data"]:
                            try:
                                d.audio = base64.b64decode(audio["data"], validate=True)
                            except ValueError:
                                raise self._malformed("delta.audio.data is not base64") from None
                        if isinstance(audio.get("transcript"), str):
                            d.transcript = audio["transcript"]
                        if isinstance(audio.get("id"), str):
                            d.upstream_audio_id = audio["id"]
                        if _int(audio.get("expires_at")):
                            d.upstream_expires_at = audio["expires_at"]
                    for k in ("tool_calls", "refusal"):
                        if delta.get(k) is not None:
                            d.extra[k] = delta[k]
                    if c.get("finish_reason"):
                        d.finish_reason = str(c["finish_reason"])
                got = True
                yield d
        except httpx.HTTPError as e:
            raise self.adapter.transport_error(e) from None
        finally:
            await resp.aclose()
