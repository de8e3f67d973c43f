"""The CLI is no second pipeline: `audiorouter transcribe` and `audiorouter speak` go through the same use
cases as the API (jobs/transcription.py, jobs/speech.py): long audio is cut into chunks that fit the endpoint,
the transcript cache answers a repeated file without a new upstream call, and text over an endpoint's
max_characters is split into several requests whose audio is joined. The upstream is the strict OpenAI fake."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audio_factory import load_clip, make_audio
from conftest import DEV_AUDIO
from fakes.harness import gateway_env, write_catalog
from fakes.openai_fake import OpenAIFake
from fakes.runner import probe

ROOT = Path(__file__).resolve().parent.parent
JFK = DEV_AUDIO / "jfk_inaugural_excerpt.flac"


@pytest.fixture(scope="module")
def fake():
    f = OpenAIFake().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def env(fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-jobs")
    providers = {"openai": {"name": "OpenAI", "adapter": "openai", "base_url": fake.base_url,
                            "api_key_env": "OPENAI_API_KEY"}}
    models = [
        {"id": "test/whisper-30s", "name": "Whisper with a 30 s limit", "kind": "transcription",
         "endpoints": [{"provider": "openai", "upstream_model": "whisper-1", "limits": {"max_seconds": 30},
                        "capabilities": {"word_timestamps": True, "prompt": True}}]},
        {"id": "test/tts-short", "name": "TTS with an 80-character limit", "kind": "speech", "voices": ["alloy"],
         "endpoints": [{"provider": "openai", "upstream_model": "tts-1",
                        "output_formats": ["mp3", "opus", "aac", "flac", "wav", "pcm"],
                        "limits": {"max_characters": 80}}]},
    ]
    cat = write_catalog(tmp / "catalog.yaml", providers, models)
    e = gateway_env(cat, tmp, OPENAI_API_KEY=fake.api_key, AUDIOROUTER_CACHE_TTL_S="3600",
                    AUDIOROUTER_CACHE_DIR=str(tmp / "cache"))
    base = {k: v for k, v in os.environ.items()
            if not (k.startswith("AUDIOROUTER_") or k.endswith("_API_KEY") or k == "GOOGLE_ACCESS_TOKEN")}
    return {**base, **e}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiorouter.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_cli_transcribe_chunks_long_audio_and_uses_the_cache(env, fake, tmp_path):
    fake.clear()
    long = tmp_path / "long.flac"
    long.write_bytes(make_audio(np.concatenate([load_clip(JFK)] * 7), "flac"))  # 77 s: 3 chunks of <= 30 s
    r = cli(env, "transcribe", str(long), "-m", "test/whisper-30s", "-f", "verbose_json")
    assert r.returncode == 0, r.stderr
    calls = [c for c in fake.calls if c.path.endswith("/audio/transcriptions")]
    assert len(calls) >= 3, len(calls)
    assert all(probe(c.files["file"][2]).duration <= 30.0 for c in calls)
    assert not fake.violations, fake.violations
    first = r.stdout
    assert '"duration"' in first
    # the same file again: served from the transcript cache, no upstream call
    fake.clear()
    again = cli(env, "transcribe", str(long), "-m", "test/whisper-30s", "-f", "verbose_json")
    assert again.returncode == 0, again.stderr
    assert not fake.calls
    assert again.stdout == first
    # --no-cache goes upstream again
    fake.clear()
    fresh = cli(env, "transcribe", "--no-cache", str(long), "-m", "test/whisper-30s", "-f", "text")
    assert fresh.returncode == 0, fresh.stderr
    assert len(fake.calls) >= 3


def test_cli_speak_splits_text_over_the_limit(env, fake, tmp_path):
    fake.clear()
    sentence = "This sentence is here to make the text longer than one request takes. "
    text = (sentence * 3).strip()  # 212 characters: 3 requests of <= 80
    out = tmp_path / "out.wav"
    r = cli(env, "speak", text, "-m", "test/tts-short", "-v", "alloy", "-o", str(out))
    assert r.returncode == 0, r.stderr
    calls = [c for c in fake.calls if c.path.endswith("/audio/speech")]
    assert len(calls) == 3 and all(len(c.json["input"]) <= 80 for c in calls)
    assert " ".join(c.json["input"] for c in calls) == text
    assert not fake.violations, fake.violations
    info = probe(out.read_bytes())
    assert info.duration > 0
