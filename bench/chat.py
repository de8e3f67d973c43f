"""The chat path (POST /v1/chat/completions):

- offline voice-chat cascade (local Whisper -> local LLM -> hibari, `local/voice-chat`, streamed pcm16): time to
  the first audio byte and x real-time (seconds of answer audio per second of wall clock) for a ~5 s spoken
  question whose answer takes two or three sentences; the question is synthesized once by the gateway's own
  hibari.
- gateway overhead against the fake OpenAI chat upstream (tests/fakes/openai_chat_fake.py): a relayed audio-in
  request (2.7 s wav, text answer) and a streamed audio-out request (pcm16), each timed directly against the fake
  and through audiorouter, LiteLLM and Portkey (where `make bench` installed them), one request at a time;
  overhead = p50(through) - p50(direct).
- where the cascade's time to first audio goes: its steps one by one and the whole cascade in-process on the
  product's own engines (`--phases`), with the machine's load average.

    python bench/chat.py [--reps 5] [--phases]   # prints JSON; `make bench` stores it as results["chat"]"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time

import httpx
import numpy as np

from clips import DEV
from procs import ROOT, WORK, Server, free_port

sys.path.insert(0, str(ROOT / "tests"))

# ~5 s as hibari says it; the local 135M model answers it in two or three sentences
QUESTION = "What is the capital of France, and why do so many people visit it?"


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
        log(f"offline cascade: question {q_s:.1f} s; one request first (not counted)")
        stream_answer(url, body)
        load = os.getloadavg()[0]
        runs = [stream_answer(url, body) for _ in range(reps)]
        ttfa = [r["ttfa_s"] for r in runs if r["ttfa_s"] is not None]
        log(f"offline cascade: first audio byte {', '.join(f'{x:.2f}' for x in ttfa)} s (load {load:.2f})")
        return {"question_s": round(q_s, 2), "runs": runs, "ttfa_p50_s": statistics.median(ttfa) if ttfa else None,
                "x_rt_p50": statistics.median(r["x_rt"] for r in runs), "target_ttfa_s": 1.5,
                "rss_mb": gw.rss_kb() / 1024, "loadavg": [round(load, 2), round(os.getloadavg()[0], 2)]}
    finally:
        gw.stop()


def _streamed_audio_bytes(sse: bytes) -> int:
    """Bytes of audio in a chat completion stream's delta.audio.data pieces."""
    n = 0
    for line in sse.split(b"\n"):
        if line.startswith(b"data: {"):
            for c in json.loads(line[6:]).get("choices") or []:
                data = ((c.get("delta") or {}).get("audio") or {}).get("data")
                if data:
                    n += len(base64.b64decode(data))
    return n


def _competitors(fake_url: str, api_key: str, log) -> list[tuple[str, Server, str, str, dict]]:
    """LiteLLM's proxy and Portkey's gateway, where `make bench` installed them (bench/gateways.py), configured
    for the fake upstream's chat API: (name, server, base url, model to send, headers)."""
    import shutil

    from gateways import LITELLM_MASTER_KEY
    out = []
    exe = WORK / "litellm" / "bin" / "litellm"
    if exe.exists():
        cfg = WORK / "litellm-chat-config.yaml"
        cfg.write_text("\n".join([
            "model_list:", "  - model_name: gpt-4o-audio-preview", "    litellm_params:",
            "      model: openai/gpt-4o-audio-preview", f"      api_base: {fake_url}", f"      api_key: {api_key}",
            "litellm_settings:", "  drop_params: true", "  telemetry: false", "general_settings:",
            f"  master_key: {LITELLM_MASTER_KEY}"]) + "\n")
        port = free_port()
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
               "DISABLE_SCHEMA_UPDATE": "true", "NO_DOCS": "True"}
        try:
            srv = Server("litellm-chat", [str(exe), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                                          "--num_workers", "1"], port, env=env).start()
            out.append(("litellm", srv, f"http://127.0.0.1:{port}/v1", "gpt-4o-audio-preview",
                        {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}))
        except (RuntimeError, TimeoutError) as e:
            log(f"chat: litellm did not start ({e})")
    js = WORK / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if js.exists() and shutil.which("node"):
        port = free_port()
        try:
            srv = Server("portkey-chat", ["node", str(js), f"--port={port}", "--headless"], port,
                         env={"NODE_ENV": "production"}, cwd=WORK / "portkey").start()
            out.append(("portkey", srv, f"http://127.0.0.1:{port}/v1", "gpt-4o-audio-preview",
                        {"Authorization": f"Bearer {api_key}", "x-portkey-provider": "openai",
                         "x-portkey-custom-host": fake_url}))
        except (RuntimeError, TimeoutError) as e:
            log(f"chat: portkey did not start ({e})")
    return out


def overhead(reps: int, log=print) -> dict:
    """p50 of one request at a time, whole answer read: direct to the fake upstream, through audiorouter, and
    through LiteLLM and Portkey where installed (a gateway that fails the request gets a note instead)."""
    from fakes.harness import write_catalog
    from fakes.openai_chat_fake import OpenAIChatFake
    fake = OpenAIChatFake(api_key="sk-bench").start()
    cat = write_catalog(WORK / "chat-catalog.yaml", {"openai": {"name": "OpenAI", "adapter": "openai",
                                                                "base_url": fake.base_url, "api_key_env": "OPENAI_API_KEY"}})
    gw = _gateway({"AUDIOROUTER_CATALOG": str(cat), "OPENAI_API_KEY": "sk-bench", "AUDIOROUTER_PRELOAD": "false",
                   "AUDIOROUTER_LOCAL_SUBSTITUTE": "false"})
    others = _competitors(fake.base_url, "sk-bench", log)
    wav = (DEV / "sr_english.wav").read_bytes()
    audio_in = {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}]}]}
    audio_out = {"stream": True, "modalities": ["text", "audio"], "audio": {"voice": "nova", "format": "pcm16"},
                 "messages": [{"role": "user", "content": "Tell me a short joke."}]}
    targets = [("direct", fake.base_url, "gpt-4o-audio-preview", {"Authorization": "Bearer sk-bench"}),
               ("audiorouter", f"http://127.0.0.1:{gw.port}/v1", "openai/gpt-4o-audio-preview",
                {"Authorization": "Bearer sk-bench"})]
    targets += [(name, url, model, headers) for name, _, url, model, headers in others]
    out = {}
    try:
        for name, body in (("audio_in", audio_in), ("audio_out_stream", audio_out)):
            row: dict = {}
            for target, url, model, headers in targets:
                with httpx.Client(timeout=60, headers=headers) as c:
                    def once(c=c, url=url, body=body, model=model):
                        t0 = time.perf_counter()
                        with c.stream("POST", url + "/chat/completions", json={**body, "model": model}) as r:
                            if r.status_code != 200:
                                r.read()
                                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                            data = b"".join(r.iter_bytes())
                        if body.get("stream") and not _streamed_audio_bytes(data):
                            raise RuntimeError("the stream carried no audio")
                        return time.perf_counter() - t0
                    try:
                        for _ in range(3):
                            once()
                        row[f"{target}_p50_ms"] = statistics.median(once() for _ in range(reps)) * 1000
                    except (RuntimeError, httpx.HTTPError) as e:
                        if target in ("direct", "audiorouter"):
                            raise
                        row[f"{target}_note"] = f"fails: {str(e)[:120]}"
                        log(f"chat {name}: {target} fails ({e})")
            row["overhead_ms"] = row["audiorouter_p50_ms"] - row["direct_p50_ms"]
            out[name] = row
            log(f"chat {name}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in row.items()))
    finally:
        gw.stop()
        for _, srv, *_ in others:
            srv.stop()
        fake.stop()
    return out


# ---- where the offline cascade's time to first audio goes (in-process) --------------------------------------
def _now() -> float:
    return time.perf_counter()


class _NoMemory:
    """Stands in for the spoken answers' store (store/chat_audio.py, a database): these answers are never
    named by a later turn."""

    async def put(self, *a, **k) -> bool:
        return True

    async def get(self, *a, **k):
        return None, False


async def _phases_async(reps: int, log) -> dict:
    """The cascade's steps one by one on the product's own engines (no HTTP), then the whole cascade
    (ChatJob.open_stream) with the moments each step began and ended, cold (nothing loaded) and warm."""
    import re
    import tempfile

    os.environ.setdefault("AUDIOROUTER_DATA_DIR", tempfile.mkdtemp(prefix="bench-chat-phases-"))
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from audiorouter.audio.decode import decode
    from audiorouter.audio.encode import StreamEncoder, encode_all
    from audiorouter.config import Settings
    from audiorouter.core.chat import ChatMessage, ChatRequest, InputAudioPart
    from audiorouter.core.types import Audio
    from audiorouter.jobs.chat import ChatJob, _Sentences
    from audiorouter.providers.chat import chat_client
    try:
        from audiorouter.providers.local_chat import VOICE_SYSTEM_PROMPT
    except ImportError:  # the code before it moved there (a before/after run from an older tree)
        from audiorouter.jobs.chat import VOICE_SYSTEM_PROMPT  # type: ignore[attr-defined,no-redef]
    from audiorouter.providers.registry import build_adapters
    from audiorouter.routing.catalog import Catalog
    from audiorouter.routing.router import Router

    settings = Settings(preload=False, cache_ttl_s=0)
    catalog = Catalog.load(settings.catalog)
    router = Router(catalog, build_adapters(catalog, settings), settings)
    local = router.adapters["local"]
    llm = chat_client(local)
    out: dict = {"load": {}, "steps": [], "cascade": []}

    # the question, spoken by the gateway's own voice (synthesis not timed)
    q24 = np.concatenate(list(local.hibari.stream(QUESTION, "heart")))
    wav = encode_all(q24, "wav", 24000)
    out["question_s"] = round(q24.size / 24000, 2)

    def cascade_request() -> ChatRequest:
        part = InputAudioPart(Audio(wav, declared_format="wav", detected_format="wav"),
                              "messages[0].content[0].input_audio")
        return ChatRequest(model="local/voice-chat", stream=True, modalities=["text", "audio"], voice="heart",
                           audio_format="pcm16", max_tokens=80,
                           messages=[ChatMessage("user", [{"type": "input_audio", "input_audio": part}])])

    async def whole_cascade() -> dict:
        """One streamed cascade answer with the moment each step started and ended (wrappers around the
        router's calls and the LLM's stream: nothing in the product changes)."""
        marks: dict[str, float] = {}
        orig_t, orig_s, orig_llm = router.transcribe, router.speak, llm.stream

        async def transcribe(*a, **k):
            marks["stt_start"] = _now()
            r = await orig_t(*a, **k)
            marks["stt_end"] = _now()
            return r

        async def speak(*a, **k):
            marks.setdefault("tts_start", _now())
            r = await orig_s(*a, **k)
            marks.setdefault("tts_first_chunk", _now())
            return r

        async def llm_stream(*a, **k):
            marks["llm_start"] = _now()
            it = await orig_llm(*a, **k)

            async def marked():
                async for d in it:
                    if d.text:
                        marks.setdefault("llm_first_token", _now())
                    yield d
                marks["llm_end"] = _now()
            return marked()

        router.transcribe, router.speak, llm.stream = transcribe, speak, llm_stream  # type: ignore[method-assign]
        try:
            t0 = _now()
            job = ChatJob(router, cascade_request(), settings, memory=_NoMemory())  # type: ignore[arg-type]
            await job.prepare()
            marks["prepared"] = _now()
            first_audio = None
            pcm = 0
            text = []
            async for d in await job.open_stream():
                if d.audio:
                    first_audio = first_audio or _now()
                    pcm += len(d.audio)
                if d.transcript:
                    text.append(d.transcript)
            end = _now()
        finally:
            router.transcribe, router.speak, llm.stream = orig_t, orig_s, orig_llm  # type: ignore[method-assign]

        def at(k):
            return round((marks[k] - t0) * 1000, 1) if k in marks else None
        audio_s = pcm / 2 / 24000
        return {"decode_plan_ms": at("prepared"), "stt_start_ms": at("stt_start"), "stt_end_ms": at("stt_end"),
                "llm_first_token_ms": at("llm_first_token"), "first_sentence_ms": at("tts_start"),
                "tts_first_chunk_ms": at("tts_first_chunk"),
                "first_audio_ms": round((first_audio - t0) * 1000, 1) if first_audio else None,
                "llm_end_ms": at("llm_end"), "total_ms": round((end - t0) * 1000, 1), "audio_s": round(audio_s, 2),
                "x_rt": round(audio_s / (end - t0), 2), "answer": "".join(text)}

    log("chat phases: cold cascade (nothing loaded)")
    out["cold"] = await whole_cascade()
    log(f"chat phases: cold first audio {out['cold']['first_audio_ms']} ms")

    for i in range(reps):
        st: dict = {}
        t = _now()
        samples = decode(wav, "wav").samples
        st["decode_ms"] = (_now() - t) * 1000
        t = _now()
        get_speech_timestamps(samples, VadOptions(max_speech_duration_s=30))
        st["vad_ms"] = (_now() - t) * 1000
        engine = local.whisper
        beam = engine.beam_size
        for b in sorted({beam, 1}, reverse=True):
            engine.beam_size = b
            t = _now()
            tr = engine.transcribe(samples)
            st[f"whisper_beam{b}_incl_vad_ms"] = (_now() - t) * 1000
        engine.beam_size = beam
        st["transcript"] = tr.text
        # the LLM: time to its first token, its first clause, the first sentence the cascade speaks, the end
        req = ChatRequest(model="local/smollm2-135m-instruct", stream=True, max_tokens=80,
                          messages=[ChatMessage("user", tr.text)])
        cut = _Sentences()
        clause = re.compile(r"[,;:.!?]\s")
        t = _now()
        txt = ""
        first_sentence = None
        async for d in await llm.stream(req, VOICE_SYSTEM_PROMPT):
            if d.text:
                st.setdefault("llm_first_token_ms", (_now() - t) * 1000)
                txt += d.text
                if "llm_first_clause_ms" not in st and clause.search(txt):
                    st["llm_first_clause_ms"] = (_now() - t) * 1000
                got = cut.feed(d.text)
                if got and first_sentence is None:
                    first_sentence = got[0]
                    st["llm_first_sentence_ms"] = (_now() - t) * 1000
            if d.usage is not None:
                st["llm_prompt_tokens"] = d.usage.prompt_tokens
                st["llm_completion_tokens"] = d.usage.completion_tokens
        st["llm_total_ms"] = (_now() - t) * 1000
        first_sentence = first_sentence or txt.strip()
        st["first_sentence"] = first_sentence
        # the speech step on that sentence: first chunk, and the encoder on it
        t = _now()
        chunks = local.hibari.stream(first_sentence, "heart")
        c = next(chunks)
        st["tts_first_chunk_ms"] = (_now() - t) * 1000
        for _ in chunks:
            pass
        t = _now()
        StreamEncoder("pcm", 24000).feed(c)
        st["encode_first_chunk_ms"] = (_now() - t) * 1000
        st = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in st.items()}
        out["steps"].append(st)
        log(f"chat phases: steps {i + 1}/{reps}: " + ", ".join(f"{k} {v}" for k, v in st.items()
                                                              if k.endswith("_ms")))
        out["cascade"].append(await whole_cascade())
        log(f"chat phases: warm cascade first audio {out['cascade'][-1]['first_audio_ms']} ms")
    await local.aclose()
    return out


def phases(reps: int = 3, log=print) -> dict:
    """In-process phase breakdown of the offline cascade's time to first audio (uptime load recorded)."""
    import asyncio
    load = os.getloadavg()
    res = asyncio.run(_phases_async(reps, log))
    res["loadavg_before"] = [round(x, 2) for x in load]
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


def run(reps: int = 5, log=print) -> dict:
    return {"overhead": overhead(reps * 10, log), "offline": offline(reps, log), "phases": phases(3, log)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--phases", action="store_true", help="only the in-process phase breakdown of the cascade")
    ap.add_argument("--offline", action="store_true", help="only the offline cascade over HTTP")
    a = ap.parse_args()
    print(json.dumps(phases(a.reps) if a.phases else offline(a.reps) if a.offline else run(a.reps), indent=1))
