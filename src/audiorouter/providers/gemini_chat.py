"""Chat on Google's Gemini API (audio in, text out), through the `google` adapter (its credentials, its Gemini
base URL, its error mapping).

POST {gemini_base}/v1beta/models/{model}:generateContent, or :streamGenerateContent?alt=sse for a stream;
`x-goog-api-key: <key>` (or a bearer token). Body:
  {"contents": [{"role": "user" | "model", "parts": [{"text"} | {"inline_data": {"mime_type", "data"}}]}],
   "systemInstruction": {"parts": [{"text"}]},
   "generationConfig": {"temperature", "topP", "maxOutputTokens", "stopSequences", "seed"}}
Audio goes in as inline_data (base64) with its MIME type (audio/wav, audio/mp3, audio/aiff, audio/aac,
audio/ogg, audio/flac). The answer: candidates[0].content.parts[].text, candidates[0].finishReason,
usageMetadata {promptTokenCount, candidatesTokenCount, promptTokensDetails: [{modality, tokenCount}]}; streamed,
each SSE event is such an answer holding the next piece of text.
An earlier spoken answer (by gateway audio id) goes in as its transcript: Gemini keeps no audio of ours."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from ..core.chat import ChatDelta, ChatReply, ChatRequest, ChatUsage, InputAudioPart
from ..core.errors import UpstreamError
from .openai_compatible import iter_sse_data

MIME = {"wav": "audio/wav", "mp3": "audio/mp3", "aiff": "audio/aiff", "aac": "audio/aac", "ogg": "audio/ogg",
        "flac": "audio/flac"}
FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter"}


def _usage(meta: Any) -> ChatUsage | None:
    if not isinstance(meta, dict):
        return None
    audio = 0
    for d in meta.get("promptTokensDetails") or []:
        if isinstance(d, dict) and d.get("modality") == "AUDIO" and isinstance(d.get("tokenCount"), int):
            audio += d["tokenCount"]
    p, c = meta.get("promptTokenCount"), meta.get("candidatesTokenCount")
    return ChatUsage(prompt_tokens=p if isinstance(p, int) else 0, completion_tokens=c if isinstance(c, int) else 0,
                     prompt_audio_tokens=audio)


class GeminiChat:
    def __init__(self, adapter: Any):
        self.adapter = adapter

    @property
    def slug(self) -> str:
        return self.adapter.slug

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.adapter.api_key:
            h["x-goog-api-key"] = self.adapter.api_key
        elif self.adapter.access_token:
            h["Authorization"] = f"Bearer {self.adapter.access_token}"
        return h

    def body(self, req: ChatRequest, endpoint: Any,
             audio_bytes: Callable[[InputAudioPart, list[str] | None], tuple[bytes, str]],
             recall: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        system: list[str] = []
        contents: list[dict[str, Any]] = []
        accepted = endpoint.input_formats or list(MIME)
        for m in req.messages:
            if m.role in ("system", "developer"):
                system.append(m.text())
                continue
            parts: list[dict[str, Any]] = []
            if m.audio_id is not None and not m.text():
                parts.append({"text": recall(m.audio_id).get("transcript", "")})
            elif isinstance(m.content, list):
                for p in m.content:
                    if isinstance(p, dict) and isinstance(p.get("input_audio"), InputAudioPart):
                        data, fmt = audio_bytes(p["input_audio"], [f for f in accepted if f in MIME])
                        parts.append({"inline_data": {"mime_type": MIME.get(fmt, "audio/wav"),
                                                      "data": base64.b64encode(data).decode("ascii")}})
                    elif isinstance(p, dict) and p.get("type") == "text":
                        parts.append({"text": p.get("text", "")})
            else:
                parts.append({"text": m.text()})
            if parts:
                contents.append({"role": "model" if m.role == "assistant" else "user", "parts": parts})
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n".join(system)}]}
        cfg: dict[str, Any] = {}
        p = req.params
        for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
            if p.get(ours) is not None:
                cfg[theirs] = p[ours]
        if req.max_tokens:
            cfg["maxOutputTokens"] = req.max_tokens
        if p.get("stop"):
            cfg["stopSequences"] = [p["stop"]] if isinstance(p["stop"], str) else p["stop"]
        if cfg:
            body["generationConfig"] = cfg
        return body

    def build(self, req: ChatRequest, endpoint: Any,
              audio_bytes: Callable[[InputAudioPart, list[str] | None], tuple[bytes, str]],
              recall: Callable[[str], dict[str, Any]], *, stream: bool, options: dict[str, Any]) -> dict[str, Any]:
        """The request body; provider.options.<slug> are merged into it (e.g. safetySettings)."""
        return {**self.body(req, endpoint, audio_bytes, recall), **options}

    def _malformed(self, why: str) -> UpstreamError:
        return UpstreamError(f"{self.slug}: malformed upstream reply ({why})", retryable=True,
                             metadata={"provider_name": self.slug, "reason": "malformed_reply"})

    def _parse(self, data: Any) -> tuple[str, str | None, ChatUsage | None]:
        if not isinstance(data, dict):
            raise self._malformed("not a JSON object")
        cands = data.get("candidates")
        text, finish = "", None
        if isinstance(cands, list) and cands and isinstance(cands[0], dict):
            content = cands[0].get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    text += part["text"]
            fr = cands[0].get("finishReason")
            if isinstance(fr, str):
                finish = FINISH.get(fr, "stop")
        return text, finish, _usage(data.get("usageMetadata"))

    def _url(self, endpoint: Any, method: str) -> str:
        return f"{self.adapter.gemini_base()}/v1beta/models/{endpoint.upstream_model}:{method}"

    async def complete(self, req: ChatRequest, endpoint: Any, body: dict[str, Any]) -> ChatReply:
        resp = await self.adapter.post_checked(self._url(endpoint, "generateContent"), content=orjson.dumps(body),
                                               headers=self.headers())
        try:
            data = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise self._malformed("not JSON") from None
        text, finish, usage = self._parse(data)
        if not isinstance(data.get("candidates"), list) or not data["candidates"]:
            raise self._malformed("no candidates")
        return ChatReply(text=text, finish_reason=finish or "stop", usage=usage or ChatUsage())

    async def stream(self, req: ChatRequest, endpoint: Any, body: dict[str, Any]) -> AsyncIterator[ChatDelta]:
        resp = await self.adapter.open_checked(self._url(endpoint, "streamGenerateContent") + "?alt=sse",
                                               content=orjson.dumps(body),
                                               headers={**self.headers(), "Accept": "text/event-stream"})
        return self._deltas(resp)

    async def _deltas(self, resp: Any) -> AsyncIterator[ChatDelta]:
        usage: ChatUsage | None = None
        try:
            async for data in iter_sse_data(resp.aiter_lines()):
                try:
                    ev = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise self._malformed("an event is not JSON") from None
                text, finish, u = self._parse(ev)
                usage = u or usage
                if text or finish:
                    yield ChatDelta(text=text or None, finish_reason=finish)
        except httpx.HTTPError as e:
            raise self.adapter.transport_error(e) from None
        finally:
            await resp.aclose()
        yield ChatDelta(usage=usage or ChatUsage())
