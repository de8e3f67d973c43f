"""The chat path (POST /v1/chat/completions):

- offline voice-chat cascade (local Whisper -> local LLM -> hibari, `local/voice-chat`, streamed pcm16): time to
  the first audio byte and x real-time (seconds of answer audio per second of wall clock) for a ~5 s spoken
  question asking for a two-sentence answer; the question is synthesized once by the gateway's own hibari.
- gateway overhead against the fake OpenAI chat upstream (tests/fakes/openai_chat_fake.py): a relayed audio-in
  request (2.7 s wav, text answer) and a streamed audio-out request (pcm16), each timed directly against the fake
  and through audiorouter, one request at a time; overhead = p50(through) - p50(direct). LiteLLM and Portkey are
  not measured here (this harness does not configure them for audio chat).

    python bench/chat.py [--reps 5]     # prints JSON; `make bench` stores it as results["chat"]"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time

import httpx

from clips import DEV
from procs import ROOT, WORK, Server, free_port

sys.path.insert(0, str(ROOT / "tests"))

QUESTION = "What is the capital of France, and why do so many people visit it? Please answer in two sentences."


def _gateway(extra_env: dict | None = None) -> Server:
    port = free_port()
    env = {"AUDIOROUTER_PRELOAD": "true", "AUDIOROUTER_CACHE_TTL_S": "0",
           "AUDIOROUTER_DATA_DIR": str(WORK / "audiorouter-chat-data"), "AUDIOROUTER_LOG_LEVEL": "warning",
           **(extra_env or {})}
    return Server("audiorouter-chat", [sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(port)], port,
                  env=env).start()


def stream_answer(url: str, body: dict) -> dict:
    """One streamed chat request: time to headers, to the first audio byte, to the end; audio seconds."""
    t0 = time.perf_counter()
    first = None
    pcm = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            ev = json.loads(line[6:])
            for c in ev.get("choices") or []:
                data = (c.get("delta") or {}).get("audio", {}).get("data")
                if data:
                    if first is None:
                        first = time.perf_counter() - t0
                    pcm += len(base64.b64decode(data))
    total = time.perf_counter() - t0
    secs = pcm / 2 / 24000
    return {"ttfa_s": first, "total_s": total, "audio_s": secs, "x_rt": secs / total if total else None}


def offline(reps: int, log=print) -> dict:
    gw = _gateway()
    try:
        url = f"http://127.0.0.1:{gw.port}"
        wav = httpx.post(url + "/v1/audio/speech", timeout=120, json={
            "model": "local/hibari", "input": QUESTION, "voice": "heart", "response_format": "wav"}).content
        q_s = (len(wav) - 44) / 2 / 24000
        body = {"model": "local/voice-chat", "stream": True, "modalities": ["text", "audio"], "max_tokens": 80,
                "audio": {"voice": "heart", "format": "pcm16"},
                "messages": [{"role": "user", "content": [
                    {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}]}]}
        log(f"offline cascade: question {q_s:.1f} s; warm-up (loads the LLM)")
        stream_answer(url, body)
        runs = [stream_answer(url, body) for _ in range(reps)]
        ttfa = [r["ttfa_s"] for r in runs if r["ttfa_s"] is not None]
        return {"question_s": round(q_s, 2), "runs": runs, "ttfa_p50_s": statistics.median(ttfa) if ttfa else None,
                "x_rt_p50": statistics.median(r["x_rt"] for r in runs), "target_ttfa_s": 1.5,
                "rss_mb": gw.rss_kb() / 1024}
    finally:
        gw.stop()


def overhead(reps: int, log=print) -> dict:
    from fakes.harness import write_catalog
    from fakes.openai_chat_fake import OpenAIChatFake
    fake = OpenAIChatFake(api_key="sk-bench").start()
    cat = write_catalog(WORK / "chat-catalog.yaml", {"openai": {"name": "OpenAI", "adapter": "openai",
                                                                "base_url": fake.base_url, "api_key_env": "OPENAI_API_KEY"}})
    gw = _gateway({"AUDIOROUTER_CATALOG": str(cat), "OPENAI_API_KEY": "sk-bench", "AUDIOROUTER_PRELOAD": "false",
                   "AUDIOROUTER_LOCAL_SUBSTITUTE": "false"})
    wav = (DEV / "sr_english.wav").read_bytes()
    audio_in = {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}]}]}
    audio_out = {"stream": True, "modalities": ["text", "audio"], "audio": {"voice": "nova", "format": "pcm16"},
                 "messages": [{"role": "user", "content": "Tell me a short joke."}]}
    out = {}
    try:
        gw_url = f"http://127.0.0.1:{gw.port}/v1"
        for name, body in (("audio_in", audio_in), ("audio_out_stream", audio_out)):
            times = {}
            for target, url, model in (("direct", fake.base_url, "gpt-4o-audio-preview"),
                                       ("audiorouter", gw_url, "openai/gpt-4o-audio-preview")):
                headers = {"Authorization": "Bearer sk-bench"}
                with httpx.Client(timeout=60, headers=headers) as c:
                    def once(c=c, url=url, body=body, model=model):
                        t0 = time.perf_counter()
                        with c.stream("POST", url + "/chat/completions", json={**body, "model": model}) as r:
                            r.raise_for_status()
                            for _ in r.iter_bytes():
                                pass
                        return time.perf_counter() - t0
                    for _ in range(3):
                        once()
                    times[target] = [once() for _ in range(reps)]
            d, g = statistics.median(times["direct"]), statistics.median(times["audiorouter"])
            out[name] = {"direct_p50_ms": d * 1000, "audiorouter_p50_ms": g * 1000, "overhead_ms": (g - d) * 1000}
            log(f"chat {name}: direct {d * 1000:.1f} ms, through audiorouter {g * 1000:.1f} ms")
    finally:
        gw.stop()
        fake.stop()
    return out


def run(reps: int = 5, log=print) -> dict:
    return {"overhead": overhead(reps * 10, log), "offline": offline(reps, log)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    print(json.dumps(run(ap.parse_args().reps), indent=1))
