"""A fake Mistral chat completions API with audio in (Voxtral) on 127.0.0.1, beside the fake audio API.

Request shapes follow Mistral's Python SDK mistralai 2.10.2 (client-python, Speakeasy-generated:
models/chatcompletionrequest.py, usermessage.py, assistantmessage.py, audiochunk.py, usageinfo.py,
completionchunk.py) and "Chat with Audio" (docs.mistral.ai, studio/audio/speech_to_text/offline_transcription,
read 2026-12-07):

POST /v1/chat/completions, JSON, `Authorization: Bearer <key>`:
- top-level fields: model, messages, temperature, top_p, max_tokens, stream, stop, random_seed, metadata,
  response_format, tools, tool_choice, presence_penalty, frequency_penalty, n, prediction, parallel_tool_calls,
  reasoning_effort, prompt_mode, guardrails, prompt_cache_key, safe_prompt. Anything else (OpenAI's `seed`,
  `user`, `stream_options`, `max_completion_tokens`, `modalities`, `audio`, ...) is refused with a 422
  `extra_forbidden`, like the API's validation;
- messages: system {role, content}, user {role, content}, assistant {role, content?, tool_calls?, prefix?},
  tool {role, content, tool_call_id?, name?}; no `developer` role, no `name` on user/system messages, no
  `audio` or `refusal` on assistant messages;
- content: a string or chunks; an audio chunk is {"type": "input_audio", "input_audio": "<base64>"} - the
  base64 of the audio file itself as a string (not OpenAI's {data, format} object), which must decode as audio;
  a text chunk {"type": "text", "text"};
- audio chunks only on the Voxtral chat models (voxtral-small-*, voxtral-mini-2507 / voxtral-mini-latest);
  text-only models (mistral-small-latest) refuse them.
The answer: chat.completion {id, object, created, model, choices: [{index, message: {role, content,
tool_calls: null, prefix: false}, finish_reason}], usage: {prompt_tokens, completion_tokens, total_tokens,
prompt_audio_seconds}} with "I heard N.N seconds of audio." (the measured length) or "You said: <last text>";
prompt_audio_seconds is an integer (null without audio). Streamed: `data: {chat.completion.chunk}` events (the
role, the words, the last with finish_reason and usage - Mistral has no stream_options), then `data: [DONE]`.
Errors: {"object": "error", "message", "type", "param", "code"}; 422: {"detail": [...]} (mistral_fake)."""
from __future__ import annotations

import base64
import binascii
import json
import math
import time
from typing import Any

from .mistral_fake import MistralFake
from .runner import Call, Reply, probe

CHAT_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "metadata",
               "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction",
               "parallel_tool_calls", "reasoning_effort", "prompt_mode", "guardrails", "prompt_cache_key",
               "safe_prompt"}
MESSAGE_FIELDS = {"system": {"role", "content"}, "user": {"role", "content"},
                  "assistant": {"role", "content", "tool_calls", "prefix"},
                  "tool": {"role", "content", "tool_call_id", "name"}}
AUDIO_CHAT_MODELS = {"voxtral-small-latest", "voxtral-small-2507", "voxtral-mini-latest", "voxtral-mini-2507"}
TEXT_CHAT_MODELS = {"mistral-small-latest", "mistral-large-latest"}
TOKENS_PER_AUDIO_SECOND = 12.5  # what this fake counts into prompt_tokens for audio (Voxtral's frame rate)


class MistralChatFake(MistralFake):
    def handle(self, call: Call) -> Reply:
        if call.path != "/v1/chat/completions":
            return super().handle(call)
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(401, "Unauthorized")
        if call.method != "POST":
            return self.reject(405, "Method Not Allowed")
        if not call.headers.get("content-type", "").startswith("application/json") or not isinstance(call.json, dict):
            return self.reject(400, "expected a JSON object")
        return self.chat(call, call.json)

    def chat(self, call: Call, body: dict[str, Any]) -> Reply:
        for k in body:
            if k not in CHAT_FIELDS:
                return self.reject(422, "Extra inputs are not permitted", loc=["body", k])
        model = body.get("model")
        if model not in AUDIO_CHAT_MODELS | TEXT_CHAT_MODELS:
            return self.reject(400, f"Invalid model: {model}")
        for k, kinds in (("temperature", (int, float)), ("top_p", (int, float)), ("max_tokens", int),
                         ("random_seed", int), ("stream", bool)):
            v = body.get(k)
            if v is not None and (not isinstance(v, kinds) or (isinstance(v, bool) and kinds is not bool)):
                return self.reject(422, f"{k}: invalid type", loc=["body", k])
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return self.reject(422, "messages: field required", loc=["body", "messages"])
        heard = 0.0
        last_text = ""
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if role not in MESSAGE_FIELDS:
                return self.reject(422, f"messages.{i}: unknown role {role!r}", loc=["body", "messages", i, "role"])
            extra = set(m) - MESSAGE_FIELDS[role]
            if extra:
                return self.reject(422, "Extra inputs are not permitted", loc=["body", "messages", i, sorted(extra)[0]])
            content = m.get("content")
            if content is None:
                if role != "assistant" or not m.get("tool_calls"):
                    return self.reject(422, f"messages.{i}.content: field required", loc=["body", "messages", i])
                continue
            if isinstance(content, str):
                last_text = content if role == "user" else last_text
                continue
            if not isinstance(content, list):
                return self.reject(422, f"messages.{i}.content: expected a string or a list of chunks")
            for j, p in enumerate(content):
                where = ["body", "messages", i, "content", j]
                if not isinstance(p, dict) or p.get("type") not in ("text", "input_audio", "image_url",
                                                                    "document_url", "reference"):
                    return self.reject(422, f"messages.{i}.content.{j}: unknown chunk type", loc=where)
                if p["type"] == "text":
                    if set(p) != {"type", "text"} or not isinstance(p["text"], str):
                        return self.reject(422, f"messages.{i}.content.{j}: a text chunk is {{type, text}}", loc=where)
                    last_text = p["text"] if role == "user" else last_text
                    continue
                if p["type"] != "input_audio":
                    continue
                if set(p) != {"type", "input_audio"} or not isinstance(p["input_audio"], str):
                    return self.reject(422, f"messages.{i}.content.{j}.input_audio: Input should be a valid string",
                                       loc=[*where, "input_audio"])
                if model not in AUDIO_CHAT_MODELS:
                    return self.reject(400, f"Model {model} does not support audio input")
                try:
                    pr = probe(base64.b64decode(p["input_audio"], validate=True))
                except (binascii.Error, ValueError):
                    return self.reject(400, f"messages.{i}.content.{j}: the audio could not be decoded")
                heard += pr.duration
        answer = f"I heard {heard:.1f} seconds of audio." if heard else f"You said: {last_text.strip()[:200]}"
        text_in = sum(len(m["content"]) for m in msgs if isinstance(m.get("content"), str)) // 4 + 4 * len(msgs)
        prompt = text_in + math.ceil(heard * TOKENS_PER_AUDIO_SECOND)
        usage = {"prompt_tokens": prompt, "completion_tokens": max(1, len(answer) // 4),
                 "total_tokens": prompt + max(1, len(answer) // 4),
                 "prompt_audio_seconds": round(heard) if heard else None}
        call.info.update(heard=heard, answer=answer)
        base = {"id": "cmpl-fake", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            out = {**base, "object": "chat.completion", "usage": usage, "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": answer, "tool_calls": None, "prefix": False}}]}
            call.reply_json = out
            return Reply.json(out)

        def ev(delta: dict[str, Any], finish: str | None = None, **more: Any) -> bytes:
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        words = answer.split(" ")
        events = [ev({"role": "assistant", "content": ""})]
        events += [ev({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        events.append(ev({"content": ""}, "stop", usage=usage))
        events.append(b"data: [DONE]\n\n")
        return Reply(200, b"", {"Content-Type": "text/event-stream"}, chunks=events)
