"""Peak memory of a long transcription through the API.

Builds a long file (default 60 minutes) by concatenating English dev clips (../shared/audio/dev) with short
silences, encodes it (FLAC 16 kHz mono by default), starts an audiorouter server (local engine), warms it
up with one short request, resets the kernel's peak-RSS counter of the server process
(/proc/<pid>/clear_refs), sends the long file (multipart by default, or JSON base64) and reads the server's
peak RSS (VmHWM) afterwards. Also samples VmRSS twice a second for the timeline.

    .venv/bin/python bench/longform_memory.py                       # 60 min, multipart FLAC
    .venv/bin/python bench/longform_memory.py --minutes 20 --json   # JSON base64 body
    .venv/bin/python bench/longform_memory.py --chunk-seconds 0     # no chunking, for comparison

Prints one JSON object (and writes it to bench/.work/longform_memory.json): duration, wall time, real-time
factor, RSS after warm-up, peak RSS during the request, growth, chunks, and a WER of the long transcript
against the joined references (a sanity check that the whole hour was transcribed)."""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV = Path(os.environ.get("AUDIOROUTER_DEV_AUDIO", ROOT.parent / "shared" / "audio" / "dev"))
WORK = ROOT / "bench" / ".work"
RATE = 16000


def clips() -> list[dict]:
    with open(DEV / "manifest.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r.get("language") == "en" and r.get("reference_quality") == "exact"
            and not r["file"].startswith("long_concat")]


def load(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)]
        parts += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(parts)


def encode(samples: np.ndarray, fmt: str) -> bytes:
    container, codec = {"flac": ("flac", "flac"), "mp3": ("mp3", "libmp3lame"), "wav": ("wav", "pcm_s16le")}[fmt]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        st = out.add_stream(codec, rate=RATE, layout="mono")
        if fmt == "mp3":
            st.bit_rate = 48000
        step = RATE * 30
        pts = 0
        for i in range(0, len(samples), step):
            pcm = (np.clip(samples[i:i + step], -1, 1) * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = RATE
            frame.pts = pts
            pts += pcm.shape[1]
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return buf.getvalue()


def build(minutes: float, fmt: str) -> tuple[bytes, float, str]:
    """(file bytes, seconds, joined reference) of at least `minutes` of speech made from dev clips."""
    rows = clips()
    gap = np.zeros(int(0.5 * RATE), np.float32)
    decoded = [(load(DEV / r["file"]), r["text"]) for r in rows]
    want = int(minutes * 60 * RATE)
    total = np.zeros(want + RATE * 40, np.float32)  # filled in place: no list of copies
    n, refs, i = 0, [], 0
    while n < want:
        s, text = decoded[i % len(decoded)]
        total[n:n + len(s)] = s[:len(total) - n]
        n = min(len(total), n + len(s) + len(gap))
        refs.append(text)
        i += 1
    samples = total[:n]
    return encode(samples, fmt), n / RATE, " ".join(refs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--format", default="flac", choices=["flac", "mp3", "wav"])
    ap.add_argument("--json", action="store_true", help="send JSON base64 instead of multipart")
    ap.add_argument("--chunk-seconds", type=float, default=None, help="AUDIOROUTER_CHUNK_SECONDS for the server")
    ap.add_argument("--response-format", default="json")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    data, seconds, reference = build(args.minutes, args.format)
    print(f"built {seconds / 60:.1f} min of {args.format}: {len(data) / 1e6:.1f} MB in {time.time() - t0:.0f} s",
          file=sys.stderr)

    port = free_port()
    env = {**os.environ, "AUDIOROUTER_CACHE_TTL_S": "0", "AUDIOROUTER_DATA_DIR": str(WORK / "longform-data"),
           "AUDIOROUTER_MAX_BODY_BYTES": str(max(100 * 1024 * 1024, 2 * len(data)))}
    if args.chunk_seconds is not None:
        env["AUDIOROUTER_CHUNK_SECONDS"] = str(args.chunk_seconds)
    log = open(WORK / "longform_memory_server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "audiorouter.cli", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("server did not start; see bench/.work/longform_memory_server.log")
            time.sleep(0.3)
        warm = (DEV / "jfk_inaugural_excerpt.flac").read_bytes()
        httpx.post(url + "/v1/audio/transcriptions", files={"file": ("w.flac", warm, "audio/flac")},
                   data={"model": "local/whisper-base"}, timeout=300).raise_for_status()
        time.sleep(1.0)
        base = status(proc.pid)["VmRSS"]
        with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS

        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.append((time.time(), status(proc.pid)["VmRSS"]))
                except OSError:
                    return
                stop.wait(0.5)

        threading.Thread(target=sample, daemon=True).start()
        t1 = time.time()
        if args.json:
            body = {"model": "local/whisper-base", "response_format": args.response_format,
                    "input_audio": {"data": base64.b64encode(data).decode(), "format": args.format}}
            r = httpx.post(url + "/api/v1/audio/transcriptions", json=body, timeout=7200)
            del body
        else:
            r = httpx.post(url + "/v1/audio/transcriptions", timeout=7200,
                           files={"file": (f"long.{args.format}", data, f"audio/{args.format}")},
                           data={"model": "local/whisper-base", "response_format": args.response_format})
        wall = time.time() - t1
        stop.set()
        peak = status(proc.pid)["VmHWM"]
        if r.status_code != 200:
            raise SystemExit(f"transcription failed: {r.status_code} {r.text[:500]}")
        text = r.json()["text"] if args.response_format.endswith("json") else r.text
        result = {
            "audio_minutes": round(seconds / 60, 2), "format": args.format, "bytes": len(data),
            "input": "json-base64" if args.json else "multipart",
            "chunk_seconds": args.chunk_seconds, "chunks": r.headers.get("x-chunks"),
            "wall_s": round(wall, 1), "x_realtime": round(seconds / wall, 1),
            "rss_after_warmup_mb": round(base / 2**20, 1), "peak_rss_mb": round(peak / 2**20, 1),
            "peak_growth_mb": round((peak - base) / 2**20, 1),
            "rss_timeline_mb": [round(v / 2**20) for _, v in samples[:: max(1, len(samples) // 40)]],
        }
        try:
            sys.path.insert(0, str(ROOT / "tests"))
            from wer import wer
            result["wer_vs_joined_references"] = round(wer([reference], [text]).wer, 4)
        except ImportError:
            pass
        print(json.dumps(result, indent=2))
        (WORK / "longform_memory.json").write_text(json.dumps(result, indent=2))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    main()
