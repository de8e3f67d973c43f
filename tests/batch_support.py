"""Helpers for the batch jobs suites (no tests here): a webhook receiver on 127.0.0.1 that checks signatures the
way docs/deployment.md tells receivers to, short dev clips, and polling."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from conftest import DEV_AUDIO

JOBS = "/api/v1/audio/transcriptions/jobs"
FAKE_WHISPER = "test/fake-whisper"
SECRET = "whsec_test_" + "k" * 24


def short_clips(n: int, max_s: float = 6.0) -> list[tuple[Path, float]]:
    """The n shortest dev clips (path, duration from the manifest)."""
    rows = [json.loads(line) for line in (DEV_AUDIO / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if r["duration_s"] <= max_s and r.get("language") == "en"),
                  key=lambda r: r["duration_s"])
    clips = [(DEV_AUDIO / r["file"], r["duration_s"]) for r in rows]
    while len(clips) < n:  # fewer short English clips than asked: reuse them (each job is still its own)
        clips += clips[: n - len(clips)]
    return clips[:n]


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = 300) -> bool:
    """The receiver's check, as documented: t=<unix>,v1=<hex of HMAC-SHA256(secret, "<t>." + body)>."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    ts = int(parts["t"])
    if abs(time.time() - ts) > tolerance_s:
        return False
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts["v1"])


class WebhookReceiver:
    """Records every POST; answers `status` (changeable) so tests can make deliveries fail."""

    def __init__(self, secret: str = SECRET):
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.status = 200
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    outer.events.append({"headers": dict(self.headers), "body": body,
                                         "json": json.loads(body), "valid": verify_signature(
                                             outer.secret, self.headers.get("Webhook-Signature", "t=0,v1="), body)})
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["json"]["id"] == job_id]

    def close(self) -> None:
        self.server.shutdown()


def submit_json(client: httpx.Client, path: Path, headers: dict[str, str], model: str = "test/priced-whisper",
                **extra: Any) -> httpx.Response:
    data = base64.b64encode(path.read_bytes()).decode()
    return client.post(JOBS, headers=headers, json={"model": model, "input_audio": {"data": data,
                                                                                    "format": path.suffix[1:]}, **extra})


def wait_final(client: httpx.Client, job_ids: list[str], headers: dict[str, str], timeout: float = 300) -> dict[str, dict]:
    out: dict[str, dict] = {}
    deadline = time.time() + timeout
    while time.time() < deadline and len(out) < len(job_ids):
        for jid in job_ids:
            if jid in out:
                continue
            try:
                r = client.get(f"{JOBS}/{jid}", headers=headers)
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and r.json()["status"] in ("succeeded", "failed", "cancelled"):
                out[jid] = r.json()
        time.sleep(0.3)
    missing = [j for j in job_ids if j not in out]
    assert not missing, f"jobs not finished within {timeout} s: {missing}"
    return out


def wait_for(cond, timeout: float = 60, step: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ---- a local S3-compatible server (moto's server mode) -----------------------------------------------------
class MotoS3:
    """moto's S3 server on 127.0.0.1 standing in for the cloud service; skips (fails under CI) without moto."""

    def __init__(self, tmp: Path):
        import os
        import shutil
        import subprocess
        import sys

        from conftest import IN_CI, free_port
        if shutil.which("moto_server", path=str(Path(sys.executable).parent)) is None:
            try:
                import moto.server  # noqa: F401
            except ImportError:
                import pytest
                if IN_CI:
                    pytest.fail("CI=true: moto[server] is not installed (pip install -e '.[test]')")
                pytest.skip("moto[server] is not installed")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}
        self.log = open(tmp / "moto.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        assert wait_for(self._up, 30), (tmp / "moto.log").read_text()[-2000:]

    def _up(self) -> bool:
        try:
            return httpx.get(self.url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
        self.log.close()


def fake_whisper_catalog(base_url: str, price_per_second: float, **endpoint: Any) -> str:
    """A user catalog with one priced transcription model (FAKE_WHISPER) on the OpenAI fake at base_url;
    `endpoint` adds to its endpoint (capabilities, zdr)."""
    import yaml
    caps = {"word_timestamps": True, "prompt": True, **endpoint.pop("capabilities", {})}
    return yaml.safe_dump({
        "providers": {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": base_url,
                                 "api_key_env": "OPENAI_API_KEY"}},
        "models": [{"id": FAKE_WHISPER, "name": "priced fake whisper", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1", "pricing": {"per_second": price_per_second},
             **endpoint, "capabilities": caps}]}]})
