"""Process plumbing for the benchmark: start servers pinned to a core, wait for their port, stop them, and
run wrk (pinned to the other core) with the POST script."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
WRK_LUA = ROOT / "bench" / "wrk_post.lua"


def cores() -> tuple[str, str]:
    """(gateway core, load-generator core). On one core everything shares it (figures then mean little)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(cpus) >= 2:
        return str(cpus[0]), str(cpus[1])
    return str(cpus[0]), str(cpus[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 120.0, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {port} after {timeout:.0f} s")


class Server:
    """A child process in its own process group, pinned with taskset when available."""

    def __init__(self, name: str, argv: list[str], port: int, *, core: str | None = None, env: dict | None = None,
                 cwd: Path | None = None):
        self.name, self.port = name, port
        if core is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", core, *argv]
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log = WORK / "logs" / f"{name}-{port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port, self.proc, timeout, self.log)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._fh.close()

    def rss_kb(self) -> int:
        """Resident memory of the process tree's leader (kB)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wrk(url: str, body: Path, ctype: str, headers: dict[str, str], *, connections: int, seconds: float,
        core: str | None, timeout_s: float = 10.0) -> dict:
    """One wrk run; returns its JSON summary plus req_per_s and error counts."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={int(timeout_s)}s", "--latency",
            "-s", str(WRK_LUA), url]
    if core is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", core, *argv]
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_CTYPE": ctype,
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items())}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary (rc {out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    r = json.loads(line[len("BENCHJSON "):])
    r["req_per_s"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
    r["errors"] = r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["status_errors"] + r["timeouts"]
    return r
