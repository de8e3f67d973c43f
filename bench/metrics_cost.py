"""What metrics on cost, in-process: the same relayed request through the ASGI application (no uvicorn, no
sockets on our side) with AUDIOROUTER_METRICS=true and =false, in child processes taking turns (A B A B ...)
so that drift in the machine's load hits both alike. Reports the server-side CPU time per request of each and
the ratio. Auth on with a real key, the ledger on (SQLite), the fake upstream over plain http or https.

    python bench/metrics_cost.py --kind speech --rounds 6 --requests 400 [--https]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))


async def child(kind: str, n: int, conc: int) -> dict:
    from audiorouter.api.app import create_app
    from audiorouter.config import Settings
    from gateways import make_body

    settings = Settings()
    app = create_app(settings)
    mgmt = os.environ["AUDIOROUTER_MANAGEMENT_KEY"]
    model = "bench/tts-d0" if kind == "speech" else "bench/whisper-d0"
    body, ctype = make_body(kind, model)
    path = {"speech": "/v1/audio/speech", "multipart": "/v1/audio/transcriptions",
            "json": "/api/v1/audio/transcriptions"}[kind]

    async def call(method: str, p: str, data: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": p,
                 "raw_path": p.encode(), "query_string": b"", "root_path": "", "scheme": "http",
                 "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(data)).encode()), *headers],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
        sent = False
        status, out = 0, []

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(m):
            nonlocal status
            if m["type"] == "http.response.start":
                status = m["status"]
            elif m["type"] == "http.response.body":
                out.append(m.get("body", b""))
        await app(scope, receive, send)
        return status, b"".join(out)

    async with app.router.lifespan_context(app):
        st, raw = await call("POST", "/api/v1/keys", json.dumps({"name": "bench"}).encode(),
                             [(b"content-type", b"application/json"), (b"authorization", f"Bearer {mgmt}".encode())])
        assert st == 201, raw[:300]
        key = json.loads(raw)["key"]
        hdrs = [(b"content-type", ctype.encode()), (b"authorization", f"Bearer {key}".encode())]
        for _ in range(50):
            st, raw = await call("POST", path, body, hdrs)
            assert st == 200, raw[:300]
        done = 0

        async def worker(k):
            nonlocal done
            for _ in range(k):
                await call("POST", path, body, hdrs)
                done += 1
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*[worker(n // conc) for _ in range(conc)])
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"cpu_ms": cpu * 1000 / done, "req_per_s": done / wall}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import uvloop
        print(json.dumps(uvloop.run(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="speech", choices=["speech", "multipart", "json"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--https", action="store_true")
    a = ap.parse_args()
    from gateways import audiorouter_target
    from procs import Server, cores, free_port
    from tls import bench_certs
    gw_core, lg_core = cores()
    certs = bench_certs()
    port = free_port()
    scheme = "https" if a.https else "http"
    fake = Server("fake-upstream-metrics", [sys.executable, str(HERE / "fake_upstream.py"),
                                            f"--port={port}:0{':tls' if a.https else ''}", "--cert", str(certs.cert),
                                            "--key", str(certs.key)], port, core=lg_core).start(30)
    t = audiorouter_target({0: port}, gw_core, "metrics-cost", scheme=scheme)  # its catalog and environment
    res: dict[str, list[dict]] = {"on": [], "off": []}
    try:
        for r in range(a.rounds):
            for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                data = tempfile.mkdtemp(prefix="ar-metrics-cost-")
                env = {**t.server.env, "AUDIOROUTER_METRICS": "true" if mode == "on" else "false",
                       "AUDIOROUTER_DATA_DIR": data, "AUDIOROUTER_MANAGEMENT_KEY": "sk-bench-" + secrets.token_hex(24)}
                out = subprocess.run(["taskset", "-c", gw_core, sys.executable, __file__, "--child", a.kind,
                                      str(a.requests), str(a.conc)], capture_output=True, text=True, env=env,
                                     timeout=600)
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-2000:])
                m = json.loads(out.stdout.strip().splitlines()[-1])
                res[mode].append(m)
                print(f"round {r} metrics {mode:3s}: {m['cpu_ms']:.3f} ms CPU per request, {m['req_per_s']:.0f} req/s",
                      flush=True)
    finally:
        fake.stop()
    on = statistics.median(x["cpu_ms"] for x in res["on"])
    off = statistics.median(x["cpu_ms"] for x in res["off"])
    ratios = [x["cpu_ms"] / y["cpu_ms"] for x, y in zip(res["on"], res["off"])]
    print(f"{a.kind} ({scheme} upstream): metrics on {on:.3f} ms, off {off:.3f} ms CPU per request; "
          f"on/off {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}–{max(ratios):.3f})")


if __name__ == "__main__":
    main()
