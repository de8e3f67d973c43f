"""Big payloads: a 25 MB OpenRouter JSON request (base64 WAV) through audiorouter to the fake upstream.

Measured: the server's peak RSS growth (VmHWM after the request minus VmRSS before it, a fresh server per
repetition) against the payload size, the end-to-end latency, and in-process the time of each stage of
the request's own work (JSON parse, base64 decode + validation, audio measurement/decode)."""
from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import httpx

from clips import long_wav
from gateways import API_KEY, audiorouter_target
from procs import WORK, Server, free_port

PAYLOAD_BYTES = 25 * 1024 * 1024


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


def stages(data: bytes) -> dict:
    """In-process: the same functions the route calls, timed one by one."""
    import asyncio

    from audiorouter.api.audio_input import prepare
    from audiorouter.api.parsing import parse_json, transcription_from_json
    t0 = time.perf_counter()
    parsed = parse_json(bytearray(data))
    t1 = time.perf_counter()
    req = transcription_from_json(parsed, "transcribe")
    del parsed
    t2 = time.perf_counter()
    prepared, _ = asyncio.run(prepare(req.audio, "input_audio.data"))
    t3 = time.perf_counter()
    _ = prepared.samples  # what a local transcription would additionally need
    t4 = time.perf_counter()
    from audiorouter.audio.decode import decode
    decode(req.audio.data, "wav")  # what measuring the duration cost before the header fast path
    t5 = time.perf_counter()
    return {"previous_full_decode_ms": (t5 - t4) * 1000,"json_parse_ms": (t1 - t0) * 1000, "base64_decode_validate_ms": (t2 - t1) * 1000,
            "measure_audio_ms": (t3 - t2) * 1000, "decode_samples_ms": (t4 - t3) * 1000,
            "audio_s": prepared.duration, "wav_bytes": len(req.audio.data)}


def run(*, reps: int, log=print) -> dict:
    ports = {0: free_port()}
    fake = Server("fake-upstream-big", [sys.executable, str(Path(__file__).with_name("fake_upstream.py")),
                                        f"--port={ports[0]}:0"], ports[0])
    fake.start(30)
    data = body("bench/whisper-d0")
    path = WORK / "bodies" / "big.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    res: dict = {"payload_bytes": len(data), "runs": [], "stages": []}
    try:
        for rep in range(reps):
            t = audiorouter_target(ports, core=None)  # type: ignore[arg-type]
            t.server.start(120)
            try:
                pid = t.server.proc.pid
                # warm the route once with a small request so imports and pools are not counted
                small = json.dumps({"model": "bench/whisper-d0", "input_audio": {
                    "data": base64.b64encode(long_wav(1.0)).decode(), "format": "wav"}}).encode()
                httpx.post(t.url("json"), content=small, headers={"content-type": "application/json"}, timeout=60)
                time.sleep(0.5)
                try:  # reset the kernel's peak-RSS counter so start-up peaks do not count
                    with open(f"/proc/{pid}/clear_refs", "w") as f:
                        f.write("5")
                except OSError:
                    pass
                before = _status(pid)["VmRSS"]
                t0 = time.perf_counter()
                r = httpx.post(t.url("json"), content=data, timeout=300,
                               headers={"content-type": "application/json", "authorization": f"Bearer {API_KEY}"})
                wall = time.perf_counter() - t0
                after = _status(pid)
                run = {"status": r.status_code, "latency_s": wall, "rss_before": before, "hwm_after": after["VmHWM"],
                       "growth_bytes": max(0, after["VmHWM"] - before),
                       "usage_seconds": (r.json().get("usage") or {}).get("seconds") if r.status_code == 200 else None,
                       "error": None if r.status_code == 200 else r.text[:300]}
                run["growth_x_payload"] = run["growth_bytes"] / len(data)
                res["runs"].append(run)
                log(f"  25 MB JSON: HTTP {r.status_code} in {wall:.2f} s, RSS growth {run['growth_bytes'] / 2**20:.1f} MiB "
                    f"({run['growth_x_payload']:.2f}x payload)")
            finally:
                t.server.stop()
            res["stages"].append(stages(data))
    finally:
        fake.stop()
    return res
