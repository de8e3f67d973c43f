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

    def start(self, timeout: float = 120) -> ServerProcess:
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


# ---- `slow`: what `make test-fast` leaves out (CI and `make test` run everything) ---------------------------
# Whole modules whose every test needs minutes of CPU on a 2-core machine, or a browser, another process
# family, or long audio. Single slow tests elsewhere carry @pytest.mark.slow themselves. Measure with
# `pytest -m "not slow" --durations=30` before adding or removing one.
SLOW_MODULES = {
    "test_soak.py": "minutes of mixed traffic under injected faults, per database backend",
    "test_web.py": "a real browser (chromium through playwright)",
    "test_accuracy.py": "WER of the local Whisper over the dev set, and a TTS -> STT round trip",
    "test_replicas.py": "two gateways sharing PostgreSQL and Redis",
    "test_chat_local.py": "the offline voice-chat cascade: Whisper, a local LLM and hibari per request",
    "test_chunk_memory.py": "long audio: memory of chunked transcription, VAD cut points",
    "test_lying_audio.py": "hours of audio behind a header that claims seconds",
    "test_backpressure.py": "fills the local inference pool with real jobs",
    "test_fuzz_parsers.py": "hypothesis: hundreds of bodies per property (3.5 min measured on a busy 2-core box)",
    "test_fuzz_api.py": "schemathesis over every route",
    "test_seed_examples.py": "the published client programs (bash + curl + jq, SDKs) as real processes",
    "test_batch_workers.py": "worker processes, PostgreSQL, Redis and an S3 server",
}


# Single tests measured at 15 s or more (`--durations`, 2 cores shared with other work: about 5x an idle box)
SLOW_TESTS = {
    "test_keys.py::test_non_loopback_without_auth_refuses_to_start_unless_forced": 84,  # starts 4 servers
    "test_keys.py::test_no_keys_serves_loopback_without_a_key": 41,
    "test_keys.py::test_require_auth_without_any_key": 37,
    "test_keys.py::test_start_sweeps_nothing_it_should_not": 31,  # per backend: a restart over the same store
    "test_parsing_multipart.py::test_fuzz_same_answer_as_starlettes_parser": 20,
    "test_parsing_stream.py::test_streamed_equals_whole_body": 20,
    "test_speech.py::test_streaming_first_bytes_leave_before_synthesis_ends": 17,
    "test_speech.py::test_round_trip_through_whisper": 15,
    "test_streaming.py::test_chunked_long_audio_streams_in_order": 56,  # long audio
    "test_streaming.py::test_local_stream_segment_by_segment": 24,
    "test_subtitles.py::test_srt_over_http": 25,  # per clip: the local Whisper over HTTP
    "test_cli_jobs.py::test_cli_transcribe_chunks_long_audio_and_uses_the_cache": 19,
    "test_ledger.py::test_sigkill_during_transcription_then_the_sweeper_releases_the_reservation": 19,
    "test_ledger.py::test_sigkill_mid_request_leaves_an_incomplete_row": 19,
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        test = f"{item.path.name}::{item.originalname}"
        if item.path.name in SLOW_MODULES or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
