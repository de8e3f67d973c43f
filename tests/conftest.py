"""Shared fixtures. Tests talk to real servers over HTTP: `server` is an audiorouter process started once
per session on a free port (local engines, no keys, no network)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEV_AUDIO = SHARED / "audio" / "dev"


IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tools(*tools: str) -> None:
    """Skips the test when a program it runs is not installed, except under CI=true (`make test` installs
    them: scripts/sysdeps.sh), where a missing tool is a failure, not a silent skip."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (scripts/sysdeps.sh installs it)"
        if IN_CI:
            pytest.fail(f"CI=true: {why}")
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, env: dict[str, str] | None = None, args: list[str] | None = None, tmp: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A developer's own provider keys or settings must not leak into test servers: they would reach real
        # providers (tests never touch the internet) or change behaviour.
        base = {k: v for k, v in os.environ.items()
                if not (k.endswith("_API_KEY") or k.startswith("AUDIOROUTER_") or k == "GOOGLE_ACCESS_TOKEN")}
        # Each test server gets its own data dir (SQLite ledger, keys) unless the test shares one on purpose.
        data_dir = tempfile.mkdtemp(prefix="audiorouter-data-", dir=tmp)
        self.env = {**base, "AUDIOROUTER_CACHE_DIR": str(Path.home() / ".cache" / "audiorouter"),
                    "AUDIOROUTER_DATA_DIR": data_dir,
                    # and its own transcript cache, so no test is answered from another test's cache
                    "AUDIOROUTER_CACHE_PATH": os.path.join(data_dir, "transcripts.db"), **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = (tmp or Path("/tmp")) / f"audiorouter-{self.port}.log"

    def start(self, timeout: float = 120) -> "ServerProcess":
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(self.port), *self.args],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> ServerProcess:
    s = ServerProcess(tmp=tmp_path_factory.mktemp("server")).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def manifest() -> list[dict]:
    with open(DEV_AUDIO / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
