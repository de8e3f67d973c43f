"""Local TTS time to first body byte over HTTP: starts the server (like bench/local_engines.py), then for each
text and format POSTs /api/v1/audio/speech `reps` times (after one warm-up each) and prints median, min and
max of the first-byte time, the total time and x real-time (pcm), with the machine's load average.

    .venv/bin/python bench/tts_ttfb.py [--reps 15] [--formats pcm,wav,mp3,opus] [--texts quick3,museum3,quick5]
    .venv/bin/python bench/tts_ttfb.py --baseline-src /path/to/other/src   # before/after, interleaved

With --baseline-src a second server runs that source tree (PYTHONPATH) and the requests alternate between
the two, so a noisy neighbour on the shared machine hurts both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_engines import TTS_TEXT, local_server
from local_engines import speak_timed as once

TEXTS = {
    # the text of the issue (3 sentences, 122 characters)
    "quick3": "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
              "How vexingly quick daft zebras jump!",
    # bench/local_engines.py's text (3 sentences, 150 characters)
    "museum3": TTS_TEXT,
    # 5 sentences, the first a long one with a comma
    "quick5": "The quick brown fox, who had been waiting all morning by the river, jumps over the lazy dog. "
              "Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump! "
              "Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly.",
}


def stats(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.1f} ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--formats", default="pcm,wav,mp3,opus")
    ap.add_argument("--texts", default="quick3,museum3,quick5")
    ap.add_argument("--new-client", action="store_true", help="a new connection per request, like local_engines.py")
    ap.add_argument("--url", help="measure a running server instead of starting one")
    ap.add_argument("--baseline-src", help="also start a server from this source tree and alternate with it")
    ap.add_argument("--json", help="write the raw measurements here")
    args = ap.parse_args()
    formats, texts = args.formats.split(","), args.texts.split(",")
    servers, urls = [], {}
    try:
        if args.url:
            urls["current"] = args.url
        else:
            srv = local_server()
            servers.append(srv.start(300))
            urls["current"] = f"http://127.0.0.1:{srv.port}"
        if args.baseline_src:
            env = {"PYTHONPATH": str(Path(args.baseline_src).resolve())}
            base = local_server(env)
            base.name = "audiorouter-local-baseline"
            servers.append(base.start(300))
            urls["baseline"] = f"http://127.0.0.1:{base.port}"
        clients = {k: httpx.Client(timeout=120) for k in urls}
        for k, url in urls.items():
            for name in texts:
                for fmt in formats:
                    once(clients[k], url, TEXTS[name], fmt)  # warm-up
        loads = [os.getloadavg()[0]]
        res: dict = {}
        for _ in range(args.reps):  # interleaved, so a noisy neighbour hurts every cell alike
            for name in texts:
                for fmt in formats:
                    for k, url in urls.items():
                        c = httpx.Client(timeout=120) if args.new_client else clients[k]
                        res.setdefault((k, name, fmt), []).append(once(c, url, TEXTS[name], fmt))
                        if args.new_client:
                            c.close()
            loads.append(os.getloadavg()[0])
        for c in clients.values():
            c.close()
        print(f"load average (1 min) during the run: {min(loads):.2f}-{max(loads):.2f}; {os.cpu_count()} CPUs")
        print(f"{'server':9} {'text':8} {'fmt':5} {'ttfb ms median (min-max)':26} {'total ms':24} x RT (pcm)")
        for name in texts:
            for fmt in formats:
                for k in urls:
                    rs = res[(k, name, fmt)]
                    xrt = ""
                    if fmt == "pcm":
                        xrt = stats([r["bytes"] / 48000 / (r["total_ms"] / 1000) for r in rs])
                    print(f"{k:9} {name:8} {fmt:5} {stats([r['ttfb_ms'] for r in rs]):26} "
                          f"{stats([r['total_ms'] for r in rs]):24} {xrt}")
        if args.json:
            Path(args.json).write_text(json.dumps({"loads": loads, "results": [
                {"server": k, "text": n, "format": f, "runs": v} for (k, n, f), v in res.items()]}, indent=1))
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
