"""Property tests of the two hand-written body parsers against independent references, not against our own
code: the JSON body scanner (api/json_body.py) against the json module and stdlib base64, and the lean
multipart splitter (api/multipart.py) against the email package and python-multipart. Derandomized, a fixed number of examples:
the same inputs on every run."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
from email.parser import BytesParser
from email.policy import HTTP

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import UploadFile
from starlette.requests import Request

from audiorouter.api.json_body import BodyScanner
from audiorouter.api.multipart import FilePart, split

# AUDIOROUTER_PARSER_FUZZ_EXAMPLES: examples per property (default 200 in `make test`; 400 or more for a deeper run)
EXAMPLES = int(os.environ.get("AUDIOROUTER_PARSER_FUZZ_EXAMPLES", "200"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# ---- references ----------------------------------------------------------------------------------------------
_DATA_URI = re.compile(r"\s*data:[\w/+.-]*(;[\w=.+-]+)*;base64,", re.I | re.A)
_B64_WS = re.compile(r"[ \t\n\r\f\v]")


def reference_b64(text: str) -> bytes | None:
    """The documented contract (parsing.decode_b64) with stdlib base64: an optional data: URI prefix ending in
    the first 256 characters, ASCII whitespace anywhere, URL-safe -_, padding optional or repeated, no length
    of 1 mod 4. None: not base64, or empty."""
    m = _DATA_URI.match(text[:256])
    if m:
        text = text[m.end():]
    if not text.isascii():
        return None
    s = _B64_WS.sub("", text).translate(str.maketrans("-_", "+/")).rstrip("=")
    if len(s) % 4 == 1:
        return None
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True) or None
    except binascii.Error:
        return None


def scan(body: bytes, cuts: list[int]) -> BodyScanner:
    s = BodyScanner()
    last = 0
    for c in [*sorted(set(cuts)), len(body)]:
        if c > last:
            s.feed(body[last:c])
            last = c
    return s.finish()


def strict_json(body: bytes):
    """json.loads as a strict parser (RFC 8259: no NaN/Infinity, no lone surrogates, UTF-8, 64-bit ints)."""
    def no_constant(name):
        raise ValueError(name)
    doc = json.loads(body.decode("utf-8"), parse_constant=no_constant)
    text = json.dumps(doc, ensure_ascii=False)
    text.encode("utf-8")  # a lone surrogate raises here
    if any(abs(n) >= 2 ** 63 for n in _ints(doc)):
        raise ValueError("integer beyond 64 bits")
    return doc


def _ints(v):
    if isinstance(v, bool):
        return
    if isinstance(v, int):
        yield v
    elif isinstance(v, list):
        for x in v:
            yield from _ints(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _ints(x)


def check_scanner(body: bytes, cuts: list[int]) -> None:
    """What the scanner reports agrees with json.loads + the base64 reference on the same bytes."""
    s = scan(body, cuts)
    try:
        ref = strict_json(body)
    except (ValueError, UnicodeError, RecursionError):
        ref = None
    try:
        skel = strict_json(bytes(s.skel))
    except (ValueError, UnicodeError, RecursionError):
        skel = None
    if ref is None:
        # invalid JSON must not come out clean: the skeleton fails to parse, or the string had the error
        assert skel is None or not s.extracted or s.error is not None or s.utf8_error or \
            not isinstance(skel, dict), (body, skel)
        return
    assert skel is not None and not s.utf8_error and s.error is None, (body, s.skel)
    if not s.extracted:
        assert skel == ref
        return
    placeholder = s.placeholder[1:-1].decode()
    ia = skel["input_audio"]
    want = ref["input_audio"]["data"]
    if ia.get("data") == placeholder:  # (a later duplicate key wins, as in json.loads)
        got = s.result
        decoded = reference_b64(want)
        assert got.blank == (not want.strip()), (want, got)
        if not got.blank:
            assert (got.error is None and bool(got.data)) == bool(decoded), (want, got)
            if decoded:
                assert got.data == decoded
        ia["data"] = want
    assert skel == ref


# ---- the JSON scanner -----------------------------------------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1),
                      st.floats(allow_nan=False, allow_infinity=False),
                      st.text(st.characters(exclude_categories=["Cs"]), max_size=12))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) |
                          st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)


@st.composite
def b64_text(draw) -> tuple[str, bytes]:
    """Base64 of some bytes as clients send it: standard or URL-safe, padded or not, wrapped, with a data: URI."""
    raw = draw(st.binary(min_size=1, max_size=200))
    text = base64.b64encode(raw).decode()
    if draw(st.booleans()):
        text = text.translate(str.maketrans("+/", "-_"))
    text = text.rstrip("=") + "=" * draw(st.sampled_from([0, 0, 1, 2, 3])) if draw(st.booleans()) else text
    if draw(st.booleans()):
        width = draw(st.integers(1, 80))
        sep = draw(st.sampled_from(["\n", "\r\n", " ", "\t"]))
        text = sep.join(text[i:i + width] for i in range(0, len(text), width))
    if draw(st.integers(0, 4)) == 0:
        text = draw(st.sampled_from(["data:audio/wav;base64,", "DATA:audio/x-flac;codecs=flac;base64,",
                                     " data:;base64,"])) + text
    return text, raw


def escape_some(text: str, draw) -> str:
    """The JSON string of `text`, with some characters written as \\uXXXX or \\/ (what some encoders send)."""
    out = []
    for ch in text:
        k = draw(st.integers(0, 9))
        if k == 0:
            out.append(f"\\u{ord(ch):04x}")
        elif k == 1 and ch == "/":
            out.append("\\/")
        else:
            out.append(json.dumps(ch)[1:-1])
    return '"' + "".join(out) + '"'


@st.composite
def transcription_bodies(draw) -> tuple[bytes, list[int]]:
    text, _ = draw(b64_text())
    ia_extra = draw(st.dictionaries(st.sampled_from(["format", "url", "x"]), json_leaf, max_size=2))
    fields = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "input_audio"), json_value, max_size=4))
    marker = "\x00AUDIO\x00"
    ia = {**ia_extra, "data": marker}
    ia_items = list(ia.items())
    draw(st.randoms()).shuffle(ia_items)
    items = [*list(fields.items()), ("input_audio", dict(ia_items))]
    draw(st.randoms()).shuffle(items)
    indent = draw(st.sampled_from([None, None, 0, 2]))
    seps = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    doc = json.dumps(dict(items), ensure_ascii=draw(st.booleans()), indent=indent,
                     separators=seps if indent is None else (",", ": "))
    doc = doc.replace(json.dumps(marker), escape_some(text, draw))
    body = doc.encode("utf-8")
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=8))
    return body, cuts


@PROPERTY
@given(case=transcription_bodies())
def test_scanner_agrees_with_json_and_base64(case):
    body, cuts = case
    s = scan(body, cuts)
    assert s.extracted  # (the property below would hold vacuously otherwise)
    check_scanner(body, cuts)


@PROPERTY
@given(case=transcription_bodies(), edits=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 3),
                                                             st.binary(max_size=3)), min_size=1, max_size=3))
def test_scanner_agrees_on_damaged_bodies(case, edits):
    body, cuts = case
    for at, drop, insert in edits:
        at %= len(body) + 1
        body = body[:at] + insert + body[at + drop:]
    check_scanner(body, [c % (len(body) + 1) for c in cuts])


# ---- the multipart splitter -----------------------------------------------------------------------------------
TOKEN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?"
PARAM_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=12)


def quoted(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def multipart_bodies(draw) -> tuple[bytes, str, bool]:
    """A form as clients send it (and whether it is plain enough that the splitter should take it)."""
    boundary = draw(st.text(TOKEN, min_size=1, max_size=40).filter(lambda b: not b.endswith(" ")))
    plain = True
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        name = draw(PARAM_TEXT)
        plain &= bool(name) and not set(name) & set('"\\;')
        disposition = "form-data; name=" + quoted(name)
        headers = []
        if draw(st.booleans()):
            filename = draw(PARAM_TEXT)
            plain &= not set(filename) & set('"\\;')
            disposition += "; filename=" + quoted(filename)
            if draw(st.booleans()):
                headers.append("Content-Type: " + draw(st.sampled_from(["audio/wav", "application/octet-stream",
                                                                         "audio/mpeg; rate=1"])))
            data = draw(st.binary(max_size=64))
        else:
            data = draw(st.text(max_size=24)).encode("utf-8")
        data = data.replace(b"\r\n--" + boundary.encode(), b"")
        if draw(st.booleans()):
            headers.insert(0, "Content-Disposition: " + disposition)
        else:
            headers.append("Content-Disposition: " + disposition)
        parts.append("\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + data)
    b = boundary.encode()
    body = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b + b"--\r\n"
    ctype = "multipart/form-data; boundary=" + (quoted(boundary) if draw(st.booleans()) else boundary)
    if any(c in boundary for c in "'()+,/:=?"):
        ctype = "multipart/form-data; boundary=" + quoted(boundary)
    return body, ctype, plain


def email_parts(body: bytes, ctype: str) -> list[tuple[str, object]] | None:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    if not msg.is_multipart() or msg.defects:
        return None
    out: list[tuple[str, object]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_param("filename", header="content-disposition")
        if filename is not None:
            raw = {k.lower(): v for k, v in part.raw_items()}  # (the header as sent, not re-rendered)
            ctype_hdr = raw.get("content-type")
            out.append((name, ("file", filename, ctype_hdr.strip() if ctype_hdr is not None else None, payload)))
        else:
            try:
                out.append((name, payload.decode("utf-8")))
            except UnicodeDecodeError:
                out.append((name, payload.decode("latin-1")))
    return out


def python_multipart_parts(body: bytes, ctype: str) -> list[tuple[str, object]] | str:
    """Starlette's form parser (python-multipart) on the whole body: the parts, or its error."""
    async def go():
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}
        request = Request({"type": "http", "method": "POST", "headers": [(b"content-type", ctype.encode())]}, receive)
        try:
            form = await request.form(**LIMITS)
        except Exception as e:
            return f"error: {type(e).__name__}"
        out = []
        for k, v in form.multi_items():
            out.append((k, ("file", v.filename, v.content_type, await v.read()) if isinstance(v, UploadFile) else v))
        await form.close()
        return out
    return asyncio.run(go())


def ours(items) -> list[tuple[str, object]]:
    return [(k, ("file", v.filename, v.content_type, v._data) if isinstance(v, FilePart) else v) for k, v in items]


LIMITS = {"max_files": 8, "max_fields": 64, "max_part_size": 1 << 20}


@PROPERTY
@given(case=multipart_bodies())
def test_multipart_split_agrees_with_the_email_package(case):
    body, ctype, plain = case
    items = split(body, ctype, **LIMITS)
    if plain:
        assert items is not None, body  # a plain form is the splitter's to take
    if items is not None:
        assert ours(items) == email_parts(body, ctype)


@PROPERTY
@given(case=multipart_bodies(), edits=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 3),
                                                         st.sampled_from([b"", b"\r\n", b"\r", b"\n", b"-", b"--",
                                                                          b":", b" ", b'"', b";", b"\x00"])),
                                               min_size=1, max_size=3))
def test_multipart_split_takes_damaged_bodies_only_when_sure(case, edits):
    body, ctype, _ = case
    for at, drop, insert in edits:
        at %= len(body) + 1
        body = body[:at] + insert + body[at + drop:]
    items = split(body, ctype, **LIMITS)
    if items is not None:  # what the splitter does not recognise goes to the full parser (None)
        assert ours(items) == python_multipart_parts(body, ctype)
