"""Sniff and decode request audio off the event loop, and say when the declared format was wrong."""
from __future__ import annotations

import asyncio

from ..audio.decode import decode
from ..audio.sniff import agrees, sniff
from ..core.types import Audio
from ..providers.base import PreparedAudio


async def prepare(audio: Audio, field: str) -> tuple[PreparedAudio, dict[str, str]]:
    detected = sniff(audio.data)
    audio.detected_format = detected
    headers: dict[str, str] = {}
    if detected:
        headers["X-Audio-Format-Detected"] = detected
    if detected and audio.declared_format and not agrees(audio.declared_format, detected):
        headers["X-Audio-Format-Mismatch"] = f"declared {audio.declared_format}, decoded as {detected}"
    decoded = await asyncio.to_thread(decode, audio.data, audio.declared_format, field=field)
    fmt = detected or decoded.source_format
    return PreparedAudio(audio.data, fmt, decoded.samples, decoded.duration), headers
