"""Tell the real container/codec of audio bytes from their first bytes, whatever the client declared."""
from __future__ import annotations

# Names the client may use for the same thing, mapped to one canonical name.
ALIASES = {
    "wave": "wav", "x-wav": "wav", "mpeg": "mp3", "mpga": "mp3", "mp4a": "m4a", "x-m4a": "m4a",
    "oga": "ogg", "vorbis": "ogg", "aif": "aiff", "aifc": "aiff", "x-flac": "flac", "s16le": "pcm",
    "pcm16": "pcm", "raw": "pcm", "wma": "asf",
}
INPUT_FORMATS = ("wav", "mp3", "flac", "m4a", "mp4", "ogg", "opus", "webm", "aac", "pcm", "aiff", "asf", "amr", "mpeg", "mpga")


def canonical(fmt: str | None) -> str | None:
    if not fmt:
        return None
    f = fmt.strip().lower().removeprefix("audio/").removeprefix(".")
    return ALIASES.get(f, f)


def _mp3_frame(b: bytes, i: int = 0) -> bool:
    return len(b) > i + 2 and b[i] == 0xFF and (b[i + 1] & 0xE0) == 0xE0 and (b[i + 1] & 0x06) != 0


def _adts(b: bytes) -> bool:
    return len(b) > 2 and b[0] == 0xFF and (b[1] & 0xF6) == 0xF0


def sniff(data: bytes) -> str | None:
    """Canonical format name, or None when the bytes carry no known signature (e.g. headerless PCM)."""
    head = data[:64]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        first_page = data[:512]
        if b"OpusHead" in first_page:
            return "opus"
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "m4a" if brand in (b"M4A ", b"M4B ") else "mp4"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "asf"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:3] == b"ID3":
        return "mp3"
    if _adts(head):
        return "aac"
    if _mp3_frame(head):
        return "mp3"
    return None


# Formats that decode the same way: a declared "m4a" holding an mp4 container is not a mismatch.
_SAME = [{"m4a", "mp4"}, {"ogg", "opus"}, {"mp3", "mpeg", "mpga"}]


def agrees(declared: str | None, detected: str | None) -> bool:
    if not declared or not detected or declared == detected:
        return True
    return any(declared in s and detected in s for s in _SAME)
