"""Big payloads: a 25 MB OpenRouter JSON request (base64 WAV) through audiorouter to the fake upstream.

Measured: the server's peak RSS growth (VmHWM after the request minus VmRSS before it, a fresh server per
repetition) against the payload size, the end-to-end latency, and in-process the time of each stage of
the request's own work (the body read as it streams in, base64 decoded on the way; the JSON skeleton parsed;
audio measurement/decode).

Two server configurations: the default one (614 s is over AUDIOROUTER_CHUNK_SECONDS=180, so the audio is
decoded to a PCM spool, cut at silences and sent as 4 re-encoded chunks: `runs`) and the relay one
(AUDIOROUTER_CHUNK_SECONDS=0: the client's WAV goes upstream as it is, one multipart upload: `relay_runs`).

The bench servers run with AUDIOROUTER_PRELOAD=false (no local models), so the VAD that cuts long audio is
preloaded explicitly (AUDIOROUTER_PRELOAD_VAD=true, SERVER_ENV), as a production server does by default at
start-up: its ~40 MB (model + onnxruntime) are in the RSS before the request, not in the growth. The output
says so (`server_env`, `note`).

    python bench/big_payload.py [--reps 3]"""
from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import httpx

from clips import long_wav
from gateways import audiorouter_target, create_api_key
from procs import WORK, Server, free_port

PAYLOAD_BYTES = 25 * 1024 * 1024
# What differs from the other bench servers: load the VAD at start-up, as `audiorouter serve` does with its
# default settings (AUDIOROUTER_PRELOAD=true), which the bench turns off for the local models' sake.
SERVER_ENV = {"AUDIOROUTER_PRELOAD_VAD": "true"}
NOTE = ("server started with AUDIOROUTER_PRELOAD=false (no local models) and AUDIOROUTER_PRELOAD_VAD=true: the "
        "Silero VAD (~40 MB with onnxruntime) is loaded at start-up, as by default in production, so it is in "
        "the RSS before the request, not in the growth")


def body(model: str) -> bytes:
    # base64 grows 4/3: a WAV of 3/4 of the payload, minus room for the JSON around it
    wav_bytes = (PAYLOAD_BYTES - 200) * 3 // 4
    seconds = (wav_bytes - 44) / 32000
    wav = long_wav(seconds)
    b = json.dumps({"model": model, "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}).encode()
    return b


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


def _asgi_request(data: bytes, chunk: int = 65536):
    """A Starlette request whose body arrives in `chunk`-byte messages, as uvicorn hands it over."""
    from starlette.requests import Request
    it = iter(range(0, len(data), chunk))

    async def receive():
        i = next(it, None)
        if i is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": data[i:i + chunk], "more_body": i + chunk < len(data)}
    return Request({"type": "http", "method": "POST", "path": "/api/v1/audio/transcriptions", "query_string": b"",
                    "headers": [(b"content-type", b"application/json")]}, receive)


def stages(data: bytes) -> dict:
    """In-process: the same functions the route calls, timed one by one. read_body takes the body as it
    streams in and decodes input_audio.data on the way (so "base64 decode + validation" is the streamed
    read, JSON scanning included); parse_json then parses the small JSON skeleton left."""
    import asyncio

    from audiorouter.api.parsing import parse_json, read_body, transcription_from_json
    from audiorouter.audio.prepare import prepare
    request = _asgi_request(data)
    t0 = time.perf_counter()
    body = asyncio.run(read_body(request, 1 << 40, audio=True))
    t1 = time.perf_counter()
    req = transcription_from_json(parse_json(body), "transcribe")
    del body
    t2 = time.perf_counter()
    prepared, _ = asyncio.run(prepare(req.audio, "input_audio.data"))
    t3 = time.perf_counter()
    _ = prepared.samples  # what a local transcription would additionally need
    t4 = time.perf_counter()
    from audiorouter.audio.decode import decode
    decode(req.audio.data, "wav")  # what measuring the duration cost before the header fast path
    t5 = time.perf_counter()
    return {"previous_full_decode_ms": (t5 - t4) * 1000, "json_parse_ms": (t2 - t1) * 1000,
            "base64_decode_validate_ms": (t1 - t0) * 1000, "read_body_streamed_ms": (t1 - t0) * 1000,
            "measure_audio_ms": (t3 - t2) * 1000, "decode_samples_ms": (t4 - t3) * 1000,
            "audio_s": prepared.duration, "wav_bytes": len(req.audio.data)}


def _one(ports: dict, data: bytes, log, label: str, env_extra: dict | None = None) -> dict:
    t = audiorouter_target(ports, core=None, env_extra=env_extra)  # type: ignore[arg-type]
    t.server.start(120)
    try:
        create_api_key(t)  # auth on, as deployed: the request carries an ordinary API key
        auth = {"authorization": f"Bearer {t.api_key}"}
        pid = t.server.proc.pid
        # warm the route once with a small request so imports and pools are not counted
        small = json.dumps({"model": "bench/whisper-d0", "input_audio": {
            "data": base64.b64encode(long_wav(1.0)).decode(), "format": "wav"}}).encode()
        warm = httpx.post(t.url("json"), content=small, headers={"content-type": "application/json", **auth}, timeout=60)
        warm.raise_for_status()
        time.sleep(0.5)
        try:  # reset the kernel's peak-RSS counter so start-up peaks do not count
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        before = _status(pid)["VmRSS"]
        t0 = time.perf_counter()
        r = httpx.post(t.url("json"), content=data, timeout=300,
                       headers={"content-type": "application/json", **auth})
        wall = time.perf_counter() - t0
        after = _status(pid)
        run = {"status": r.status_code, "latency_s": wall, "rss_before": before, "hwm_after": after["VmHWM"],
               "growth_bytes": max(0, after["VmHWM"] - before), "chunks": int(r.headers.get("x-chunks") or 1),
               "usage_seconds": (r.json().get("usage") or {}).get("seconds") if r.status_code == 200 else None,
               "error": None if r.status_code == 200 else r.text[:300]}
        run["growth_x_payload"] = run["growth_bytes"] / len(data)
        log(f"  25 MB JSON ({label}): HTTP {r.status_code} in {wall:.2f} s, {run['chunks']} upstream request(s), "
            f"RSS growth {run['growth_bytes'] / 2**20:.1f} MiB ({run['growth_x_payload']:.2f}x payload)")
        return run
    finally:
        t.server.stop()


def run(*, reps: int, log=print) -> dict:
    ports = {0: free_port()}
    fake = Server("fake-upstream-big", [sys.executable, str(Path(__file__).with_name("fake_upstream.py")),
                                        f"--port={ports[0]}:0"], ports[0])
    fake.start(30)
    data = body("bench/whisper-d0")
    path = WORK / "bodies" / "big.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    res: dict = {"payload_bytes": len(data), "server_env": SERVER_ENV, "note": NOTE, "runs": [], "relay_runs": [],
                 "stages": []}
    log(f"  note: {NOTE}")
    try:
        for _rep in range(reps):
            res["runs"].append(_one(ports, data, log, "default: chunked", SERVER_ENV))
            res["relay_runs"].append(_one(ports, data, log, "relay: AUDIOROUTER_CHUNK_SECONDS=0",
                                          {**SERVER_ENV, "AUDIOROUTER_CHUNK_SECONDS": "0"}))
            res["stages"].append(stages(data))
    finally:
        fake.stop()
    return res


if __name__ == "__main__":
    import argparse
    import os
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    out = run(reps=ap.parse_args().reps)
    print(json.dumps(dict(out.items()), indent=1))
