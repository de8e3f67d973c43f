"""In-process Whisper measurements (no HTTP): plain faster-whisper in a loop (the baseline) and audiorouter's
engine one request at a time and N concurrent. Run as a child process so each mode gets a fresh model and a
clean RSS:  python bench/stt_inproc.py MODE [--clips N] [--concurrency C]  -> one JSON line on stdout."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clips import english_exact, load_samples  # noqa: E402
from textnorm import pooled_wer  # noqa: E402

PREVIOUS_COMMIT = "7b32ce4"


def previous_engine():
    """WhisperEngine from the first commit (read with `git show`, nothing in the work tree changes)."""
    import importlib.util
    import subprocess
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{PREVIOUS_COMMIT}:src/audiorouter/providers/local_whisper.py"],
                         capture_output=True, text=True, check=True).stdout
    src = src.replace("from ..core.types import", "from audiorouter.core.types import")
    path = ROOT / "bench" / ".work" / "previous_local_whisper.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("previous_local_whisper", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.WhisperEngine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["baseline", "engine", "previous"])
    ap.add_argument("--clips", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    clips = english_exact(a.clips)
    audio = [load_samples(c) for c in clips]
    total_s = sum(len(x) / 16000 for x in audio)
    from audiorouter.config import default_cache_dir
    from audiorouter.providers.whisper_weights import ensure_whisper_base
    model_dir = ensure_whisper_base(Path(os.environ.get("AUDIOROUTER_CACHE_DIR") or default_cache_dir()))

    if a.mode == "baseline":
        from faster_whisper import WhisperModel
        model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=a.threads,
                             local_files_only=True)

        def one(x):
            segs, _ = model.transcribe(x, beam_size=5)
            return "".join(s.text for s in segs).strip()
        one(audio[0][:16000 * 3])  # warm-up
    elif a.mode == "previous":
        # the engine as first committed (7b32ce4): `workers` sequential decodes, one CPU thread each
        engine = previous_engine()(model_dir, max(a.threads, a.concurrency), 5)
        engine.load()

        def one(x):
            return engine.transcribe(x).text
        one(audio[0][:16000 * 3])
    else:
        from audiorouter.providers.local_whisper import WhisperEngine
        engine = WhisperEngine(model_dir, workers=a.concurrency, beam_size=5, batch_size=a.batch, threads=a.threads)
        engine.load()

        def one(x):
            return engine.transcribe(x).text
        one(audio[0][:16000 * 3])
        engine.batches = engine.windows = 0

    t0, c0 = time.perf_counter(), time.process_time()
    if a.concurrency <= 1:
        hyps = [one(x) for x in audio]
    else:
        with ThreadPoolExecutor(a.concurrency) as ex:
            hyps = list(ex.map(one, audio))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    out = {"mode": a.mode, "concurrency": a.concurrency, "clips": len(clips), "audio_s": round(total_s, 2),
           "wall_s": round(wall, 3), "x_rt": total_s / wall, "cpu_s": round(cpu, 2),
           "audio_s_per_cpu_s": total_s / cpu if cpu else None,
           "wer": pooled_wer([(c["text"], h) for c, h in zip(clips, hyps)])}
    if a.mode == "engine":
        out["batches"], out["windows"] = engine.batches, engine.windows
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
