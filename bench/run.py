"""`make bench`: the whole suite, then docs/benchmarks.md and the plots.

    python bench/run.py                 # full run (about 30 min on 2 cores)
    python bench/run.py --quick         # short runs, one repetition (a smoke test of the harness)
    python bench/run.py --only gateways,big,local

Raw results go to bench/.work/results.json (git-ignored); competitors are installed under bench/.work/."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from procs import WORK  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("wrk is missing: installing the Debian package")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)


def _out(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> str:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({model or platform.processor()}), {mem:.0f} GiB RAM, no GPU, {platform.platform()}"


def versions(comp: dict) -> str:
    import importlib.metadata as md
    parts = [f"Python {platform.python_version()}"]
    for p in ("audiorouter", "fastapi", "uvicorn", "httpx", "faster-whisper", "ctranslate2", "hibari-tts", "av"):
        try:
            parts.append(f"{p} {md.version(p)}")
        except md.PackageNotFoundError:
            pass
    parts.append(f"LiteLLM {comp.get('litellm') or 'not installed'}")
    parts.append(f"Portkey gateway {comp.get('portkey') or 'not installed'}")
    parts.append(f"node {_out(['node', '--version']) or '?'}")
    parts.append(_out(["wrk", "--version"]).split("\n")[0].split(" [")[0] or "wrk ?")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs, one repetition")
    ap.add_argument("--only", default="gateways,clients,big,local,batch,chat")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--merge", action="store_true", help="update the sections run in the last results.json")
    ap.add_argument("--splice", action="store_true",
                    help="with --only chat or chat-offline and no earlier results.json (a fresh machine): replace that section of "
                         "docs/benchmarks.md with this run's and say so under Setup")
    a = ap.parse_args()
    quick = a.quick or os.environ.get("BENCH_QUICK") == "1"
    only = set(a.only.split(","))
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.time()
    ensure_wrk()
    import gateways
    comp = gateways.install_competitors(log) if "gateways" in only else {}
    res: dict = {"meta": {
        "command": "make bench" + (" (BENCH_QUICK=1)" if quick else ""), "mode": "quick" if quick else "full",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "machine": machine(),
        "versions": versions(comp), "commit": _out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "?",
        "dirty": bool(_out(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])),
        "loadavg": os.getloadavg()[0], "reps": 1 if quick else 3, "seconds": 2 if quick else 5}}
    m = res["meta"]
    if "gateways" in only:
        log("gateway overhead")
        res["gateways"] = gateways.run(
            seconds=m["seconds"], reps=m["reps"], concurrencies=[1, 32] if quick else [1, 4, 16, 32],
            delays=[0, 50], sweep_delays=[0], log=log)
        import profile_gateway
        log("phases inside audiorouter at c=1")
        res["phases"] = profile_gateway.phases_run(["json", "multipart", "speech"], [0, 50],
                                                   seconds=m["seconds"] * 2, log=log)
        res["phases"] += profile_gateway.phases_run(["json", "multipart", "speech"], [0],
                                                    seconds=m["seconds"] * 2, log=log, scheme="https")
    if "clients" in only:
        import upstream_clients
        log("upstream HTTP clients (client side only, http and https)")
        res["clients"] = upstream_clients.run(seconds=2 if quick else 3, reps=m["reps"], log=log)
    if "big" in only:
        import big_payload
        log("big payload")
        res["big_payload"] = big_payload.run(reps=1 if quick else 3, log=log)
    if "local" in only:
        import local_engines
        log("local engines")
        res["local"] = local_engines.run(stt_clips=8 if quick else 24, stt_reps=1 if quick else 2, concurrency=4,
                                         tts_reps=5 if quick else 15, threads=os.cpu_count() or 1, log=log,
                                         before_after_clips=8 if quick else 12)
    if "batch" in only:
        import batch_jobs
        log("batch jobs: 1 and 2 worker processes, queue wait")
        res["batch_jobs"] = batch_jobs.run(clips=8 if quick else 24, log=log)
    if "chat" in only:
        import chat
        log("chat: gateway overhead against the fake chat upstream, offline voice-chat cascade")
        res["chat"] = chat.run(reps=2 if quick else 5, log=log)
    if "chat-offline" in only:
        import chat
        log("chat: the offline voice-chat cascade only (over HTTP, then its phases in-process)")
        res["chat"] = {"offline": chat.offline(reps=2 if quick else 7, log=log), "phases": chat.phases(3, log)}
    m["took_min"] = (time.time() - started) / 60
    last = WORK / "results.json"
    if a.merge and last.exists():
        old = json.loads(last.read_text())
        old.update({k: v for k, v in res.items() if k != "meta"})
        old["meta"]["took_min"] = old["meta"].get("took_min", 0) + m["took_min"]
        # the report says which sections come from this later run, of which code, under what load
        old["meta"].setdefault("merged", []).append({k: m[k] for k in ("started", "commit", "dirty", "loadavg")}
                                                    | {"sections": sorted(only)})
        res = old
    (WORK / "results.json").write_text(json.dumps(res, indent=1, default=str))
    if a.splice:
        import report
        out = report.splice(res, sorted(only))
        log(f"spliced {', '.join(sorted(only))} into {out.relative_to(ROOT)}")
        return
    if not a.no_report:
        import report
        before = HERE / "before_after.md"
        if before.exists():
            res["before_after"] = before.read_text().splitlines()
        out = report.write(res)
        log(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
