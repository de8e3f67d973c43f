"""Convert synthesized audio from the format a provider produced into the one the client asked for.
Raw PCM converts chunk by chunk (streaming); a compressed source is decoded once complete."""
from __future__ import annotations

import io
from collections.abc import AsyncIterator

import av
import numpy as np

from .encode import StreamEncoder


def decode_native(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any container to float32 mono at its own sample rate."""
    with av.open(io.BytesIO(data), mode="r") as c:
        stream = c.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = [f.to_ndarray().reshape(-1) for frame in c.decode(stream) for f in resampler.resample(frame)]
        parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), rate


async def transcode_stream(chunks: AsyncIterator[bytes], src: str, rate: int, dst: str) -> AsyncIterator[bytes]:
    if src == "pcm":
        enc = StreamEncoder(dst, rate)
        carry = b""
        async for chunk in chunks:
            if not chunk:
                continue
            chunk = carry + chunk
            cut = len(chunk) - (len(chunk) % 2)
            carry = chunk[cut:]
            samples = np.frombuffer(chunk[:cut], dtype="<i2").astype(np.float32) / 32768.0
            out = enc.feed(samples)
            if out:
                yield out
        tail = enc.close()
        if tail:
            yield tail
        return
    buf = bytearray()
    async for chunk in chunks:
        if chunk:
            buf += chunk
    if not buf:  # the provider sent no audio: an empty but well-formed file of the asked format
        tail = StreamEncoder(dst, rate).close()
        if tail:
            yield tail
        return
    samples, native = decode_native(bytes(buf))
    enc = StreamEncoder(dst, native)
    yield enc.feed(samples) + enc.close()
