"""Chat on Mistral's API (Voxtral: audio in, text out), through the `mistral` adapter (its key, base URL,
pooled client and error mapping). Mistral's POST {base}/chat/completions is OpenAI's shape with these
differences (mistralai SDK 2.10.2, docs.mistral.ai "Chat with Audio", read 2026-12-07), so the client is
openai_chat.py's with them applied:

- an audio chunk is {"type": "input_audio", "input_audio": "<base64 of the file>"}: a string, not OpenAI's
  {data, format}; Voxtral decodes the common containers itself (others: the catalog's input_formats, re-encoded
  to wav by the gateway);
- roles system / user / assistant / tool only (`developer` is sent as `system`); no `name` on user and system
  messages; an assistant message has content, tool_calls and prefix, never `audio` or `refusal` (an earlier
  spoken answer, by gateway id, goes in as its transcript: Mistral keeps no audio of ours);
- the request takes Mistral's own fields only (any other is a 422 there): `seed` is sent as `random_seed`,
  `max_completion_tokens` as `max_tokens`; OpenAI-only fields (`user`, `stream_options`, `logprobs`, ...) are
  not sent; provider.options.mistral are merged as given;
- a streamed answer carries its usage on its last chunk by itself (there is no stream_options);
- usage {prompt_tokens, completion_tokens, total_tokens, prompt_audio_seconds}: prompt tokens include the
  audio; the audio's share is counted at Voxtral's 12.5 audio tokens a second (its encoder's frame rate after
  the adapter, Voxtral report 2025) for prompt_tokens_details.audio_tokens;
- content in an answer may be a list of chunks (reasoning models): its text chunks are the text."""
from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

from ..core.chat import ChatRequest, ChatUsage, InputAudioPart
from .openai_chat import OpenAIChat, parse_usage

MISTRAL_FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "metadata",
    "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction",
    "parallel_tool_calls", "reasoning_effort", "prompt_mode", "guardrails", "prompt_cache_key", "safe_prompt"})
AUDIO_TOKENS_PER_S = 12.5


class MistralChat(OpenAIChat):
    def wire_messages(self, req: ChatRequest, endpoint: Any,
                      audio_bytes: Callable[[InputAudioPart, list[str] | None], tuple[bytes, str]],
                      recall: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in req.messages:
            role = "system" if m.role == "developer" else m.role
            if role not in ("system", "user", "assistant", "tool"):
                continue  # OpenAI's legacy `function` turns: Mistral has none
            msg: dict[str, Any] = {"role": role}
            if role == "assistant" and m.extra.get("tool_calls") is not None:
                msg["tool_calls"] = m.extra["tool_calls"]
            if role == "tool":
                if m.extra.get("tool_call_id") is not None:
                    msg["tool_call_id"] = m.extra["tool_call_id"]
                if m.name is not None:
                    msg["name"] = m.name
            if isinstance(m.content, list):
                parts: list[Any] = []
                for p in m.content:
                    if isinstance(p, dict) and isinstance(p.get("input_audio"), InputAudioPart):
                        data, _fmt = audio_bytes(p["input_audio"], endpoint.input_formats)
                        parts.append({"type": "input_audio", "input_audio": base64.b64encode(data).decode("ascii")})
                    elif isinstance(p, dict) and p.get("type") == "text":
                        parts.append({"type": "text", "text": p.get("text", "")})
                    else:
                        parts.append(p)
                msg["content"] = parts
            elif m.content is not None:
                msg["content"] = m.content
            if m.audio_id is not None and msg.get("content") in (None, ""):
                msg["content"] = recall(m.audio_id).get("transcript") or ""
            if "content" not in msg and not msg.get("tool_calls"):
                msg["content"] = ""
            out.append(msg)
        return out

    def body(self, req: ChatRequest, endpoint: Any, messages: list[dict[str, Any]], *, stream: bool,
             options: dict[str, Any]) -> dict[str, Any]:
        body = super().body(req, endpoint, messages, stream=stream, options=options)
        if "seed" in body:
            body.setdefault("random_seed", body.pop("seed"))
        body.pop("max_completion_tokens", None)
        if req.max_tokens:
            body["max_tokens"] = req.max_tokens
        return {k: v for k, v in body.items() if k in MISTRAL_FIELDS or k in options}

    def text_of(self, content: Any) -> str | None:
        if isinstance(content, list):
            return "".join(c["text"] for c in content
                           if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str))
        return super().text_of(content)

    def delta_text(self, content: Any) -> str | None:
        return self.text_of(content) if isinstance(content, list) else super().delta_text(content)

    def usage_of(self, u: Any) -> ChatUsage | None:
        usage = parse_usage(u)
        if usage is None:
            return None
        seconds = u.get("prompt_audio_seconds")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
            usage.prompt_audio_tokens = min(usage.prompt_tokens, math.ceil(seconds * AUDIO_TOKENS_PER_S))
        return usage
