"""Upstream HTTP clients side by side: the client end of what a gateway does per relayed request, with
nothing else in the process. Each client runs in a child process pinned to one core (the fake upstream on
the other), against the same fake upstream over plain http and over https (the bench's own CA, trusted
through SSL_CERT_FILE; verification on).

    python bench/upstream_clients.py                       # every client, both schemes
    python bench/upstream_clients.py --clients aiohttp,httpx --seconds 3

Per client, scheme and request kind: p50 latency of one request at a time, then req/s and the client
process's CPU time per request with 32 in flight. Request kinds: the 320 KB multipart upload of a 10 s WAV
(answer: a small JSON) and a speech JSON whose 100 KB answer is streamed back in 4 chunks."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the "fasthttp" child runs on the tree before the one upstream client (a git worktree): its src goes first
sys.path.insert(0, os.environ.get("BENCH_AUDIOROUTER_SRC") or str(HERE.parent / "src"))

CLIENTS = ("audiorouter", "fasthttp", "aiohttp", "httpx", "httpx-aiohttp", "pyreqwest")
KINDS = ("multipart", "speech")


def _bodies():
    from clips import ten_second_wav
    try:
        from audiorouter.providers.upstream_client import multipart_body
    except ImportError:  # the older tree
        from audiorouter.providers.fasthttp import multipart_body
    ctype, parts = multipart_body({"model": "whisper-1", "response_format": "json"},
                                  {"file": ("speech.wav", ten_second_wav(), "audio/wav")})
    speech = json.dumps({"model": "tts-1", "input": "The quick brown fox jumps over the lazy dog.",
                         "voice": "alloy", "response_format": "mp3"}).encode()
    return ctype, parts, speech


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])


# ---- one client per function: returns an async `one(kind)` that makes a request and reads its answer -------
async def make_client(name: str, base: str):
    ctype, parts, speech = _bodies()
    mp = b"".join(parts)
    auth = {"Authorization": "Bearer sk-bench"}
    if name == "audiorouter":  # the product's own upstream call (providers/http.py), whatever it is now
        from audiorouter.config import Settings
        from audiorouter.providers.openai_compatible import OpenAICompatibleProvider
        from audiorouter.routing.catalog import Provider
        spec = Provider(name="bench", adapter="openai_compatible", base_url=base, api_key="sk-bench")
        p = OpenAICompatibleProvider("bench", spec, Settings())
        from clips import ten_second_wav
        wav = ten_second_wav()

        async def one(kind):
            if kind == "multipart":
                r = await p.post_checked(base + "/audio/transcriptions", headers=p.headers(),
                                         data={"model": "whisper-1", "response_format": "json"},
                                         files={"file": ("speech.wav", wav, "audio/wav")})
                r.json()
            else:
                r = await p.open_checked(base + "/audio/speech", headers=p.headers(), json=json.loads(speech))
                async for _ in p.drain(r):
                    pass
        return one, p.aclose
    if name == "fasthttp":
        import httpx
        from audiorouter.providers.fasthttp import FastTransport
        tr = FastTransport(httpx.AsyncHTTPTransport())
        t = {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": 10.0}

        async def one(kind):
            if kind == "multipart":
                r = await tr.request("POST", base + "/audio/transcriptions",
                                     [(b"content-type", ctype.encode()), (b"authorization", b"Bearer sk-bench")], parts, t)
                await r.aread()
                r.json()
            else:
                r = await tr.request("POST", base + "/audio/speech",
                                     [(b"content-type", b"application/json"), (b"authorization", b"Bearer sk-bench")],
                                     [speech], t)
                async for _ in r.aiter_bytes():
                    pass
        return one, tr.aclose
    if name == "aiohttp":
        import aiohttp
        conn = aiohttp.TCPConnector(limit=256, limit_per_host=0, keepalive_timeout=30,
                                    ssl=_ssl_context() if base.startswith("https") else False)
        s = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False)

        async def one(kind):
            if kind == "multipart":
                async with s.post(base + "/audio/transcriptions", data=mp,
                                  headers={**auth, "Content-Type": ctype}) as r:
                    json.loads(await r.read())
            else:
                async with s.post(base + "/audio/speech", data=speech,
                                  headers={**auth, "Content-Type": "application/json"}) as r:
                    async for _ in r.content.iter_any():
                        pass
        return one, s.close
    if name in ("httpx", "httpx-aiohttp"):
        import httpx
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        if name == "httpx":
            c = httpx.AsyncClient(limits=limits, timeout=60)
        else:
            import aiohttp
            from httpx_aiohttp import AiohttpTransport
            tr = AiohttpTransport(client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=256, ssl=_ssl_context() if base.startswith("https") else False)))
            c = httpx.AsyncClient(transport=tr, timeout=60)

        async def one(kind):
            if kind == "multipart":
                r = await c.post(base + "/audio/transcriptions", content=mp, headers={**auth, "Content-Type": ctype})
                r.json()
            else:
                async with c.stream("POST", base + "/audio/speech", content=speech,
                                    headers={**auth, "Content-Type": "application/json"}) as r:
                    async for _ in r.aiter_bytes():
                        pass
        return one, c.aclose
    if name == "pyreqwest":
        import datetime

        from pyreqwest.client import ClientBuilder
        b = ClientBuilder().max_connections(256).timeout(datetime.timedelta(seconds=60))  # roots: SSL_CERT_FILE
        c = b.build()
        await c.__aenter__()

        async def one(kind):
            if kind == "multipart":
                r = await c.post(base + "/audio/transcriptions").headers({**auth, "Content-Type": ctype}) \
                    .body_bytes(mp).build().send()
                json.loads(bytes(await r.bytes()))
            else:
                async with c.post(base + "/audio/speech").headers({**auth, "Content-Type": "application/json"}) \
                        .body_bytes(speech).build_streamed() as r:
                    while await r.body_reader.read_chunk() is not None:
                        pass

        async def close():
            await c.__aexit__(None, None, None)
        return one, close
    raise SystemExit(f"unknown client {name}")


async def child(name: str, base: str, kind: str, seconds: float, conc: int) -> dict:
    one, close = await make_client(name, base)
    for _ in range(20):
        await one(kind)
    lat = []
    t_end = time.perf_counter() + seconds / 2
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        await one(kind)
        lat.append(time.perf_counter() - t0)
    n = 0
    stop = time.perf_counter() + seconds

    async def worker():
        nonlocal n
        while time.perf_counter() < stop:
            await one(kind)
            n += 1
    await asyncio.gather(*[worker() for _ in range(conc)])  # warm the pool to `conc` connections
    n = 0
    stop = time.perf_counter() + seconds
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(conc)])
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    await close()
    return {"client": name, "scheme": base.split(":")[0], "kind": kind, "p50_ms": statistics.median(lat) * 1000,
            "req_per_s": n / wall, "cpu_ms_per_req": cpu * 1000 / max(1, n)}


PREV_REF = os.environ.get("BENCH_PREV_REF", "7100df4")  # the last commit with providers/fasthttp.py


def prev_tree() -> Path | None:
    from procs import ROOT, WORK
    tree = WORK / f"before-{PREV_REF}"
    if not (tree / "src" / "audiorouter" / "providers" / "fasthttp.py").exists():
        r = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), PREV_REF],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
    return tree


def run(clients=CLIENTS, kinds=KINDS, seconds: float = 3.0, reps: int = 3, conc: int = 32, log=print) -> list[dict]:
    from procs import Server, cores, free_port
    from tls import bench_certs
    certs = bench_certs()
    gw_core, lg_core = cores()
    plain, tls = free_port(), free_port()
    fake = Server("fake-upstream-clients", [sys.executable, str(HERE / "fake_upstream.py"), f"--port={plain}:0",
                                            f"--port={tls}:0:tls", "--cert", str(certs.cert), "--key", str(certs.key)],
                  plain, core=lg_core).start(30)
    out = []
    try:
        for scheme, port in (("http", plain), ("https", tls)):
            for name in clients:
                if scheme == "https" and name == "fasthttp":
                    continue  # plain http only
                for kind in kinds:
                    env = {**os.environ, **certs.env()}
                    if name == "fasthttp":  # providers/fasthttp.py is gone: the tree that still had it
                        tree = prev_tree()
                        if tree is None:
                            log(f"  fasthttp: git {PREV_REF} is not in this clone's history, skipped")
                            break
                        env["BENCH_AUDIOROUTER_SRC"] = str(tree / "src")
                    for rep in range(reps):
                        argv = ["taskset", "-c", gw_core, sys.executable, __file__, "--child", name,
                                f"{scheme}://127.0.0.1:{port}/v1", kind, str(seconds), str(conc)]
                        r = subprocess.run(argv, capture_output=True, text=True, timeout=120 + 4 * seconds, env=env)
                        if r.returncode != 0:
                            log(f"  {name} {scheme} {kind}: failed: {r.stderr.strip()[-400:]}")
                            break
                        m = json.loads(r.stdout.strip().splitlines()[-1])
                        m["rep"] = rep
                        out.append(m)
                        log(f"  {name:14s} {scheme:5s} {kind:9s} p50 {m['p50_ms']:6.3f} ms  "
                            f"{m['req_per_s']:7.0f} req/s  CPU {m['cpu_ms_per_req']:.3f} ms/req")
    finally:
        fake.stop()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, base, kind, seconds, conc = sys.argv[2:7]
        try:
            import uvloop
            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:
            runner = asyncio.Runner()
        with runner:
            print(json.dumps(runner.run(child(name, base, kind, float(seconds), int(conc)))))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    res = run(a.clients.split(","), a.kinds.split(","), a.seconds, a.reps)
    from procs import WORK
    (WORK / "upstream_clients.json").write_text(json.dumps(res, indent=1))
    print(table(res))


def table(res: list[dict]) -> str:
    """Markdown: medians (min–max) per client, scheme and kind."""
    groups: dict[tuple, list[dict]] = {}
    for r in res:
        groups.setdefault((r["scheme"], r["client"], r["kind"]), []).append(r)

    def f(rows, k, p=2):
        v = sorted(x[k] for x in rows)
        return f"{statistics.median(v):.{p}f} ({v[0]:.{p}f}–{v[-1]:.{p}f})"
    lines = ["| scheme | client | request | p50 @ c=1 (ms) | req/s @ c=32 | client CPU/req @ c=32 (ms) |",
             "|---|---|---|---|---|---|"]
    for (scheme, client, kind), rows in groups.items():
        lines.append(f"| {scheme} | {client} | {kind} | {f(rows, 'p50_ms', 3)} | {f(rows, 'req_per_s', 0)} | "
                     f"{f(rows, 'cpu_ms_per_req', 3)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
