"""Helpers for tests that run audiorouter against fakes: write a user catalog, start a gateway process
pointed at it (no local substitution, no preloading, no transcript cache, provider keys only as given), a
client on it that checks the fakes saw only requests the real APIs take, and the checks the provider suites
share (error envelopes, transcripts rendered as text/srt/vtt, secrets kept out of the log).

The fixture helpers are generators, to be the body of a pytest fixture:

    @pytest.fixture(scope="module")
    def gw(fake, tmp_path_factory):
        yield from start_gateway(tmp_path_factory.mktemp("gw-x"), catalog, AR_TEST_KEY=KEY)
"""
from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from conftest import DEV_AUDIO, ServerProcess

from .runner import FakeServer

F = TypeVar("F", bound=FakeServer)
# one attempt per endpoint and no circuit breaker: every request reaches the fake exactly once
ONE_ATTEMPT = {"AUDIOROUTER_RETRY_ATTEMPTS": "1", "AUDIOROUTER_BREAKER_THRESHOLD": "1000000"}
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}
_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)")
_MIME = {"mp3": "audio/mpeg"}

PROVIDER_KEY_ENVS = ("OPENAI_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY", "OPENROUTER_API_KEY", "GOOGLE_API_KEY",
                     "DEEPGRAM_API_KEY", "ELEVENLABS_API_KEY", "GOOGLE_ACCESS_TOKEN")


def write_catalog(path: Path, providers: dict[str, Any], models: list[dict[str, Any]] | None = None) -> Path:
    path.write_text(yaml.safe_dump({"providers": providers, "models": models or []}, sort_keys=False))
    return path


def gateway_env(catalog: Path, tmp: Path, **extra: str) -> dict[str, str]:
    env = dict.fromkeys(PROVIDER_KEY_ENVS, "")
    env.update({
        "AUDIOROUTER_CATALOG": str(catalog),
        "AUDIOROUTER_LOCAL_SUBSTITUTE": "false",
        "AUDIOROUTER_PRELOAD": "false",
        "AUDIOROUTER_CACHE_TTL_S": "0",
        "AUDIOROUTER_DATA_DIR": str(tmp / "data"),
        "AUDIOROUTER_RETRY_BACKOFF_S": "0.05",
        "AUDIOROUTER_RETRY_BACKOFF_MAX_S": "0.2",
    })
    env.update(extra)
    return env


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_attempts(header: str | None) -> list[tuple[str, int]]:
    """X-Route-Attempts "provider:status:ms,..." -> [(provider, status), ...]."""
    out = []
    for item in (header or "").split(","):
        if item:
            provider, status, _ = item.rsplit(":", 2)
            out.append((provider, int(status)))
    return out


def norm(s: str) -> str:
    """Lower case, punctuation dropped, whitespace folded: for comparing transcripts."""
    return " ".join(re.sub(r"[^\w\s']", " ", s.lower()).split())


def row(manifest: list[dict], name: str) -> dict:
    """The dev-audio manifest's entry for a file."""
    return next(r for r in manifest if r["file"] == name)


# ---- fixture bodies ----------------------------------------------------------------------------------------
def serve(fake: F) -> Iterator[F]:
    """The fake, started, and stopped afterwards."""
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def start_gateway(tmp: Path, catalog: dict[str, Any], **env: str) -> Iterator[ServerProcess]:
    """A gateway on the user catalog `catalog` ({"providers": ..., "models": [...]}) with ONE_ATTEMPT and
    `env` (e.g. the env var holding the fake's key), stopped afterwards."""
    path = write_catalog(tmp / "catalog.yaml", catalog.get("providers", {}), catalog.get("models"))
    s = ServerProcess(env=gateway_env(path, tmp, **{**ONE_ATTEMPT, **env}), tmp=tmp).start()
    try:
        yield s
    finally:
        s.stop()


def api_client(gw: ServerProcess, *fakes: FakeServer, timeout: float = 120) -> Iterator[httpx.Client]:
    """A client on the gateway. The fakes forget earlier calls and faults first; afterwards none of them may
    have seen a request the real API would refuse."""
    for f in fakes:
        f.clear()
    with httpx.Client(base_url=gw.url, timeout=timeout) as c:
        yield c
    for f in fakes:
        assert not f.violations, f"{type(f).__name__} saw requests the real API would refuse: {f.violations}"


# ---- requests and shared checks ------------------------------------------------------------------------------
def transcribe(api: httpx.Client, name: str, fmt: str, *, model: str, dialect: str = "openrouter",
               **extra: Any) -> httpx.Response:
    """Transcribe the dev-audio file `name`: OpenRouter's JSON body (base64 input_audio), or with
    dialect="openai" OpenAI's multipart upload (`extra` as form fields)."""
    path = DEV_AUDIO / name
    if dialect == "openrouter":
        return api.post("/api/v1/audio/transcriptions",
                        json={"model": model, "input_audio": {"data": b64(path.read_bytes()), "format": fmt}, **extra})
    with open(path, "rb") as f:
        return api.post("/v1/audio/transcriptions", files={"file": (name, f, _MIME.get(fmt, f"audio/{fmt}"))},
                        data={"model": model, **extra})


def check_error(r: httpx.Response, status: int, *, dialect: str, etype: str | None = None,
                provider: str | None = None, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """An error answer with `status` in the dialect's envelope (OpenRouter's names `provider`; OpenAI's has
    exactly its four fields, of type `etype`), with no secret anywhere in it. Returns the error object."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    for secret in secrets:
        assert secret not in r.text
    err = r.json()["error"]
    if dialect == "openrouter":
        assert err["code"] == status
        if provider is not None:
            assert err["metadata"]["provider_name"] == provider
    else:
        assert set(err) == OPENAI_ERROR_FIELDS
        if etype is not None:
            assert err["type"] == etype
    return err


def check_text_or_subtitles(r: httpx.Response, fmt: str, ref_text: str, duration: float) -> None:
    """A transcript rendered as text, srt or vtt: the reference words, and (subtitles) cues with
    0 <= start <= end within the audio, whose text is the reference."""
    assert r.status_code == 200, r.text
    ref = norm(ref_text)
    if fmt == "text":
        assert norm(r.text) == ref
        return
    if fmt == "vtt":
        assert r.text.startswith("WEBVTT")
    stamps = _CUE.findall(r.text)
    assert stamps
    secs = [(int(a) * 3600 + int(b) * 60 + int(c) + int(d) / 1000, int(e) * 3600 + int(f) * 60 + int(g) + int(h) / 1000)
            for a, b, c, d, e, f, g, h in stamps]
    assert all(0 <= s <= e <= duration + 0.01 for s, e in secs)
    cue_text = [ln for ln in r.text.splitlines() if ln and "-->" not in ln and not ln.isdigit() and ln != "WEBVTT"]
    assert norm(" ".join(cue_text)) == ref


def assert_not_logged(gw: ServerProcess, *secrets: str) -> None:
    log = gw.log_path.read_text(errors="replace")
    for secret in secrets:
        assert secret not in log
