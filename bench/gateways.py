"""Gateway overhead: the fake OpenAI upstream served directly, through audiorouter, LiteLLM's proxy and
Portkey's gateway, for three request kinds, at 0 ms and 50 ms upstream delay.

Placement: the gateway under test is pinned to one core (taskset), wrk and the fake upstream share the other,
so a gateway's req/s is what one core of it can do. Competitors are installed by `install_competitors()` into
bench/.work (pinned versions)."""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from clips import ten_second_wav
from procs import ROOT, WORK, Server, cores, free_port, wrk
from tls import bench_certs

LITELLM_VERSION = "1.102.4"   # newer releases require a certifi that is not published yet
PORTKEY_VERSION = "1.15.2"
# main before the second round of profile-guided work (store off the hot path, direct upstream transport,
# streaming body parser): the "before" server of the same run
BEFORE_REF = os.environ.get("BENCH_BEFORE_REF", "59f423d")  # before the profile-guided rounds
ROUND2_REF = os.environ.get("BENCH_ROUND2_REF", "e195512")  # after the second round, before the third
# before the one upstream client (issue 14): the hand-written transport for http, httpx for https
PREV_REF = os.environ.get("BENCH_PREV_REF", "7100df4")
API_KEY = "sk-bench-not-a-real-key"  # what the gateways send upstream (the fake upstream takes any key)
# audiorouter runs with auth on: a management key for this run, then a real API key created through the API
MANAGEMENT_KEY = "sk-bench-mgmt-" + secrets.token_hex(24)
LITELLM_MASTER_KEY = "sk-litellm-" + secrets.token_hex(16)
SCHEMES = ("http", "https")  # the fake upstream over plain http, and over https with the bench's own CA
SPEECH_TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
               "How vexingly quick daft zebras jump!")

# request kinds: (label, what it is)
KINDS = {
    "json": "transcription, OpenRouter JSON with base64 input_audio (10 s WAV)",
    "multipart": "transcription, OpenAI multipart upload (10 s WAV)",
    "speech": "speech, JSON in, 100 KB audio streamed back",
}


# ---- installing the competitors ---------------------------------------------------------------------------
def _run(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    with open(log, "ab") as fh:
        subprocess.run(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=True)


def install_competitors(log=print) -> dict[str, str | None]:
    """Idempotent. Returns {name: version or None when it could not be installed}."""
    WORK.mkdir(parents=True, exist_ok=True)
    out: dict[str, str | None] = {}
    venv = WORK / "litellm"
    py = venv / "bin" / "python"
    try:
        have = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                              capture_output=True, text=True).stdout.strip() if py.exists() else ""
        if have != LITELLM_VERSION:
            log(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv.relative_to(ROOT)}")
            base = shutil.which("python3.11") or sys.executable
            if not py.exists():
                _run([base, "-m", "venv", str(venv)], WORK / "litellm-install.log")
            _run([str(py), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
                 WORK / "litellm-install.log")
        out["litellm"] = LITELLM_VERSION
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"litellm could not be installed ({e}); see bench/.work/litellm-install.log")
        out["litellm"] = None
    pk = WORK / "portkey"
    pkg = pk / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    try:
        have = json.loads(pkg.read_text())["version"] if pkg.exists() else ""
        if have != PORTKEY_VERSION:
            if not shutil.which("npm"):
                raise OSError("npm is not installed")
            log(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {pk.relative_to(ROOT)}")
            pk.mkdir(parents=True, exist_ok=True)
            if not (pk / "package.json").exists():
                (pk / "package.json").write_text('{"name": "bench-portkey", "private": true}\n')
            _run(["npm", "install", "--no-audit", "--no-fund", "--save-exact", f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
                 WORK / "portkey-install.log", cwd=pk)
        out["portkey"] = PORTKEY_VERSION
    except (subprocess.CalledProcessError, OSError, ValueError) as e:
        log(f"portkey could not be installed ({e}); see bench/.work/portkey-install.log")
        out["portkey"] = None
    return out


# ---- targets ------------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    server: Server | None
    port: int
    paths: dict[str, str]                 # kind -> URL path
    model: dict[tuple[str, int], str]     # (kind, delay) -> model name to send
    headers: dict[int, dict[str, str]]    # delay -> extra request headers
    api_key: str = API_KEY                # what clients send (audiorouter: a key created after start-up)
    setup: object = None                  # called with the Target once its server listens
    scheme: str = "http"                  # how clients reach it (https: only the fake upstream itself)

    def url(self, kind: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{self.paths[kind]}"


def _upstreams(ports: dict[int, int], scheme: str = "http") -> dict[int, str]:
    return {d: f"{scheme}://127.0.0.1:{p}/v1" for d, p in ports.items()}


def create_api_key(t: Target) -> None:
    """audiorouter with auth on, as deployed: the management key creates an ordinary API key, which the
    load generator then sends (management keys may not run generations)."""
    r = httpx.post(f"http://127.0.0.1:{t.port}/api/v1/keys", json={"name": "bench"},
                   headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=30)
    r.raise_for_status()
    t.api_key = r.json()["key"]


def audiorouter_target(ports: dict[int, int], core: str, name: str = "audiorouter",
                       env_extra: dict[str, str] | None = None, scheme: str = "http") -> Target:
    port = free_port()
    # per server (name and port): other benchmark scripts may run beside this one and write their own
    cfg = WORK / f"{name}-{port}-catalog.yaml"
    lines = ["providers:"]
    # https: the `openai` adapter with its base_url pointed at the fake upstream, as a user overrides it
    adapter = "openai" if scheme == "https" else "openai_compatible"
    for d, base in _upstreams(ports, scheme).items():
        lines += [f"  fake{d}:", f"    name: Fake upstream {d} ms", f"    adapter: {adapter}",
                  f"    base_url: {base}", f"    api_key: {API_KEY}"]
    lines.append("models:")
    for d in ports:
        lines += [f"  - id: bench/whisper-d{d}", f"    name: bench whisper {d} ms", "    kind: transcription",
                  "    endpoints:", f"      - provider: fake{d}", "        upstream_model: whisper-1",
                  "        capabilities: {verbose_json: false}",
                  f"  - id: bench/tts-d{d}", f"    name: bench tts {d} ms", "    kind: speech", "    voices: [alloy]",
                  "    endpoints:", f"      - provider: fake{d}", "        upstream_model: tts-1",
                  "        output_formats: [mp3, pcm, wav, opus, aac, flac]"]
    cfg.write_text("\n".join(lines) + "\n")
    data = WORK / f"{name}-{port}-data"  # one per server: a `before` tree must not meet a newer schema
    shutil.rmtree(data, ignore_errors=True)
    env = {"AUDIOROUTER_CATALOG": str(cfg), "AUDIOROUTER_LOCAL_SUBSTITUTE": "false", "AUDIOROUTER_PRELOAD": "false",
           "AUDIOROUTER_CACHE_TTL_S": "0", "AUDIOROUTER_DATA_DIR": str(data), "AUDIOROUTER_LOG_LEVEL": "warning",
           "AUDIOROUTER_RETRY_ATTEMPTS": "1", "AUDIOROUTER_MANAGEMENT_KEY": MANAGEMENT_KEY,
           **bench_certs().env(), **(env_extra or {})}
    srv = Server(name, [sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(port)], port,
                 core=core, env=env)
    return Target(name, srv, port,
                  {"json": "/api/v1/audio/transcriptions", "multipart": "/v1/audio/transcriptions",
                   "speech": "/v1/audio/speech"},
                  {(k, d): f"bench/{'tts' if k == 'speech' else 'whisper'}-d{d}" for k in KINDS for d in ports},
                  {d: {} for d in ports}, setup=create_api_key)


COMPARISONS = ("audiorouter-nometrics", "audiorouter-prev", "audiorouter-before")  # first delay, c=1 and c=32 only


def before_target(ports: dict[int, int], core: str, ref: str = BEFORE_REF,
                  name: str = "audiorouter-before", scheme: str = "http") -> Target | None:
    """audiorouter as it was at git `ref` (a worktree under bench/.work), run with the same virtualenv: the
    before/after of the profile-guided changes, measured in the same run."""
    tree = WORK / f"before-{ref}"
    if not (tree / "src" / "audiorouter").is_dir():
        r = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), ref],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
    return audiorouter_target(ports, core, name, {"PYTHONPATH": str(tree / "src")}, scheme)


def litellm_target(ports: dict[int, int], core: str, scheme: str = "http") -> Target | None:
    exe = WORK / "litellm" / "bin" / "litellm"
    if not exe.exists():
        return None
    lines = ["model_list:"]
    for d, base in _upstreams(ports, scheme).items():
        lines += [f"  - model_name: whisper-d{d}", "    litellm_params:", "      model: openai/whisper-1",
                  f"      api_base: {base}", f"      api_key: {API_KEY}", "    model_info:",
                  "      mode: audio_transcription",
                  f"  - model_name: tts-d{d}", "    litellm_params:", "      model: openai/tts-1",
                  f"      api_base: {base}", f"      api_key: {API_KEY}", "    model_info:", "      mode: audio_speech"]
    lines += ["litellm_settings:", "  drop_params: true", "  telemetry: false", "general_settings:",
              f"  master_key: {LITELLM_MASTER_KEY}"]  # auth on, as deployed
    cfg = WORK / f"litellm-config-{scheme}.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
           "DISABLE_SCHEMA_UPDATE": "true", "NO_DOCS": "True", **bench_certs().env()}
    srv = Server("litellm", [str(exe), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                             "--num_workers", "1"], port, core=core, env=env)
    return Target("litellm", srv, port,
                  {"multipart": "/v1/audio/transcriptions", "speech": "/v1/audio/speech"},
                  {(k, d): f"{'tts' if k == 'speech' else 'whisper'}-d{d}" for k in KINDS for d in ports},
                  {d: {} for d in ports}, api_key=LITELLM_MASTER_KEY)


def portkey_target(ports: dict[int, int], core: str, scheme: str = "http") -> Target | None:
    js = WORK / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not js.exists() or not shutil.which("node"):
        return None
    port = free_port()
    srv = Server("portkey", ["node", str(js), f"--port={port}", "--headless"], port, core=core,
                 env={"NODE_ENV": "production", **bench_certs().env()}, cwd=WORK / "portkey")
    return Target("portkey", srv, port,
                  {"multipart": "/v1/audio/transcriptions", "speech": "/v1/audio/speech"},
                  {(k, d): "tts-1" if k == "speech" else "whisper-1" for k in KINDS for d in ports},
                  {d: {"x-portkey-provider": "openai", "x-portkey-custom-host": base}
                   for d, base in _upstreams(ports, scheme).items()})


def null_proxy_target(ports: dict[int, int], core: str) -> Target:
    """bench/null_proxy.py: a byte relay with no gateway logic at all, pinned like the gateways. What it adds
    is what any extra process in the path costs on this machine (socket hops, wake-ups)."""
    port = free_port()
    srv = Server("null-proxy", [sys.executable, str(ROOT / "bench" / "null_proxy.py"), "--port", str(port)], port,
                 core=core)
    return Target("null-proxy", srv, port,
                  {"json": "/v1/audio/transcriptions", "multipart": "/v1/audio/transcriptions",
                   "speech": "/v1/audio/speech"},
                  {(k, d): "tts-1" if k == "speech" else "whisper-1" for k in KINDS for d in ports},
                  {d: {"x-null-upstream": str(p)} for d, p in ports.items()})


FLOORS = ("null-proxy",)  # measured at every delay, c=1 and c=32 only


def direct_target(ports: dict[int, int], scheme: str = "http") -> list[Target]:
    """The fake upstream itself (one Target per delay: they listen on different ports)."""
    return [Target(f"direct-d{d}", None, p,
                   {"json": "/v1/audio/transcriptions", "multipart": "/v1/audio/transcriptions",
                    "speech": "/v1/audio/speech"},
                   {(k, dd): "tts-1" if k == "speech" else "whisper-1" for k in KINDS for dd in ports},
                   {dd: {} for dd in ports}, scheme=scheme) for d, p in ports.items()]


# ---- bodies -------------------------------------------------------------------------------------------
BOUNDARY = "----audiorouterbench7d1f"


def make_body(kind: str, model: str) -> tuple[bytes, str]:
    if kind == "json":
        b64 = base64.b64encode(ten_second_wav()).decode()
        return (json.dumps({"model": model, "input_audio": {"data": b64, "format": "wav"}}).encode(),
                "application/json")
    if kind == "multipart":
        wav = ten_second_wav()
        parts = [f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n".encode(),
                 f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n"
                 "Content-Type: audio/wav\r\n\r\n".encode() + wav + b"\r\n",
                 f"--{BOUNDARY}--\r\n".encode()]
        return b"".join(parts), f"multipart/form-data; boundary={BOUNDARY}"
    return (json.dumps({"model": model, "input": SPEECH_TEXT, "voice": "alloy", "response_format": "mp3"}).encode(),
            "application/json")


def body_file(kind: str, model: str) -> tuple[Path, str]:
    d = WORK / "bodies"
    d.mkdir(parents=True, exist_ok=True)
    data, ctype = make_body(kind, model)
    p = d / f"{kind}-{model.replace('/', '_')}.bin"
    if not p.exists() or p.read_bytes() != data:
        p.write_bytes(data)
    return p, ctype


def check(target: Target, kind: str, delay: int, upstream_stats: str) -> str | None:
    """One request by hand: None when it worked end to end, else what went wrong."""
    path, ctype = body_file(kind, target.model[(kind, delay)])
    headers = {"content-type": ctype, "authorization": f"Bearer {target.api_key}", **target.headers[delay]}
    try:
        r = httpx.post(target.url(kind), content=path.read_bytes(), headers=headers, timeout=30,
                       verify=ssl.create_default_context(cafile=str(bench_certs().ca)))
    except httpx.HTTPError as e:
        return f"{e.__class__.__name__}: {e}"
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:300]}"
    if kind == "speech" and len(r.content) != 100 * 1024:
        return f"speech body is {len(r.content)} bytes, expected 102400"
    if kind != "speech":
        st = httpx.get(upstream_stats, timeout=5).json().get("last", {})
        if st.get("body_bytes", 0) < 300_000:
            return f"the upstream got {st.get('body_bytes')} bytes, not the 10 s WAV"
        if kind == "json" and target.server is not None:
            u = r.json().get("usage", {})
            if abs(float(u.get("seconds", 0)) - 10.0) > 1e-6:
                return f"usage.seconds is {u.get('seconds')}, expected 10.0"
    return None


def measure(target: Target, kind: str, delay: int, conc: int, seconds: float, lg_core: str) -> dict:
    path, ctype = body_file(kind, target.model[(kind, delay)])
    headers = {"Authorization": f"Bearer {target.api_key}", **target.headers[delay]}
    wrk(target.url(kind), path, ctype, headers, connections=conc, seconds=min(1.0, seconds), core=lg_core)  # warm
    cpu0 = group_cpu_seconds(target.server)
    r = wrk(target.url(kind), path, ctype, headers, connections=conc, seconds=seconds, core=lg_core)
    cpu = group_cpu_seconds(target.server) - cpu0 if cpu0 is not None else None
    return {"target": target.name, "kind": kind, "delay_ms": delay, "concurrency": conc,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "req_per_s": r["req_per_s"],
            "requests": r["requests"], "errors": r["errors"],
            "cpu_ms_per_req": 1000 * cpu / r["requests"] if cpu is not None and r["requests"] else None}


def group_cpu_seconds(server: Server | None) -> float | None:
    """CPU time (user + system) so far of a gateway's processes: its process group (workers included)."""
    if server is None or server.proc is None:
        return None
    pgid, total = server.proc.pid, 0
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[2]) == pgid:
            total += int(f[11]) + int(f[12])
    return total / tick


def run(*, seconds: float, reps: int, concurrencies: list[int], delays: list[int], sweep_delays: list[int],
        only: list[str] | None = None, schemes: tuple[str, ...] = SCHEMES, log=print) -> dict:
    """Every target against the plain-http fake upstream, then every target against the same fake upstream
    over https (its certificate made by bench/tls.py, trusted by every gateway through SSL_CERT_FILE /
    NODE_EXTRA_CA_CERTS). audiorouter runs as deployed in both: auth on with a real API key, the ledger and
    metrics on. Results carry `upstream`: "http" or "https"."""
    gw_core, lg_core = cores()
    certs = bench_certs()
    ports = {sc: {d: free_port() for d in delays} for sc in schemes}
    specs = [f"--port={p}:{d}{':tls' if sc == 'https' else ''}" for sc in schemes for d, p in ports[sc].items()]
    first = next(iter(ports.get("http", {}).values()), None)
    fake = Server("fake-upstream", [sys.executable, str(ROOT / "bench" / "fake_upstream.py"), *specs,
                                    "--cert", str(certs.cert), "--key", str(certs.key)],
                  first or next(iter(ports[schemes[0]].values())), core=lg_core)
    fake.start(30)
    if first is None:  # /stats is served on every port, https ones too
        raise SystemExit("the plain-http fake upstream is needed for the sanity checks' /stats")
    stats_url = f"http://127.0.0.1:{first}/stats"
    results: list[dict] = []
    notes: list[str] = []
    try:
        for scheme in schemes:
            sp = ports[scheme]
            directs = direct_target(sp, scheme)
            builders = [("audiorouter", lambda p, c, sc=scheme: audiorouter_target(p, c, scheme=sc)),
                        # the same server with metrics off: what /metrics costs
                        ("audiorouter-nometrics", lambda p, c, sc=scheme: audiorouter_target(
                            p, c, "audiorouter-nometrics", {"AUDIOROUTER_METRICS": "false"}, sc)),
                        # the code before this round (hand-written transport for http, httpx for https)
                        ("audiorouter-prev", lambda p, c, sc=scheme: before_target(p, c, PREV_REF, "audiorouter-prev", sc)),
                        ("audiorouter-before", lambda p, c, sc=scheme: before_target(p, c, scheme=sc)),
                        ("litellm", lambda p, c, sc=scheme: litellm_target(p, c, sc)),
                        ("portkey", lambda p, c, sc=scheme: portkey_target(p, c, sc))]
            if scheme == "http":  # a byte relay: no TLS client in it
                builders.append(("null-proxy", null_proxy_target))
            targets: list[Target] = []
            for name, build in builders:
                if only and name not in only:
                    continue
                t = build(sp, gw_core)
                if t is None:
                    notes.append(f"{name}: not installed (or, for audiorouter-before/-prev, {BEFORE_REF}/{PREV_REF} "
                                 "not in this clone's history), skipped")
                else:
                    targets.append(t)
            for t in [*directs, *targets]:
                if t.server is not None:
                    log(f"starting {t.name} ({scheme} upstream) on core {gw_core}")
                    try:
                        t.server.start(180)
                        if callable(t.setup):
                            t.setup(t)
                    except (RuntimeError, TimeoutError, httpx.HTTPError) as e:
                        notes.append(f"{t.name} ({scheme}): did not start ({str(e)[:200]})")
                        t.server.stop()
                        continue
                    time.sleep(1.0)
                try:
                    for kind in KINDS:
                        if kind not in t.paths:
                            continue
                        for d in delays:
                            if t.name.startswith("direct-") and t.name != f"direct-d{d}":
                                continue
                            if t.name in COMPARISONS and d != delays[0]:
                                continue
                            err = check(t, kind, d, stats_url)
                            name = "direct" if t.name.startswith("direct-") else t.name
                            if err:
                                notes.append(f"{name} {kind} {d} ms ({scheme} upstream): sanity check failed: {err}")
                                log(notes[-1])
                                continue
                            sweep = (scheme == "http" and d in sweep_delays
                                     and t.name not in COMPARISONS + FLOORS)
                            concs = concurrencies if sweep else [c for c in (1, 32) if c in concurrencies] or concurrencies
                            for c in concs:
                                for rep in range(reps):
                                    m = measure(t, kind, d, c, seconds, lg_core)
                                    m["target"], m["rep"], m["upstream"] = name, rep, scheme
                                    results.append(m)
                                    log(f"  {scheme:5s} {name:21s} {kind:9s} {d:2d} ms c={c:<3d} p50 {m['p50_ms']:7.2f} ms  "
                                        f"p99 {m['p99_ms']:7.2f} ms  {m['req_per_s']:8.1f} req/s  err {m['errors']}")
                finally:
                    if t.server is not None:
                        t.server.stop()
    finally:
        fake.stop()
    return {"results": results, "notes": notes, "gateway_core": gw_core, "loadgen_core": lg_core,
            "before_ref": BEFORE_REF, "prev_ref": PREV_REF, "seconds": seconds, "reps": reps,
            "schemes": list(schemes)}


if __name__ == "__main__":  # quick manual run: python bench/gateways.py [target ...]
    sys.path.insert(0, str(ROOT / "src"))
    out = run(seconds=float(os.environ.get("BENCH_SECONDS", "2")), reps=1, concurrencies=[1, 32], delays=[0],
              sweep_delays=[0], only=sys.argv[1:] or None)
    print(json.dumps(out["notes"], indent=1))
