"""Local engines through the HTTP API: Whisper (x real-time, pooled WER, one request at a time and N concurrent)
against plain faster-whisper in a loop, and hibari TTS (time to first byte, x real-time)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from clips import DEV, english_exact
from procs import ROOT, WORK, Server, free_port
from textnorm import pooled_wer

TTS_TEXT = ("The museum opens at nine in the morning. Tickets cost twelve dollars for adults and are free for "
            "children. Please keep your bag with you at all times.")


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process and its threads."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / tick


def local_server(extra_env: dict | None = None) -> Server:
    port = free_port()
    data = WORK / "audiorouter-local-data"
    env = {"AUDIOROUTER_PRELOAD": "true", "AUDIOROUTER_CACHE_TTL_S": "0", "AUDIOROUTER_DATA_DIR": str(data),
           "AUDIOROUTER_LOG_LEVEL": "warning", **(extra_env or {})}
    env.pop("AUDIOROUTER_CATALOG", None)
    return Server("audiorouter-local", [sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(port)], port,
                  env=env)


# ---- STT -------------------------------------------------------------------------------------------------
def baseline(limit: int, threads: int) -> dict:
    """Plain faster-whisper in a loop, in a child process (its own model and memory)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "stt_inproc.py"), "baseline", "--clips", str(limit),
                          "--threads", str(threads)], capture_output=True, text=True, timeout=3600)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not line:
        raise RuntimeError(f"baseline failed: {out.stderr[-1500:]}")
    return json.loads(line[-1])


def _transcribe(client: httpx.Client, url: str, row: dict) -> str:
    data = (DEV / row["file"]).read_bytes()
    body = {"model": "local/whisper-base", "input_audio": {"data": base64.b64encode(data).decode(),
                                                           "format": row.get("container") or "wav"}}
    r = client.post(url + "/api/v1/audio/transcriptions", json=body, timeout=600)
    r.raise_for_status()
    return r.json()["text"]


def stt_http(srv: Server, rows: list[dict], concurrency: int) -> dict:
    audio_s = sum(r["duration_s"] for r in rows)
    url = f"http://127.0.0.1:{srv.port}"
    clients = [httpx.Client() for _ in range(max(1, concurrency))]
    try:
        _transcribe(clients[0], url, rows[0])  # warm-up
        cpu0, t0 = proc_cpu_s(srv.proc.pid), time.perf_counter()
        if concurrency <= 1:
            hyps = [_transcribe(clients[0], url, r) for r in rows]
        else:
            with ThreadPoolExecutor(concurrency) as ex:
                hyps = list(ex.map(lambda ir: _transcribe(clients[ir[0] % concurrency], url, ir[1]), enumerate(rows)))
        wall = time.perf_counter() - t0
        cpu = proc_cpu_s(srv.proc.pid) - cpu0
    finally:
        for c in clients:
            c.close()
    return {"concurrency": concurrency, "clips": len(rows), "audio_s": round(audio_s, 2), "wall_s": round(wall, 2),
            "x_rt": audio_s / wall, "cpu_s": round(cpu, 2), "audio_s_per_cpu_s": audio_s / cpu if cpu else None,
            "wer": pooled_wer([(r["text"], h) for r, h in zip(rows, hyps)])}


# ---- TTS -------------------------------------------------------------------------------------------------
def speak_timed(client: httpx.Client, url: str, text: str, fmt: str) -> dict:
    """One local/hibari request: time to the first body byte and in total (ms), bytes received."""
    body = json.dumps({"model": "local/hibari", "input": text, "voice": "heart", "response_format": fmt}).encode()
    t0 = time.perf_counter()
    with client.stream("POST", url + "/api/v1/audio/speech", content=body,
                       headers={"content-type": "application/json"}) as r:
        r.raise_for_status()
        first = None
        n = 0
        for chunk in r.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - t0
            n += len(chunk)
    total = time.perf_counter() - t0
    return {"ttfb_ms": (first or total) * 1000, "total_ms": total * 1000, "bytes": n}


def tts_once(url: str, fmt: str) -> dict:
    with httpx.Client(timeout=120) as c:
        r = speak_timed(c, url, TTS_TEXT, fmt)
    total, n = r["total_ms"] / 1000, r["bytes"]
    out = {"format": fmt, "ttfb_ms": r["ttfb_ms"], "total_s": total, "bytes": n}
    if fmt == "pcm":
        out["audio_s"] = n / 2 / 24000
        out["x_rt"] = out["audio_s"] / total
    return out


def inproc(mode: str, limit: int, concurrency: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "stt_inproc.py"), mode, "--clips", str(limit),
                          "--concurrency", str(concurrency), "--threads", str(threads)],
                         capture_output=True, text=True, timeout=3600)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not line:
        raise RuntimeError(f"{mode} failed: {out.stderr[-1500:]}")
    return json.loads(line[-1])


def run(*, stt_clips: int, stt_reps: int, concurrency: int, tts_reps: int, threads: int, log=print,
        before_after_clips: int = 16) -> dict:
    rows = english_exact(stt_clips)
    res: dict = {"clips": len(rows), "audio_s": round(sum(r["duration_s"] for r in rows), 2), "baseline": [],
                 "http_1": [], f"http_{concurrency}": [], "tts": [], "concurrency": concurrency}
    srv = local_server()
    srv.start(300)
    try:
        url = f"http://127.0.0.1:{srv.port}"
        for fmt in ("pcm", "mp3"):
            tts_once(url, fmt)  # warm-up
        for _rep in range(tts_reps):
            for fmt in ("pcm", "mp3"):
                r = tts_once(url, fmt)
                res["tts"].append(r)
        log(f"  tts ttfb p50 {sorted(r['ttfb_ms'] for r in res['tts'] if r['format'] == 'pcm')[tts_reps // 2]:.1f} ms")
        for rep in range(stt_reps):
            # interleave the modes so a noisy neighbour hurts them alike
            srv.stop()
            b = baseline(stt_clips, threads)
            res["baseline"].append(b)
            log(f"  stt baseline     rep {rep}: {b['x_rt']:.2f}x RT  WER {b['wer'] * 100:.2f} %")
            srv = local_server()
            srv.start(300)
            for c in (1, concurrency):
                m = stt_http(srv, rows, c)
                res[f"http_{c}"].append(m)
                log(f"  stt audiorouter c={c} rep {rep}: {m['x_rt']:.2f}x RT  WER {m['wer'] * 100:.2f} %  "
                    f"({m['audio_s_per_cpu_s']:.2f} audio s per CPU s)")
    finally:
        srv.stop()
    # before/after of the engine itself, in-process, same clips, same run: the first committed engine
    # (parallel sequential decodes) against the batching one, both with `concurrency` requests in flight
    res["engine_before_after"] = []
    for mode in ("previous", "engine"):
        try:
            r = inproc(mode, before_after_clips, concurrency, threads)
        except (RuntimeError, subprocess.SubprocessError) as e:
            log(f"  in-process {mode}: {e}")
            continue
        res["engine_before_after"].append(r)
        log(f"  in-process {mode:8s} c={concurrency}: {r['x_rt']:.2f}x RT  WER {r['wer'] * 100:.2f} %")
    return res
