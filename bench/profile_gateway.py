"""Profile audiorouter under wrk load with py-spy, the way the gateway benchmark drives it.

    python bench/profile_gateway.py json --conc 32 --seconds 10      # -> bench/.work/prof-json-c32.txt

Starts the fake upstream (0 ms) and one audiorouter pinned to a core, runs wrk for the request kind, samples
the server with `py-spy record --format raw` and prints the hottest frames (self and total), so a change can be
checked quickly without the whole `make bench`. Needs py-spy (`pip install py-spy`)."""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateways import audiorouter_target, body_file  # noqa: E402
from procs import ROOT, WORK, Server, cores, free_port, wrk  # noqa: E402
from tls import bench_certs  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (the taskset wrapper execs, so the pid is the server)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarize(raw: Path, top: int) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    total_t: collections.Counter[str] = collections.Counter()
    n = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        n += c
        frames = stack.split(";")
        self_t[frames[-1]] += c
        for f in set(frames):
            total_t[f] += c
    out = [f"{n} samples", "", "self:"]
    out += [f"{100 * c / n:5.1f}%  {f}" for f, c in self_t.most_common(top)]
    out += ["", "total:"]
    out += [f"{100 * c / n:5.1f}%  {f}" for f, c in total_t.most_common(top * 2)]
    return "\n".join(out)


def phase_probe_env(out: Path) -> dict[str, str]:
    """Environment that loads bench/probe/sitecustomize.py into the server and has it write to `out`."""
    probe = str(HERE / "probe")
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{probe}{os.pathsep}{path}" if path else probe, "AUDIOROUTER_BENCH_PHASES": str(out)}


def read_phases(path: Path) -> dict[str, float]:
    """Median over the probe's 50-request batches (the first batch, warm-up, left out) of each phase, in ms."""
    import json
    import statistics
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    rows = rows[1:] if len(rows) > 1 else rows
    names: list[str] = []
    for r in rows:
        names += [n for n in r if n not in names]
    return {n: statistics.median(r[n] for r in rows if n in r) for n in names}


def format_phases(ph: dict[str, float]) -> str:
    inside = sum(v for n, v in ph.items() if n != "upstream answered")  # the wait itself
    lines = [f"  {n:28s} {v:8.3f} ms" for n, v in ph.items()]
    return "\n".join(["phases (median ms since the previous point):", *lines,
                      f"  {'all but the upstream wait':28s} {inside:8.3f} ms"])


def phases_run(kinds: list[str], delays: list[int], seconds: float, log=print, scheme: str = "http") -> list[dict]:
    """For `make bench`: one probed audiorouter (pinned like the gateway benchmark's), wrk at c=1 for each
    request kind and upstream delay; the phase medians of each."""
    gw_core, lg_core = cores()
    ports = {d: free_port() for d in delays}
    fake = fake_upstream(ports, scheme, lg_core)
    out_file = WORK / "phases.jsonl"
    out_file.unlink(missing_ok=True)
    target = audiorouter_target(ports, gw_core, "audiorouter-probed", phase_probe_env(out_file), scheme)
    results = []
    try:
        target.server.start()
        target.setup(target)
        for kind in kinds:
            for d in delays:
                path, ctype = body_file(kind, target.model[(kind, d)])
                headers = {"Authorization": f"Bearer {target.api_key}", **target.headers[d]}
                wrk(target.url(kind), path, ctype, headers, connections=1, seconds=1, core=lg_core)
                out_file.unlink(missing_ok=True)
                r = wrk(target.url(kind), path, ctype, headers, connections=1, seconds=seconds, core=lg_core)
                ph = read_phases(out_file)
                results.append({"kind": kind, "delay_ms": d, "upstream": scheme, "p50_ms": r["p50_us"] / 1000,
                                "phases": ph})
                log(f"  phases {kind:9s} {d:2d} ms: " + ", ".join(f"{n} {v:.3f}" for n, v in ph.items()))
    finally:
        target.server.stop()
        fake.stop()
    return results


def fake_upstream(ports: dict[int, int], scheme: str, core: str) -> Server:
    tls = ":tls" if scheme == "https" else ""
    c = bench_certs()
    return Server("fake-upstream", [sys.executable, str(ROOT / "bench" / "fake_upstream.py"),
                                    *[f"--port={p}:{d}{tls}" for d, p in ports.items()],
                                    "--cert", str(c.cert), "--key", str(c.key)], next(iter(ports.values())),
                  core=core).start(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["json", "multipart", "speech"])
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--delay", type=int, default=0, help="the fake upstream's answer delay (ms)")
    ap.add_argument("--env", action="append", default=[], help="extra NAME=VALUE for the server")
    ap.add_argument("--https", action="store_true", help="the fake upstream over https (the bench's own CA)")
    ap.add_argument("--no-spy", action="store_true", help="measure only (py-spy's sampling costs the server CPU)")
    ap.add_argument("--phases", action="store_true",
                    help="no py-spy: time each phase of a request inside the server (bench/probe/sitecustomize.py)")
    a = ap.parse_args()
    if a.phases:
        a.no_spy = True
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    gw_core, lg_core = cores()
    port = free_port()
    scheme = "https" if a.https else "http"
    fake = fake_upstream({a.delay: port}, scheme, lg_core)
    extra = dict(e.split("=", 1) for e in a.env)
    phases_file = WORK / f"phases-{a.kind}-c{a.conc}-d{a.delay}.jsonl"
    if a.phases:
        phases_file.unlink(missing_ok=True)
        extra.update(phase_probe_env(phases_file))
    target = audiorouter_target({a.delay: port}, gw_core, env_extra=extra, scheme=scheme)
    target.server.start()
    target.setup(target)  # auth on: a real API key
    try:
        path, ctype = body_file(a.kind, target.model[(a.kind, a.delay)])
        headers = {"Authorization": f"Bearer {target.api_key}", **target.headers[a.delay]}
        wrk(target.url(a.kind), path, ctype, headers, connections=a.conc, seconds=1, core=lg_core)
        raw = WORK / f"prof-{a.kind}-c{a.conc}.raw"
        spy_argv = [spy, "record", "--format", "raw", "--rate", "500", "--nonblocking", "-o", str(raw),
                    "--pid", str(target.server.proc.pid), "--duration", str(int(a.seconds))]
        spy_proc = subprocess.Popen(["true"] if a.no_spy else spy_argv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        cpu0 = cpu_seconds(target.server.proc.pid)
        r = wrk(target.url(a.kind), path, ctype, headers, connections=a.conc, seconds=a.seconds - 1, core=lg_core)
        cpu = cpu_seconds(target.server.proc.pid) - cpu0
        spy_proc.wait(60)
        print(f"{a.kind} c={a.conc}: p50 {r['p50_us'] / 1000:.2f} ms, {r['req_per_s']:.0f} req/s, errors {r['errors']}, "
              f"server CPU {1000 * cpu / max(1, r['requests']):.3f} ms per request")
        if a.phases:
            print(format_phases(read_phases(phases_file)))
        if a.no_spy:
            return
        text = summarize(raw, a.top)
        (WORK / f"prof-{a.kind}-c{a.conc}.txt").write_text(text)
        print(text)
    finally:
        target.server.stop()
        fake.stop()


if __name__ == "__main__":
    main()
