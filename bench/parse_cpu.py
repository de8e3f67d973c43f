"""CPU per request of the request-body parsing, in-process: an ASGI receive() that hands the body over in
64 KiB messages (as uvicorn does), then the same calls the transcription route makes. Typical payloads: a
10 s 16 kHz mono WAV as OpenRouter JSON (base64, ~430 KB) and as an OpenAI multipart upload (~320 KB).

    python bench/parse_cpu.py [--n 2000]"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))

CHUNK = 65536
LIMIT = 100 * 1024 * 1024


def payloads(wav: bytes) -> dict[str, tuple[bytes, str]]:
    j = json.dumps({"model": "openai/whisper-1", "input_audio": {"data": base64.b64encode(wav).decode(),
                                                                  "format": "wav"}, "language": "en"}).encode()
    boundary = "----audiorouterbench7MA4YWxkTrZu0gW"
    parts = []
    for k, v in (("model", "whisper-1"), ("language", "en"), ("response_format", "json")):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="speech.wav"\r\n'
                 f'Content-Type: audio/wav\r\n\r\n'.encode() + wav + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    m = b"".join(parts)
    return {"json": (j, "application/json"), "multipart": (m, f"multipart/form-data; boundary={boundary}")}


def request(body: bytes, ctype: str):
    from asgi_request import chunked_request  # tests/asgi_request.py: the body in uvicorn-sized messages
    return chunked_request(body, ctype, CHUNK)


async def parse_once(kind: str, body: bytes, ctype: str):
    from audiorouter.api import parsing
    req = request(body, ctype)
    if kind == "json":
        if hasattr(parsing, "read_json"):
            return parsing.transcription_from_json(await parsing.read_json(req, LIMIT), "transcribe")
        return parsing.transcription_from_json(parsing.parse_json(await parsing.read_body(req, LIMIT, audio=True)), "transcribe")
    return await parsing.transcription_from_form(req, "transcribe", LIMIT)


def measure(kind: str, body: bytes, ctype: str, n: int) -> list[float]:
    async def go():
        for _ in range(20):
            await parse_once(kind, body, ctype)
        times = []
        for _ in range(n):
            t0 = time.process_time()
            r = await parse_once(kind, body, ctype)
            times.append(time.process_time() - t0)
            assert len(r.audio.data) > 300000
        return times
    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from clips import ten_second_wav
    wav = ten_second_wav()
    res = {}
    for kind, (body, ctype) in payloads(wav).items():
        per_round = []
        for _ in range(args.rounds):
            t = measure(kind, body, ctype, args.n // args.rounds)
            per_round.append(sum(t) / len(t) * 1000)
        res[kind] = {"bytes": len(body), "ms_median_of_rounds": statistics.median(per_round),
                     "ms_min": min(per_round), "ms_max": max(per_round)}
        print(f"{kind:9s} {len(body):7d} B  {statistics.median(per_round):.3f} ms/request "
              f"({min(per_round):.3f}-{max(per_round):.3f})", flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
