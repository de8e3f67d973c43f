"""Text helpers shared by the speech paths (the speech job, the local engine), subtitles and secret
scrubbing."""
from __future__ import annotations

import re
from collections.abc import Iterable


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


_SENTENCE = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+|\n+")
_CLAUSE = re.compile(r"(?<=[,;:—–])\s+")


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at sentence ends, else at clause punctuation, else
    between words (a single word longer than the limit is cut as it is). The one text splitter: text longer
    than an endpoint takes is split with it (jobs/speech.py)."""
    limit = max(1, limit)
    units: list[str] = []
    for sent in _SENTENCE.split(text):
        sent = sent.strip()
        if not sent:
            continue
        if len(sent) <= limit:
            units.append(sent)
            continue
        for clause in _CLAUSE.split(sent):
            if len(clause) <= limit:
                units.append(clause)
                continue
            words: list[str] = []
            for word in clause.split():  # a word longer than the limit is cut as it is
                words += [word[i:i + limit] for i in range(0, len(word), limit)]
            units += pack(words, limit)
    return pack(units, limit)


MIN_SECRET_CHARS = 4  # shorter values are not scrubbed (they would mangle ordinary words), nor shorter fragments


def redact(text: str, secrets: Iterable[str | None], limit: int | None = None, *, edges: bool = True) -> str:
    """`text` with every secret (of MIN_SECRET_CHARS or more) replaced by ***, then cut to `limit`
    characters. Also replaced: a fragment of a secret that someone else's cut left at either end of the text
    (the text ends with the secret's first 4+ characters, or begins with its last 4+). The cut happens after
    the scrub, and the end is checked again after it, so no cut ever leaves part of a secret behind.
    `edges=False` skips the fragment check at the ends, for text whose ends are our own words (a message we
    composed around upstream text that was already redacted): a provider named like the tail of its key
    must not turn into ***."""
    keep = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
    text = _redact(text, keep, edges)
    if limit is not None and len(text) > limit:
        text = _redact(text[:limit], keep, True)
    return text


def _redact(text: str, secrets: list[str], edges: bool) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
        if not edges:
            continue
        for n in range(min(len(s) - 1, len(text)), MIN_SECRET_CHARS - 1, -1):
            if text.endswith(s[:n]):
                text = text[:-n] + "***"
                break
        for n in range(min(len(s) - 1, len(text)), MIN_SECRET_CHARS - 1, -1):
            if text.startswith(s[-n:]):
                text = "***" + text[n:]
                break
    return text
