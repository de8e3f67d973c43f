"""Text helpers shared by the speech paths (routing, providers, local engine) and subtitles."""
from __future__ import annotations

from typing import Iterable


def pack(units: Iterable[str], limit: int) -> list[str]:
    """Consecutive units joined by single spaces into pieces of at most `limit` characters, greedily; a unit
    longer than the limit stands alone (the caller cuts it first if it must)."""
    pieces: list[str] = []
    cur = ""
    for u in units:
        if cur and len(cur) + 1 + len(u) > limit:
            pieces.append(cur)
            cur = u
        else:
            cur = f"{cur} {u}" if cur else u
    if cur:
        pieces.append(cur)
    return pieces
