"""A fake Gemini API generateContent for chat with audio in (https://ai.google.dev/api/generate-content) on
127.0.0.1.

POST /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse, `x-goog-api-key: <key>`, JSON:
{contents: [{role: user | model, parts: [{text} | {inline_data: {mime_type, data}}]}], systemInstruction?: {parts},
generationConfig?: {temperature, topP, topK, maxOutputTokens, stopSequences, seed, candidateCount},
safetySettings?}. Any other field is refused as Gemini does ("Invalid JSON payload received. Unknown name").
inline_data must be base64 of audio whose container matches mime_type (audio/wav, audio/mp3, audio/aiff,
audio/aac, audio/ogg, audio/flac). The answer: "I heard N.N seconds of audio." (measured) or "You said: <last
text>", with usageMetadata counting audio at 32 tokens a second (Gemini's rate) under promptTokensDetails;
streamed, one SSE event per word, the last with finishReason STOP and usageMetadata.
Errors: {"error": {"code", "message", "status"}}."""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from typing import Any

from .runner import Call, FakeServer, Reply, probe

MODELS = {"gemini-2.5-flash", "gemini-2.5-pro"}
FIELDS = {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig"}
GEN_FIELDS = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "seed", "candidateCount"}
MIME = {"audio/wav": "wav", "audio/mp3": "mp3", "audio/aiff": "aiff", "audio/aac": "adts", "audio/ogg": "ogg",
        "audio/flac": "flac"}
PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")


class GeminiChatFake(FakeServer):
    def __init__(self, api_key: str = "gemini-test-key"):
        super().__init__(api_key)

    def error(self, status: int, message: str, **kw: Any) -> Reply:
        name = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED"}.get(status, "INTERNAL")
        return Reply.json({"error": {"code": status, "message": message, "status": name}}, status)

    def handle(self, call: Call) -> Reply:
        if call.headers.get("x-goog-api-key") != self.api_key:
            return self.error(400, "API key not valid. Please pass a valid API key.")
        m = PATH.match(call.path)
        if call.method != "POST" or m is None:
            return self.reject(404, f"no such method {call.method} {call.path}")
        model, method = m.groups()
        if model not in MODELS:
            return self.reject(404, f"models/{model} is not found for API version v1beta")
        stream = method == "streamGenerateContent"
        if stream and call.q1("alt") != "sse":
            return self.reject(400, "streamGenerateContent without alt=sse answers a JSON array; send alt=sse")
        body = call.json
        if not isinstance(body, dict):
            return self.reject(400, "Invalid JSON payload received.")
        unknown = set(body) - FIELDS
        if unknown:
            return self.reject(400, f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}"')
        cfg = body.get("generationConfig", {})
        if not isinstance(cfg, dict) or set(cfg) - GEN_FIELDS:
            return self.reject(400, f"Invalid generationConfig {cfg}")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self.reject(400, "contents is not specified")
        heard, last_text = 0.0, ""
        for i, c in enumerate(contents):
            if not isinstance(c, dict) or c.get("role") not in ("user", "model") or set(c) - {"role", "parts"}:
                return self.reject(400, f"contents[{i}]: role must be user or model")
            parts = c.get("parts")
            if not isinstance(parts, list) or not parts:
                return self.reject(400, f"contents[{i}].parts must not be empty")
            for j, p in enumerate(parts):
                if not isinstance(p, dict) or len(p) != 1:
                    return self.reject(400, f"contents[{i}].parts[{j}]: exactly one of text, inline_data")
                if "text" in p:
                    if not isinstance(p["text"], str):
                        return self.reject(400, f"contents[{i}].parts[{j}].text must be a string")
                    if c["role"] == "user":
                        last_text = p["text"]
                    continue
                d = p.get("inline_data")
                if not isinstance(d, dict) or set(d) != {"mime_type", "data"} or d["mime_type"] not in MIME:
                    return self.reject(400, f"contents[{i}].parts[{j}]: unsupported part {str(p)[:80]}")
                try:
                    pr = probe(base64.b64decode(d["data"], validate=True))
                except (binascii.Error, ValueError):
                    return self.reject(400, f"contents[{i}].parts[{j}].inline_data.data is not base64 audio")
                if pr.container != MIME[d["mime_type"]]:
                    return self.reject(400, f"contents[{i}].parts[{j}]: {pr.container} audio sent as {d['mime_type']}")
                heard += pr.duration
        si = body.get("systemInstruction")
        if si is not None and (not isinstance(si, dict) or not isinstance(si.get("parts"), list)):
            return self.reject(400, "systemInstruction must be {parts: [...]}")
        answer = f"I heard {heard:.1f} seconds of audio." if heard else f"You said: {last_text.strip()[:200]}"
        audio_tokens = math.ceil(heard * 32)
        text_tokens = sum(len(p.get("text", "")) for c in contents for p in c["parts"]) // 4 + 2
        usage = {"promptTokenCount": text_tokens + audio_tokens, "candidatesTokenCount": max(1, len(answer) // 4),
                 "totalTokenCount": text_tokens + audio_tokens + max(1, len(answer) // 4),
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}]
                 + ([{"modality": "AUDIO", "tokenCount": audio_tokens}] if audio_tokens else [])}
        call.info.update(heard=heard, answer=answer)
        if not stream:
            return Reply.json({"candidates": [{"content": {"role": "model", "parts": [{"text": answer}]},
                                               "finishReason": "STOP", "index": 0}],
                               "usageMetadata": usage, "modelVersion": model})
        words = answer.split(" ")
        events = []
        for k, w in enumerate(words):
            ev: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": [{"text": (" " if k else "") + w}]},
                                                  "index": 0}], "modelVersion": model}
            if k == len(words) - 1:
                ev["candidates"][0]["finishReason"] = "STOP"
                ev["usageMetadata"] = usage
            events.append(b"data: " + json.dumps(ev).encode() + b"\r\n\r\n")

        def chunks():
            for e in events:
                time.sleep(0)
                yield e
        return Reply(200, b"", {"Content-Type": "text/event-stream"}, chunks=chunks())
