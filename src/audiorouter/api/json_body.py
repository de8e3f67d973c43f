"""A JSON request body read as it arrives, with its base64 audio decoded on the way in.

An OpenRouter transcription body is a few hundred bytes of JSON around one big string, `input_audio.data`
(base64 of the audio file). `BodyScanner` is fed the body chunk by chunk; it copies everything except that
string's text into a small skeleton (the string's place holds a random placeholder string) and decodes the
string piece by piece, 4-character aligned, straight into one buffer. The whole text is never held: a
25 MB body costs the decoded audio (3/4 of it) plus a chunk. `BodyScanner(spool=f)` decodes into the open
file f instead (the batch jobs' bodies, of any size: a chunk, whatever the size), answering a SpooledBase64.

Equivalence with `orjson.loads(body)` followed by `parsing.decode_b64(data["input_audio"]["data"])`, which
the tests check on arbitrary chunk splits:
- The string's content is JSON-unescaped exactly as orjson does (pieces that are not plain base64 go through
  orjson itself), so `\\/`, `\\n`, `\\u0041`... mean what they mean, and a JSON error inside the string (a
  raw control character, a bad escape, a lone surrogate, invalid UTF-8, the body ending inside it) is
  reported with orjson's own message and the position it has in the whole body.
- The unescaped text is then base64 as `decode_b64` takes it: an optional `data:...;base64,` prefix within
  its first 256 characters, whitespace anywhere, URL-safe `-_`, any number of trailing `=`, a length that is
  not 1 more than a multiple of 4. Which of its errors applies (blank, non-ASCII, outside the alphabet or a
  bad length, empty audio) is decided the same way; the caller turns it into the message.
- Only the string at `input_audio.data` of the top-level object is taken out, and only the first such
  string; JSON's "the last duplicate key wins" is left to orjson on the skeleton (a later duplicate stays in
  the skeleton as text, and the placeholder, being unique, is only recognised where it survived).
Anything that does not start like a JSON object passes through unchanged."""
from __future__ import annotations

import binascii
import io
import itertools
import os
import re
import secrets
from typing import Any, BinaryIO

import orjson

_CANON = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _b64decode_binascii(data: Any) -> bytes:
    if isinstance(data, str):
        data = data.encode("ascii")  # (UnicodeEncodeError is a ValueError)
    if not _CANON.fullmatch(data):
        raise ValueError("not canonical base64")
    return binascii.a2b_base64(data)


try:  # SIMD base64 (AVX2/AVX512/NEON): ~30x binascii, same answers
    import pybase64 as _pybase64

    def b64decode_strict(data: Any) -> bytes:
        """Decode base64 of the standard alphabet with correct padding; anything else raises ValueError."""
        return _pybase64.b64decode(data, validate=True)
except ImportError:  # pragma: no cover - pybase64 is a dependency; this keeps a broken install working
    b64decode_strict = _b64decode_binascii

DATA_URI = re.compile(rb"^\s*data:[\w/+.-]*(;[\w=.+-]+)*;base64,", re.I)
URLSAFE = bytes.maketrans(b"-_", b"+/")
WS = b" \t\n\r\x0b\x0c"  # what `\s` matches in a bytes pattern
_NONWS = re.compile(rb"[^ \t\n\r]")
_LITERAL_END = re.compile(rb"[ \t\n\r,:\[\]{}\"]")
_ALPHABET_NOT_D = frozenset(b"ABCEFGHIJKLMNOPQRSTUVWXYZabcefghijklmnopqrstuvwxyz0123456789+/-_")

MAX_TOKENS = 4096       # JSON tokens looked at before the target; past that the rest passes through as text
HEAD = 256              # a data: URI prefix must end within the string's first 256 characters (decode_b64)
_KEY_INPUT_AUDIO = b'"input_audio"'
_KEY_DATA = b'"data"'

# error kinds of the base64 text, checked in this order by the caller (parsing.decode_b64 wording)
NON_ASCII = "non_ascii"
ALPHABET = "alphabet"
EMPTY = "empty"


class StreamedBase64:
    """What the body held at input_audio.data: the decoded bytes, or why they are not audio. `blank` is
    `not text.strip()` of the JSON string (the 'must not be empty' check comes before any base64 one)."""

    __slots__ = ("blank", "data", "error")

    def __init__(self, data: bytes, error: str | None, blank: bool):
        self.data = data
        self.error = error
        self.blank = blank

    def __repr__(self) -> str:
        return f"StreamedBase64(bytes={len(self.data)}, error={self.error!r}, blank={self.blank})"


class SpooledBase64(StreamedBase64):
    """input_audio.data decoded into a file instead of memory (`BodyScanner(spool=f)`, the batch jobs' upload of
    any size): `data` is only the audio's first bytes (what sniffing needs), `size` the whole."""

    __slots__ = ("size",)

    def __init__(self, head: bytes, size: int, error: str | None, blank: bool):
        super().__init__(head, error, blank)
        self.size = size

    def __repr__(self) -> str:
        return f"SpooledBase64(size={self.size}, error={self.error!r}, blank={self.blank})"


class StringError:
    """A JSON error inside the extracted string, as orjson words it, at its position in the whole body."""

    __slots__ = ("col", "line", "msg", "pos")

    def __init__(self, msg: str, pos: int, line: int, col: int):
        self.msg, self.pos, self.line, self.col = msg, pos, line, col

    def __str__(self) -> str:
        return f"{self.msg}: line {self.line} column {self.col} (char {self.pos})"


UTF8_MESSAGE = "str is not valid UTF-8: surrogates not allowed"  # orjson's, always at char 0


def _cps(b: bytes | bytearray | memoryview) -> int:
    """Code points in UTF-8 bytes (invalid bytes count one each; only positions depend on it)."""
    b = bytes(b)
    if b.isascii():
        return len(b)
    return len(b.decode("utf-8", "replace"))


class _Base64Sink:
    """Incremental `decode_b64` over the unescaped text of the string, into one BytesIO (whose getvalue()
    hands its buffer over without a copy)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.head: bytearray | None = bytearray()  # the first characters, until the data: prefix question is settled
        self.carry = b""      # 0-3 alphabet characters not decoded yet
        self.pad = False      # '=' seen: only '=' (and whitespace) may follow
        self.invalid = False  # outside the alphabet, '=' before the end, or a bad length
        self.non_ascii = False
        self.blank = True     # every character so far is whitespace (str.isspace)
        self.done = False

    @property
    def fast(self) -> bool:
        return self.head is None and not (self.pad or self.invalid or self.non_ascii)

    def settle_head(self, first: int) -> bool:
        """With the raw first byte of a plain piece: no data: prefix can start here, stop waiting for one."""
        if self.head is not None and not self.head and first in _ALPHABET_NOT_D:
            self.head = None
        return self.head is None

    # ---- pure base64 alphabet, no '=' (the common case, no copies) ------------------------------------
    def quads(self, buf: Any, a: int, b: int) -> bool:
        """Decode buf[a:b] (alphabet only, not yet validated). False (and nothing changed) if it is not."""
        carry = self.carry
        try:
            if carry:
                need = 4 - len(carry)
                if b - a < need:
                    more = carry + bytes(buf[a:b])
                    if not _ALNUM.fullmatch(more):
                        return False
                    self.carry = more
                    self.blank = False
                    return True
                first = b64decode_strict(carry + bytes(buf[a:a + need]))
                a += need
            else:
                first = b""
            n = (b - a) & ~3
            body = b64decode_strict(memoryview(buf)[a:a + n]) if n else b""
            rest = bytes(buf[a + n:b])
            if rest and not _ALNUM.fullmatch(rest):
                return False
        except ValueError:  # binascii.Error is a ValueError
            return False
        if first:
            self.out.write(first)
        if body:
            self.out.write(body)
        self.carry = rest
        self.blank = False
        return True

    # ---- anything else: the unescaped text as ASCII bytes -----------------------------------------------
    def text(self, t: bytes, final: bool) -> None:
        if self.invalid:
            return
        if self.head is not None:
            self.head += t
            if len(self.head) < HEAD and not final:
                stripped = self.head.lstrip(WS)
                if not stripped or b"data:".startswith(bytes(stripped[:5]).lower()):
                    return  # could still become a data: URI prefix
            head = bytes(self.head)
            self.head = None
            m = DATA_URI.match(head[:HEAD])
            t = head[m.end():] if m else head
        c = t.translate(URLSAFE, WS)
        if self.pad:
            if c.strip(b"="):
                self.invalid = True
            return
        e = c.find(b"=")
        if e >= 0:
            if c.count(b"=", e) != len(c) - e:
                self.invalid = True
                return
            self.pad = True
            c = c[:e]
        if not c:
            return
        c = self.carry + c
        n = len(c) & ~3
        try:
            if n:
                self.out.write(b64decode_strict(memoryview(c)[:n]))
        except ValueError:
            self.invalid = True
            return
        self.carry = c[n:]
        if self.carry and not _ALNUM.fullmatch(self.carry):
            self.invalid = True

    def finish(self) -> None:
        if self.done:
            return
        if self.head is not None:
            self.text(b"", True)
        self.done = True
        carry, self.carry = self.carry, b""
        if self.invalid or self.non_ascii:
            return
        if len(carry) == 1:
            self.invalid = True
        elif carry:
            try:
                self.out.write(b64decode_strict(carry + b"=" * (4 - len(carry))))
            except ValueError:
                self.invalid = True

    def result(self) -> StreamedBase64:
        self.finish()
        data = self.out.getvalue()
        self.out.close()
        err = self._error(bool(data))
        return StreamedBase64(data if err is None else b"", err, self.blank)

    def _error(self, got_bytes: bool) -> str | None:
        if self.non_ascii:
            return NON_ASCII
        if self.invalid:
            return ALPHABET
        return None if got_bytes else EMPTY


SPOOL_HEAD = 1024 * 1024  # what SpooledBase64.data keeps of the audio's start


class _SpoolSink(_Base64Sink):
    """The same decoding, written to an open binary file (the caller's, left open) instead of a BytesIO."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self.out = out  # type: ignore[assignment]

    def result(self) -> StreamedBase64:
        self.finish()
        out = self.out
        size = out.tell()
        err = self._error(size > 0)
        head = b""
        if err is None:
            out.flush()
            out.seek(0)
            head = out.read(SPOOL_HEAD)
            out.seek(size)
        return SpooledBase64(head, size, err, self.blank)


_ALNUM = re.compile(rb"[A-Za-z0-9+/]*")


# The placeholder is a per-process secret plus a counter: unique, unguessable by a client (it never leaves the
# process), and no getrandom() system call per request (a measurable share of a small request's CPU).
_placeholder_secret = secrets.token_hex(12).encode()
_placeholder_count = itertools.count()


def _new_secret() -> None:
    global _placeholder_secret  # noqa: PLW0603 - a forked child must not share its parent's secret
    _placeholder_secret = secrets.token_hex(12).encode()


os.register_at_fork(after_in_child=_new_secret)


class BodyScanner:
    """Feed it the body's chunks, then call finish(): the skeleton (bytes for orjson) and what it took out."""

    # modes
    START, TOKENS, STRING, PASS = range(4)

    def __init__(self, spool: BinaryIO | None = None) -> None:
        self.spool = spool           # a file to decode input_audio.data into (result: SpooledBase64), else memory
        self.mode = self.START
        self.skel = bytearray()
        self.buf = bytearray()       # TOKENS: bytes not yet tokenized (an unfinished token)
        self.resume = 0              # TOKENS: where to go on looking for the end of buf's unfinished string
        self.tokens = 0
        self.stack: list[int] = []   # '{' or '[' per open container
        self.want = 0                # in an object: 1 key, 2 colon seen (value next), 0 otherwise
        self.key: bytes | None = None
        self.ia_depth = 0            # depth of the open input_audio object (2) or 0
        self.ia_key_value = False    # the value being read is that of the top-level input_audio key
        # the extracted string
        self.placeholder = b'"audiorouter-input-audio-%s-%d"' % (_placeholder_secret, next(_placeholder_count))
        self.sink: _Base64Sink | None = None
        self.scarry = b""            # STRING: raw bytes kept back (an escape or UTF-8 sequence cut by the chunk)
        self.str_start = 0           # skeleton offset where the placeholder goes
        self.str_cps = 0             # code points of the string's raw text consumed so far
        self.str_line = 1            # line and column (1-based, code points) of the string's first character
        self.str_col = 1
        self.str_pos = 0             # char position of the string's first character in the body
        self.str_closed = False
        self.error: StringError | None = None
        self.utf8_error = False
        self.result: StreamedBase64 | None = None
        self.extracted = False

    # ---- feeding -------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        mode = self.mode
        if mode == self.PASS:
            self.skel += chunk
        elif mode == self.STRING:
            rest = self._string(chunk)
            if rest is not None:
                self.skel += rest
        else:
            self.buf += chunk
            self._tokens(False)

    def finish(self) -> BodyScanner:
        if self.mode in (self.START, self.TOKENS):
            self._tokens(True)
            self.skel += self.buf
            self.buf = bytearray()
        if self.mode == self.STRING:  # the body ended inside the string
            self._string_end_of_body()
        if self.extracted and self.result is None:
            self.result = self.sink.result()  # type: ignore[union-attr]
        return self

    # ---- tokens before the target --------------------------------------------------------------------
    def _pass(self, buf: bytearray) -> None:
        self.skel += buf
        self.buf = bytearray()
        self.mode = self.PASS

    def _tokens(self, final: bool) -> None:
        buf = self.buf
        n = len(buf)
        i = 0
        if self.mode == self.START:
            m = _NONWS.search(buf)
            if m is None:
                if final:
                    self._pass(buf)
                return
            if buf[m.start()] != 0x7B:  # '{': not a JSON object, nothing to take out
                self._pass(buf)
                return
            self.mode = self.TOKENS
        stack = self.stack
        while True:
            m = _NONWS.search(buf, i)
            if m is None:
                i = n
                break
            i = m.start()
            c = buf[i]
            self.tokens += 1
            if self.tokens > MAX_TOKENS:
                self._pass(buf)
                return
            if c == 0x22:  # '"'
                end = _string_end(buf, i + 1, max(i + 1, self.resume))
                target = (self.want == 2 and self.key is not None and self.ia_depth == 2
                          and len(stack) == 2 and _is_key(self.key, _KEY_DATA))
                if end < 0:
                    if target:
                        self._enter_string(buf, i)
                        return
                    self.resume = n  # come back with more bytes; search on from here
                    break
                self.resume = 0
                if target:
                    self._enter_string(buf, i)
                    return
                if self.want == 1:
                    self.key = bytes(buf[i:end + 1])
                    self.want = 0
                else:
                    self._value_done()
                i = end + 1
            elif c == 0x3A:  # ':'
                if stack and stack[-1] == 0x7B and self.key is not None:
                    self.want = 2
                    if len(stack) == 1:
                        self.ia_key_value = _is_key(self.key, _KEY_INPUT_AUDIO)
                i += 1
            elif c == 0x2C:  # ','
                if stack and stack[-1] == 0x7B:
                    self.want, self.key = 1, None
                i += 1
            elif c == 0x7B or c == 0x5B:  # '{' '['
                opens_ia = c == 0x7B and len(stack) == 1 and self.want == 2 and self.ia_key_value
                stack.append(c)
                if opens_ia:
                    self.ia_depth = 2
                self.want, self.key = (1, None) if c == 0x7B else (0, None)
                self.ia_key_value = False
                i += 1
            elif c == 0x7D or c == 0x5D:  # '}' ']'
                if stack:
                    if len(stack) == self.ia_depth:
                        self.ia_depth = 0
                    stack.pop()
                self.want, self.key = 0, None
                self.ia_key_value = False
                i += 1
            else:  # a number, true/false/null, or garbage: orjson will judge it
                m2 = _LITERAL_END.search(buf, i + 1)
                if m2 is None:
                    if not final:
                        break
                    i = n
                else:
                    i = m2.start()
                self._value_done()
        self.skel += buf[:i]
        del buf[:i]
        self.resume = max(0, self.resume - i)

    def _value_done(self) -> None:
        self.want, self.key = 0, None
        self.ia_key_value = False

    # ---- the target string ---------------------------------------------------------------------------
    def _enter_string(self, buf: bytearray, i: int) -> None:
        self.skel += buf[:i]
        self.str_start = len(self.skel)
        prefix = bytes(self.skel)
        nl = prefix.rfind(b"\n")
        self.str_line = prefix.count(b"\n") + 1
        self.str_pos = _cps(prefix) + 1  # after the opening quote
        self.str_col = _cps(prefix[nl + 1:]) + 2
        self.sink = _Base64Sink() if self.spool is None else _SpoolSink(self.spool)
        self.extracted = True
        self.mode = self.STRING
        rest = bytes(buf[i + 1:])
        self.buf = bytearray()
        self.resume = 0
        tail = self._string(rest)
        if tail is not None:
            self.skel += tail

    def _string(self, chunk: bytes) -> bytes | None:
        """Consume string text; at the closing quote, put the placeholder in the skeleton, switch to
        passing the rest through, and return what follows the quote."""
        data = self.scarry + chunk if self.scarry else chunk
        end = _string_end(data, 0, 0)
        if end >= 0:
            self.scarry = b""
            self._piece(data, 0, end, True)
            self.skel += self.placeholder
            self.str_closed = True
            self.mode = self.PASS
            self.result = self.sink.result()  # type: ignore[union-attr]
            return data[end + 1:]
        cut = _safe_cut(data)
        self._piece(data, 0, cut, False)
        self.scarry = data[cut:]
        return None

    def _string_end_of_body(self) -> None:
        data, self.scarry = self.scarry, b""
        if data and self.error is None and not self.utf8_error:
            self._slow(data, False, closed=False)
        self.skel += b'"'  # unterminated, as in the body: orjson reports the end of data where the body ends
        self.mode = self.PASS

    def _piece(self, buf: Any, a: int, b: int, final: bool) -> None:
        if a >= b:
            if final:
                self.sink.finish()  # type: ignore[union-attr]
            return
        sink = self.sink
        if sink.fast or (sink.head is not None and not sink.head):  # type: ignore[union-attr]
            if buf.find(b"\\", a, b) < 0:
                done = self._fast(buf, a, b, final)
            else:  # escapes ('\/' from PHP, '\n' from MIME line breaks...): orjson unescapes fastest
                try:
                    text = orjson.loads(b'"' + bytes(buf[a:b]) + b'"')
                except orjson.JSONDecodeError:
                    text = ""  # the slow path finds and places the error
                done = False
                if text and text.isascii():
                    t = text.encode("ascii")
                    done = self._fast(t, 0, len(t), final)
                    if not done:  # whitespace (line breaks), which base64 skips
                        t = b"".join(t.split())
                        done = bool(t) and self._fast(t, 0, len(t), final)
            if done:
                self.str_cps += b - a
                if final:
                    sink.finish()  # type: ignore[union-attr]
                return
        self._slow(buf[a:b], final, closed=True)

    def _fast(self, buf: Any, a: int, b: int, final: bool) -> bool:
        """buf[a:b] is base64 alphabet, '=' only at the end of the string: decode it (True), else False and
        nothing changed."""
        if a >= b:
            return True
        sink = self.sink
        e = buf.find(b"=", a, b)
        stop = b if e < 0 else e
        return (e < 0 or (final and buf.count(b"=", e, b) == b - e)) and \
            (stop == a or sink.settle_head(buf[a])) and sink.quads(buf, a, stop)  # type: ignore[union-attr]

    def _slow(self, raw: Any, final: bool, *, closed: bool) -> None:
        raw = bytes(raw)
        sink = self.sink
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                self.utf8_error = True
        if self.error is not None or self.utf8_error:
            self.str_cps += _cps(raw)
            return
        try:
            text = orjson.loads(b'"' + raw + b'"' if closed else b'"' + raw)
        except orjson.JSONDecodeError as e:
            if str(e).startswith(UTF8_MESSAGE):
                self.utf8_error = True
                return
            # e.pos counts the opening quote we added; the string's text starts at str_pos
            off = self.str_cps + max(0, e.pos - 1)
            self.error = StringError(e.msg, self.str_pos + off, self.str_line, self.str_col + off)
            self.str_cps += _cps(raw)
            return
        self.str_cps += _cps(raw)
        if not text:
            if final:
                sink.finish()  # type: ignore[union-attr]
            return
        if sink.blank and not text.isspace():  # type: ignore[union-attr]
            sink.blank = False  # type: ignore[union-attr]
        if sink.non_ascii or not text.isascii():  # type: ignore[union-attr]
            sink.non_ascii = True  # type: ignore[union-attr]
            return
        sink.text(text.encode("ascii"), final)  # type: ignore[union-attr]
        if final:
            sink.finish()  # type: ignore[union-attr]

    # ---- the answer ------------------------------------------------------------------------------------
    def map_position(self, pos: int, line: int, col: int) -> tuple[int, int, int]:
        """An orjson error position in the skeleton -> the same place in the body."""
        if not self.extracted:
            return pos, line, col
        skel = bytes(self.skel)
        try:
            text = skel.decode("utf-8")
        except UnicodeDecodeError:  # (orjson reports invalid UTF-8 at char 0: nothing to map)
            return pos, line, col
        ph_len = len(self.placeholder) if self.str_closed else 1
        ph_start = len(skel[:self.str_start].decode("utf-8"))
        ph_end = ph_start + ph_len
        if pos < ph_end:
            return pos, line, col
        delta = self.str_cps + (2 if self.str_closed else 1) - ph_len
        if "\n" not in text[ph_end:pos]:  # on the string's line: the column moves as well
            col += delta
        return pos + delta, line, col


def _is_key(raw: bytes, want: bytes) -> bool:
    if raw == want:
        return True
    if b"\\" not in raw:
        return False
    try:
        return orjson.loads(raw) == orjson.loads(want)
    except orjson.JSONDecodeError:
        return False


def _string_end(buf: Any, content_start: int, search_from: int) -> int:
    """Index of the quote closing the string whose text starts at content_start, or -1 if not in buf."""
    j = search_from
    while True:
        k = buf.find(b'"', j)
        if k < 0:
            return -1
        b = k - 1
        while b >= content_start and buf[b] == 0x5C:
            b -= 1
        if (k - 1 - b) % 2 == 0:
            return k
        j = k + 1


def _run_start(buf: bytes, w: int) -> int:
    """Start of the run of backslashes that ends at w."""
    return len(buf[:w + 1].rstrip(b"\\"))


def _safe_cut(data: bytes) -> int:
    """Where string text may be cut so that the piece before ends between two characters of the string
    (not inside an escape, a surrogate pair or a UTF-8 sequence). `data` starts at such a point."""
    n = len(data)
    cut = n
    w = data.rfind(b"\\", max(0, n - 12))
    if w >= 0:
        r = _run_start(data, w)
        if (w - r + 1) % 2 == 1:  # the last backslash starts an escape: keep it (and a high surrogate before)
            cut = w
            if w >= 6 and data[w - 6] == 0x5C and data[w - 5] in b"uU" and data[w - 4] in b"dD" \
                    and data[w - 3] in b"89abAB":
                r2 = _run_start(data, w - 6)
                if (w - 6 - r2 + 1) % 2 == 1:
                    cut = w - 6
    if cut == n:
        k = n - 1
        lo = max(0, n - 4)
        while k >= lo and 0x80 <= data[k] < 0xC0:
            k -= 1
        if k >= lo and data[k] >= 0xC0:
            cut = k
    return cut
