"""Batch jobs: throughput of a batch of dev clips with 1 and 2 `audiorouter worker` processes on the local engine
(x real-time, and the ratio), and how long a job waits in the queue when the workers are idle (target < 100 ms).

One host: the gateway (no job threads of its own) and the workers share the data dir (SQLite database, the huey
SQLite queue, the local audio store); with Redis reachable (AUDIOROUTER_TEST_REDIS_URL, default 127.0.0.1:6379)
the queue wait is also measured on the Redis queue (one worker, the database still SQLite). Run alone: `python bench/batch_jobs.py [--clips N]`; `make bench` runs it as section "batch"."""
from __future__ import annotations

import argparse
import base64
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from clips import DEV, english_exact
from procs import ROOT, WORK, Server, free_port

JOBS = "/api/v1/audio/transcriptions/jobs"


def _env(data: Path, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOROUTER_")}
    env.update({"AUDIOROUTER_DATA_DIR": str(data), "AUDIOROUTER_PRELOAD": "true", "AUDIOROUTER_CACHE_TTL_S": "0",
                "AUDIOROUTER_WORKERS": "1", "AUDIOROUTER_JOBS_IN_PROCESS": "0", "AUDIOROUTER_LOG_LEVEL": "warning",
                **(extra or {})})
    return env


def _worker(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "audiorouter.cli_jobs", "worker"], env=env, cwd=ROOT,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _submit(c: httpx.Client, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    r = c.post(JOBS, json={"model": "local/whisper-base", "input_audio": {"data": data, "format": path.suffix[1:]}})
    r.raise_for_status()
    return r.json()["id"]


def _wait(c: httpx.Client, ids: list[str], timeout: float = 1800) -> None:
    left = set(ids)
    deadline = time.time() + timeout
    while left and time.time() < deadline:
        for jid in list(left):
            st = c.get(f"{JOBS}/{jid}").json()["status"]
            if st in ("succeeded", "failed", "cancelled"):
                if st != "succeeded":
                    raise RuntimeError(f"job {jid} {st}")
                left.discard(jid)
        time.sleep(0.05)
    if left:
        raise RuntimeError(f"{len(left)} jobs did not finish")


def _queue_waits(db: Path, ids: list[str]) -> list[float]:
    """started_at - created_at of each job, in ms, from the database (microsecond timestamps)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT created_at, started_at FROM ar_jobs WHERE id IN ({','.join('?' * len(ids))})",
                            ids).fetchall()
    return [(datetime.fromisoformat(s) - datetime.fromisoformat(c)).total_seconds() * 1000 for c, s in rows]


def one_setup(workers: int, clips: list[dict], tmp: Path, log, extra: dict | None = None, idle_probes: int = 10) -> dict:
    data = tmp / f"data-{workers}w-{int(time.time())}"
    env = _env(data, extra)
    port = free_port()
    procs: list[subprocess.Popen] = []
    with Server(f"audiorouter-jobs-{workers}w", [sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(port)],
                port, env=env), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
        try:
            for i in range(workers):
                procs.append(_worker(env, tmp / f"worker-{workers}w-{i}.log"))
            warm = [_submit(c, DEV / clips[0]["file"]) for _ in range(workers * 2)]  # models loaded, caches warm
            _wait(c, warm)
            # queue wait with idle workers: one job at a time
            probes = []
            for _ in range(idle_probes):
                jid = _submit(c, DEV / clips[0]["file"])
                _wait(c, [jid])
                probes.append(jid)
                time.sleep(0.3)  # let the workers go idle (SQLite polling backs off to its 100 ms ceiling)
            waits = _queue_waits(data / "audiorouter.db", probes) if "AUDIOROUTER_DATABASE_URL" not in env else []
            audio = sum(r["duration_s"] for r in clips)
            t0 = time.perf_counter()
            ids = [_submit(c, DEV / r["file"]) for r in clips]
            _wait(c, ids)
            wall = time.perf_counter() - t0
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    out = {"workers": workers, "clips": len(clips), "audio_s": round(audio, 2), "wall_s": round(wall, 2),
           "x_realtime": round(audio / wall, 2)}
    if waits:
        out.update(queue_wait_ms_median=round(statistics.median(waits), 1), queue_wait_ms_max=round(max(waits), 1))
    log(f"  {workers} worker(s): {out}")
    return out


def run(clips: int = 24, log=print, tmp: Path | None = None) -> dict:
    tmp = tmp or (WORK / "batch-jobs")
    tmp.mkdir(parents=True, exist_ok=True)
    rows = english_exact(clips)
    res = {"cpus": os.cpu_count(), "runs": [one_setup(n, rows, tmp, log) for n in (1, 2)]}
    one, two = res["runs"]
    res["ratio_2_vs_1"] = round(two["x_realtime"] / one["x_realtime"], 2)
    log(f"  2 workers / 1 worker throughput: {res['ratio_2_vs_1']}x")
    redis_url = os.environ.get("AUDIOROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except Exception as e:  # noqa: BLE001 - no Redis here: the SQLite numbers stand alone
        log(f"  (no Redis at {redis_url}: {type(e).__name__}; queue wait on Redis not measured)")
    else:
        prefix = f"bench-{os.getpid()}-{int(time.time())}:"
        res["redis_queue"] = one_setup(1, rows[:2], tmp, log, {"AUDIOROUTER_JOBS_QUEUE_URL": redis_url,
                                                               "AUDIOROUTER_REDIS_PREFIX": prefix})
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=24)
    a = ap.parse_args()
    result = run(a.clips)
    (WORK / "batch_jobs.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
