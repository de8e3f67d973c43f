"""A fake OpenAI chat completions API with audio (https://platform.openai.com/docs/guides/audio) on 127.0.0.1.

Checked against the openai Python SDK 3.52 types (chat.completion_create_params, ChatCompletionAudio,
ChoiceDeltaAudio). POST /v1/chat/completions, JSON, `Authorization: Bearer <key>`:
- only OpenAI's own request fields (OpenRouter's `provider`, `models`, ... are refused like OpenAI does:
  "Unrecognized request argument supplied");
- messages: roles system/developer/user/assistant/tool; a user part is text or input_audio {data: base64 of a
  wav or mp3 file (the bytes must decode as that format), format: "wav" | "mp3"}; an assistant message may be
  {"audio": {"id"}} for an answer this fake gave and that has not expired;
- audio models (gpt-4o-audio-preview, gpt-4o-mini-audio-preview, gpt-audio) take input_audio and
  modalities ["text", "audio"] with audio {voice: a built-in voice, format: wav | mp3 | flac | opus | pcm16};
  streaming with audio output requires pcm16; text models (gpt-4o-mini) refuse both;
- the answer: "I heard N.N seconds of audio." (the input audio's measured length) or "You said: <last text>",
  spoken as a tone (0.06 s per character) in the requested format; usage with audio tokens at OpenAI's rates
  (1 per 100 ms in, 1 per 50 ms out) and text tokens ~ characters / 4;
- streamed: chat.completion.chunk events (role, then content or audio {id, transcript} / {data} pieces, a last
  audio {expires_at}, the finish chunk), a usage chunk with empty choices when stream_options.include_usage,
  then `data: [DONE]`.
Errors: {"error": {"message", "type", "param", "code"}}."""
from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time
from typing import Any

import numpy as np

from .openai_fake import VOICES, OpenAIFake
from .runner import Call, Reply, encode_audio, probe, split_chunks, tone

AUDIO_MODELS = {"gpt-4o-audio-preview", "gpt-4o-mini-audio-preview", "gpt-audio", "gpt-audio-mini"}
TEXT_MODELS = {"gpt-4o-mini", "gpt-4o"}
CHAT_FIELDS = {"model", "messages", "modalities", "audio", "stream", "stream_options", "temperature", "top_p",
               "max_tokens", "max_completion_tokens", "stop", "seed", "user", "metadata", "n", "frequency_penalty",
               "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice",
               "parallel_tool_calls", "response_format", "service_tier", "store", "prediction", "reasoning_effort"}
OUT_FORMATS = {"wav", "mp3", "flac", "opus", "pcm16"}
SECONDS_PER_CHAR = 0.06


class OpenAIChatFake(OpenAIFake):
    audio_models = AUDIO_MODELS
    text_models = TEXT_MODELS
    fields = CHAT_FIELDS

    def __init__(self, api_key: str = "sk-test-openai-chat"):
        super().__init__(api_key)
        self.issued: dict[str, int] = {}  # audio id -> expires_at
        self.ttl_s = 3600
        self.chunk_delay_s = 0.0  # before each streamed event
        self.last_word_at = 0.0

    def handle(self, call: Call) -> Reply:
        bad = self.auth(call)
        if bad is not None:
            return bad
        if call.method != "POST" or call.path != self.prefix + "/chat/completions":
            return super().handle(call)
        if not call.headers.get("content-type", "").startswith("application/json") or not isinstance(call.json, dict):
            return self.reject(400, "We could not parse the JSON body of your request.")
        return self.chat(call, call.json)

    # ---- checks -------------------------------------------------------------------------------------
    def chat(self, call: Call, body: dict[str, Any]) -> Reply:
        unknown = sorted(set(body) - self.fields)
        if unknown:
            return self.reject(400, f"Unrecognized request argument supplied: {unknown[0]}")
        model = body.get("model")
        if model not in self.audio_models | self.text_models:
            return self.reject(404, f"The model `{model}` does not exist or you do not have access to it.",
                               code="model_not_found")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return self.reject(400, "'messages' must be a non-empty array", param="messages")
        heard = 0.0
        last_text = ""
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
                return self.reject(400, f"Invalid value for 'messages[{i}].role'", param=f"messages[{i}].role")
            extra = set(m) - {"role", "content", "name", "audio", "tool_calls", "tool_call_id", "refusal"}
            if extra:
                return self.reject(400, f"Unrecognized argument messages[{i}].{sorted(extra)[0]}")
            if "audio" in m:
                a = m["audio"]
                if m["role"] != "assistant" or not isinstance(a, dict) or set(a) != {"id"}:
                    return self.reject(400, f"Invalid 'messages[{i}].audio'", param=f"messages[{i}].audio")
                exp = self.issued.get(a["id"])
                if exp is None or exp <= time.time():
                    return self.error(400, f"Audio with id {a['id']} not found.", param=f"messages[{i}].audio.id")
            content = m.get("content")
            if isinstance(content, str):
                last_text = content if m["role"] == "user" else last_text
                continue
            if content is None:
                if m["role"] == "user" or ("audio" not in m and m["role"] != "assistant"):
                    return self.reject(400, f"messages[{i}].content is required", param=f"messages[{i}].content")
                continue
            if not isinstance(content, list):
                return self.reject(400, f"Invalid type for 'messages[{i}].content'")
            for j, p in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                if not isinstance(p, dict) or p.get("type") not in ("text", "input_audio"):
                    return self.reject(400, f"Invalid content part {where}")
                if p["type"] == "text":
                    if set(p) != {"type", "text"} or not isinstance(p["text"], str):
                        return self.reject(400, f"Invalid {where}.text")
                    last_text = p["text"] if m["role"] == "user" else last_text
                    continue
                if m["role"] != "user":
                    return self.reject(400, f"{where}: input_audio is only allowed in user messages")
                if model not in self.audio_models:
                    return self.reject(400, f"This model does not support audio input ({where}).")
                ia = p.get("input_audio")
                if set(p) != {"type", "input_audio"} or not isinstance(ia, dict) or set(ia) != {"data", "format"}:
                    return self.reject(400, f"Invalid {where}.input_audio")
                if ia["format"] not in ("wav", "mp3"):
                    return self.reject(400, f"Invalid value: '{ia['format']}'. Supported values are: 'wav' and 'mp3'.",
                                       param=f"{where}.input_audio.format")
                try:
                    raw = base64.b64decode(ia["data"], validate=True)
                    pr = probe(raw)
                except (binascii.Error, ValueError):
                    return self.reject(400, f"{where}.input_audio.data is not valid base64 audio")
                if {"wav": "wav", "mp3": "mp3"}[ia["format"]] != pr.container:
                    return self.reject(400, f"{where}: the audio is {pr.container}, not {ia['format']}")
                heard += pr.duration
        mods = body.get("modalities", ["text"])
        if mods not in (["text"], ["text", "audio"], ["audio", "text"]):
            return self.reject(400, f"Invalid modalities {mods}", param="modalities")
        speak = "audio" in mods
        audio = body.get("audio")
        stream = body.get("stream", False)
        if speak:
            if model not in self.audio_models:
                return self.reject(400, "This model does not support audio output.", param="modalities")
            if not isinstance(audio, dict) or set(audio) != {"voice", "format"} or audio["voice"] not in VOICES \
                    or audio["format"] not in OUT_FORMATS:
                return self.reject(400, f"Invalid 'audio' {audio}", param="audio")
            if stream and audio["format"] != "pcm16":
                return self.reject(400, "Audio streaming only supports pcm16 format.", param="audio.format")
        elif audio is not None:
            return self.reject(400, "'audio' requires modalities ['text', 'audio']", param="audio")
        so = body.get("stream_options")
        if so is not None and (not stream or not isinstance(so, dict) or set(so) - {"include_usage"}):
            return self.reject(400, "stream_options is only allowed with stream: true", param="stream_options")
        answer = f"I heard {heard:.1f} seconds of audio." if heard else f"You said: {last_text.strip()[:200]}"
        prompt_text = sum(len(m["content"]) if isinstance(m.get("content"), str) else 0 for m in msgs) // 4 + 4 * len(msgs)
        audio_in = math.ceil(heard * 10)
        call.info.update(heard=heard, answer=answer)
        if not stream:
            return self.whole(model, answer, speak, audio, prompt_text, audio_in)
        return self.streamed(model, answer, speak, audio, prompt_text, audio_in,
                             bool(isinstance(so, dict) and so.get("include_usage")))

    # ---- answers ------------------------------------------------------------------------------------
    def _usage(self, prompt_text: int, audio_in: int, answer: str, audio_out: int) -> dict[str, Any]:
        text_out = max(1, len(answer) // 4)
        return {"prompt_tokens": prompt_text + audio_in, "completion_tokens": text_out + audio_out,
                "total_tokens": prompt_text + audio_in + text_out + audio_out,
                "prompt_tokens_details": {"audio_tokens": audio_in, "cached_tokens": 0},
                "completion_tokens_details": {"audio_tokens": audio_out, "reasoning_tokens": 0}}

    def _speech(self, answer: str) -> np.ndarray:
        return tone(len(answer) * SECONDS_PER_CHAR, 24000)

    def _issue(self) -> tuple[str, int]:
        aid = "audio_" + secrets.token_hex(8)
        exp = int(time.time()) + self.ttl_s
        self.issued[aid] = exp
        return aid, exp

    def whole(self, model: str, answer: str, speak: bool, audio: Any, prompt_text: int, audio_in: int) -> Reply:
        msg: dict[str, Any] = {"role": "assistant", "content": None if speak else answer, "refusal": None}
        audio_out = 0
        if speak:
            s = self._speech(answer)
            fmt = audio["format"]
            data = encode_audio(s, 24000, "pcm" if fmt == "pcm16" else fmt)
            aid, exp = self._issue()
            msg["audio"] = {"id": aid, "data": base64.b64encode(data).decode(), "expires_at": exp, "transcript": answer}
            audio_out = math.ceil(s.size / 24000 * 20)
        return Reply.json({"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                           "model": model, "choices": [{"index": 0, "message": msg, "finish_reason": "stop",
                                                        "logprobs": None}],
                           "usage": self._usage(prompt_text, audio_in, answer, audio_out)})

    def streamed(self, model: str, answer: str, speak: bool, audio: Any, prompt_text: int, audio_in: int,
                 include_usage: bool) -> Reply:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

        def ev(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"

        events = [ev({"role": "assistant", "content": None if speak else ""})]
        audio_out = 0
        words = answer.split(" ")
        if speak:
            pcm = encode_audio(self._speech(answer), 24000, "pcm")
            audio_out = math.ceil(len(pcm) / 2 / 24000 * 20)
            aid, exp = self._issue()
            events.append(ev({"audio": {"id": aid, "transcript": words[0]}}))
            for w in words[1:]:
                events.append(ev({"audio": {"transcript": " " + w}}))
            for piece in split_chunks(pcm, 5):
                events.append(ev({"audio": {"data": base64.b64encode(piece).decode()}}))
            events.append(ev({"audio": {"expires_at": exp}}))
        else:
            events.append(ev({"content": words[0]}))
            for w in words[1:]:
                events.append(ev({"content": " " + w}))
        events.append(ev({}, "stop"))
        if include_usage:
            events.append(b"data: " + json.dumps({**base, "choices": [], "usage": self._usage(
                prompt_text, audio_in, answer, audio_out)}).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        delay = self.chunk_delay_s
        fake = self

        def chunks():
            for e in events:
                if delay:
                    time.sleep(delay)
                yield e
                if b'"content": "' in e or b'"transcript": "' in e:
                    fake.last_word_at = time.time()  # when the last word of the answer left
        return Reply(200, b"", {"Content-Type": "text/event-stream"}, chunks=chunks())


class OpenRouterChatFake(OpenAIChatFake):
    """OpenRouter's POST /api/v1/chat/completions as an upstream: the same shapes, author/slug model names, and
    OpenRouter's own request fields (provider, models, route, transforms, session_id, usage, plugins, reasoning)
    accepted; each answer names the `provider` that served it."""
    prefix = "/api/v1"
    audio_models = {"openai/" + m for m in AUDIO_MODELS}
    text_models = {"openai/" + m for m in TEXT_MODELS}
    fields = CHAT_FIELDS | {"provider", "models", "route", "transforms", "session_id", "usage", "plugins", "reasoning"}

    def __init__(self, api_key: str = "sk-or-v1-test-chat"):
        super().__init__(api_key)
