"""Tell the real container/codec of audio bytes from their first bytes, whatever the client declared.

Two kinds of evidence: a *signature* (a magic header: RIFF/WAVE, fLaC, OggS, EBML, ftyp, FORM, ASF, ID3,
#!AMR, caff) is certain; a *frame sync* (a raw MPEG audio or ADTS stream with no header) is only believed
when several frames in a row parse and chain exactly, so random bytes or raw PCM are not taken for mp3."""
from __future__ import annotations

# Names the client may use for the same thing (file extensions, MIME subtypes), mapped to one canonical name.
ALIASES = {
    "wave": "wav", "vnd.wave": "wav", "vnd.wav": "wav", "wav64": "wav", "rf64": "wav", "bwf": "wav",
    "mpeg": "mp3", "mpga": "mp3", "mpeg3": "mp3", "mp2": "mp3", "mpa": "mp3",
    "mp4a": "m4a", "m4b": "m4a", "m4p": "m4a", "mp4a-latm": "m4a", "3gp": "mp4", "3gpp": "mp4", "3g2": "mp4",
    "mov": "mp4", "quicktime": "mp4",
    "oga": "ogg", "vorbis": "ogg", "spx": "ogg", "speex": "ogg",
    "weba": "webm", "mkv": "webm", "mka": "webm", "matroska": "webm",
    "aif": "aiff", "aifc": "aiff", "adts": "aac", "aacp": "aac",
    "s16le": "pcm", "pcm16": "pcm", "pcm_s16le": "pcm", "raw": "pcm", "l16": "pcm",
    "wma": "asf", "wmv": "asf", "3ga": "amr", "caff": "caf",
}
# Formats the gateway decodes (the declared `format` may name any of these).
INPUT_FORMATS = ("wav", "mp3", "flac", "m4a", "mp4", "ogg", "opus", "webm", "aac", "pcm", "aiff", "asf", "amr",
                 "caf")
# Formats that decode the same way: a declared "m4a" holding an mp4 container is not a mismatch.
_SAME = [{"m4a", "mp4"}, {"ogg", "opus"}]


def canonical(fmt: str | None) -> str | None:
    """'audio/x-wav', '.WAV', 'audio/ogg; codecs=opus' -> 'wav', 'wav', 'ogg'. None for nothing."""
    if not fmt or not isinstance(fmt, str):
        return None
    f = fmt.strip().lower().split(";", 1)[0].strip()
    for prefix in ("audio/", "video/", "application/"):
        f = f.removeprefix(prefix)
    f = f.removeprefix(".").removeprefix("x-")
    if not f:
        return None
    return ALIASES.get(f, f)


def known(fmt: str | None) -> bool:
    return fmt in INPUT_FORMATS


# ---- frame-sync formats -------------------------------------------------------------------------------
_MP3_BITRATES = {  # kbps by (version is MPEG-1, layer) and index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version id


def mp3_frame_length(b: bytes, i: int) -> int:
    """Length of the MPEG audio frame whose header starts at b[i], or 0 if there is no valid header."""
    if i + 4 > len(b) or b[i] != 0xFF or (b[i + 1] & 0xE0) != 0xE0:
        return 0
    version = (b[i + 1] >> 3) & 0x03   # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5, 1 reserved
    layer_bits = (b[i + 1] >> 1) & 0x03  # 3 = layer I, 2 = II, 1 = III, 0 reserved
    bitrate_idx = (b[i + 2] >> 4) & 0x0F
    rate_idx = (b[i + 2] >> 2) & 0x03
    padding = (b[i + 2] >> 1) & 0x01
    if version == 1 or layer_bits == 0 or bitrate_idx in (0, 15) or rate_idx == 3:
        return 0
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_idx - 1] * 1000
    rate = _MP3_RATES[version][rate_idx]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + padding
    return 144 * bitrate // rate + padding


def adts_frame_length(b: bytes, i: int) -> int:
    """Length of the ADTS (raw AAC) frame whose header starts at b[i], or 0 if there is no valid header."""
    if i + 7 > len(b) or b[i] != 0xFF or (b[i + 1] & 0xF6) != 0xF0:
        return 0
    if ((b[i + 2] >> 2) & 0x0F) > 12:  # sampling frequency index
        return 0
    n = ((b[i + 3] & 0x03) << 11) | (b[i + 4] << 3) | (b[i + 5] >> 5)
    return n if n >= 7 else 0


def _chain(b: bytes, i: int, frame_length, need: int) -> bool:
    """`need` consecutive frames parse and chain from offset i (or the data ends cleanly after fewer)."""
    count = 0
    while count < need:
        n = frame_length(b, i)
        if n == 0:
            return False
        count += 1
        i += n
        if i == len(b):
            return True
        if i > len(b):  # a truncated last frame: fine if we saw at least one whole one before it
            return count > 1
    return True


def _id3_end(b: bytes) -> int:
    """Offset just past an ID3v2 tag at the start of b (0 if none)."""
    if len(b) < 10 or b[:3] != b"ID3":
        return 0
    size = (b[6] & 0x7F) << 21 | (b[7] & 0x7F) << 14 | (b[8] & 0x7F) << 7 | (b[9] & 0x7F)
    footer = 10 if b[5] & 0x10 else 0
    return 10 + size + footer


def _frame_sync(data: bytes) -> str | None:
    """'mp3' or 'aac' for a headerless MPEG audio / ADTS stream (after any ID3 tag), else None."""
    start = _id3_end(data)
    head = data[start:start + 64 * 1024]
    if start and not head:
        return "mp3"  # an ID3 tag with nothing after it: mp3 by intent; the decoder will say it is empty
    # skip zero padding some encoders leave between the tag and the first frame
    j = 0
    while j < len(head) and j < 4096 and head[j] == 0:
        j += 1
    if adts_frame_length(head, j) and _chain(head, j, adts_frame_length, 3):
        return "aac"
    if mp3_frame_length(head, j) and _chain(head, j, mp3_frame_length, 3):
        return "mp3"
    if start:  # an ID3 tag is a strong hint even when the frames after it are odd
        return "mp3"
    return None


# ---- signatures ---------------------------------------------------------------------------------------
def _signature(data: bytes) -> str | None:
    head = data[:64]
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        first_pages = data[:4096]
        if b"OpusHead" in first_pages:
            return "opus"
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "m4a" if brand in (b"M4A ", b"M4B ", b"M4P ") else "mp4"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:16] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c":
        return "asf"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:4] == b"caff":
        return "caf"
    return None


def sniff(data: bytes, *, signatures_only: bool = False) -> str | None:
    """Canonical format name, or None when the bytes carry no known signature (e.g. headerless PCM).
    With signatures_only, headerless frame-sync streams (mp3/aac without ID3) are not guessed: used when
    the client says the bytes are raw PCM, whose samples can look like a frame sync by chance."""
    if not data:
        return None
    sig = _signature(data)
    if sig:
        return sig
    if data[:3] == b"ID3":
        return _frame_sync(data)
    if signatures_only:
        return None
    return _frame_sync(data)


def agrees(declared: str | None, detected: str | None) -> bool:
    if not declared or not detected or declared == detected:
        return True
    return any(declared in s and detected in s for s in _SAME)
