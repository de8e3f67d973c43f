"""The dev-set clips the benchmark uses (../shared/audio/dev, never the hold-out set) and test payloads made
from them."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV = Path(os.environ.get("AUDIOROUTER_DEV_AUDIO", ROOT.parent / "shared" / "audio" / "dev"))


def manifest() -> list[dict]:
    with open(DEV / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def english_exact(limit: int = 0) -> list[dict]:
    """English clips whose reference transcript is exact, in manifest order."""
    rows = [r for r in manifest() if r.get("language") == "en" and r.get("reference_quality") == "exact"]
    return rows[:limit] if limit else rows


def load_samples(row: dict) -> np.ndarray:
    """16 kHz mono float32, decoded with the product's own decoder."""
    from audiorouter.audio.decode import decode
    return decode((DEV / row["file"]).read_bytes(), row.get("container")).samples


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2,
                       16, b"data", len(pcm)) + pcm


def ten_second_wav() -> bytes:
    """A 10.0 s, 16 kHz, mono, 16-bit WAV of real speech (the longest dev clip, cut)."""
    rows = sorted(english_exact(), key=lambda r: -r["duration_s"])
    x = load_samples(rows[0])[:160000]
    if x.size < 160000:
        x = np.pad(x, (0, 160000 - x.size))
    return wav_bytes(x)


def long_wav(seconds: float) -> bytes:
    """Speech clips laid end to end (looping) into one WAV of about `seconds` (the big-payload test)."""
    parts, n = [], 0
    target = int(seconds * 16000)
    rows = english_exact()
    i = 0
    while n < target:
        x = load_samples(rows[i % len(rows)])
        parts.append(x)
        n += x.size
        i += 1
    return wav_bytes(np.concatenate(parts)[:target])


