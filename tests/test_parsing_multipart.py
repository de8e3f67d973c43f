"""The lean multipart reader (api/multipart.py): on every body, well-formed or not, transcription_from_form must
answer exactly what Starlette's parser answered before (the same fields, file, name and type, or the same 4xx
with the same message), whether the body comes in one message or many, with or without Content-Length."""
from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from asgi_request import chunked_request

from audiorouter.api import multipart, parsing
from audiorouter.core.errors import GatewayError

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 64 * 1024 * 1024


def _request(body: bytes, ctype: str, chunk: int, content_length: bool = True) -> Request:
    return chunked_request(body, ctype, chunk, content_length)


def _outcome(req) -> tuple:
    return ("ok", req.model, req.audio.data, req.audio.declared_format, req.audio.filename, req.language,
            req.prompt, req.response_format, req.timestamp_granularities, req.temperature, req.extra)


async def _old_transcription_from_form(request: Request, task: str, limit: int):
    """transcription_from_form as it was: Starlette's parser for every body."""
    parsing._check_length(request, limit)
    try:  # Starlette's parser on the whole stream, 413 past the limit
        form = await multipart._full(request, [], 0, limit, parsing._too_large, max_files=4, max_fields=64,
                                     max_part_size=4 * 1024 * 1024)
    except GatewayError:
        raise
    except Exception as e:
        raise parsing.InvalidRequest(f"body: malformed multipart form ({str(e)[:200]})", param="body") from None
    items = form.multi_items()

    class _Patched:
        async def __call__(self, *a, **k):
            return multipart.Form(items)
    real = parsing.read_form
    parsing.read_form = _Patched()
    try:
        return await parsing.transcription_from_form(request, task, limit)
    finally:
        parsing.read_form = real
        await form.close()


def run(fn, body: bytes, ctype: str, chunk: int, content_length: bool = True):
    async def go():
        try:
            return _outcome(await fn(_request(body, ctype, chunk, content_length), "transcribe", LIMIT))
        except GatewayError as e:
            return ("error", e.status, e.message, e.param)
    return asyncio.run(go())


def check(body: bytes, ctype: str):
    wants = {cl: run(_old_transcription_from_form, body, ctype, 1 << 30, cl) for cl in (True, False)}
    assert wants[True] == wants[False]
    for chunk in (1 << 30, 65536, 7):
        for cl in (True, False):
            if chunk == 7 and len(body) > 5000:
                continue
            got = run(parsing.transcription_from_form, body, ctype, chunk, cl)
            assert got == wants[cl], (body[:400], chunk, cl)
    return wants[True]


def form(parts: list[tuple[list[tuple[str, str]], bytes]], boundary: str = "b0undary", *, preamble: bytes = b"",
         epilogue: bytes = b"", close: bytes = b"--") -> bytes:
    out = [preamble]
    for headers, data in parts:
        out.append(b"--" + boundary.encode() + b"\r\n")
        for k, v in headers:
            out.append(f"{k}: {v}\r\n".encode("utf-8"))
        out.append(b"\r\n" + data + b"\r\n")
    out.append(b"--" + boundary.encode() + close + epilogue)
    return b"".join(out)


def field(name: str, value: str) -> tuple[list[tuple[str, str]], bytes]:
    return [("Content-Disposition", f'form-data; name="{name}"')], value.encode()


def file(data: bytes, filename: str = "speech.wav", ctype: str | None = "audio/wav", name: str = "file"):
    h = [("Content-Disposition", f'form-data; name="{name}"; filename="{filename}"')]
    if ctype is not None:
        h.append(("Content-Type", ctype))
    return h, data


CT = "multipart/form-data; boundary=b0undary"
WAV = b"RIFF" + os.urandom(3000)


# ---- fixed cases --------------------------------------------------------------------------------------
@pytest.mark.parametrize("body,ctype", [
    (form([field("model", "whisper-1"), file(WAV)]), CT),
    (form([file(WAV), field("model", "whisper-1"), field("language", "en"), field("response_format", "text")]), CT),
    (form([field("model", "m"), field("timestamp_granularities[]", "word"), field("timestamp_granularities[]", "segment"),
           field("response_format", "verbose_json"), file(WAV)]), CT),
    (form([field("model", "m"), file(WAV, "a.blob", "audio/mpeg")]), CT),
    (form([field("model", "m"), file(WAV, "noext", None)]), CT),
    (form([field("model", "m"), file(WAV, "x.pcm", "application/octet-stream")]), CT),
    (form([field("model", "m"), field("format", "mp3"), file(WAV)]), CT),
    (form([field("model", "m"), file(b"")]), CT),                                   # empty file
    (form([field("model", "m")]), CT),                                               # no file
    (form([field("model", "m"), field("file", "not a file")]), CT),                  # file as text
    (form([file(WAV)]), CT),                                                          # no model
    (form([field("model", "m"), file(WAV), file(WAV)]), CT),                         # two files: the last wins
    (form([field("model", "m"), file(WAV, name="other"), file(WAV)]), CT),
    (form([field("model", "m")] + [file(WAV, name=f"f{i}") for i in range(5)]), CT),  # too many files
    (form([field(f"x{i}", "1") for i in range(65)] + [file(WAV)]), CT),              # too many fields
    (form([field("model", "m"), file(WAV)], preamble=b"\r\n"), CT),                  # leading CRLF
    (form([field("model", "m"), file(WAV)], preamble=b"preamble\r\n"), CT),
    (form([field("model", "m"), file(WAV)], epilogue=b"\r\nepilogue"), CT),
    (form([field("model", "m"), file(WAV)], close=b""), CT),                         # no closing --
    (form([field("model", "m"), file(WAV)], close=b"  \r\n--b0undary--"), CT),
    (form([field("model", "m"), file(WAV)])[:-20], CT),                              # truncated
    (form([([("Content-Disposition", "form-data")], b"x"), file(WAV)]), CT),         # no name
    (form([([], b"x"), field("model", "m"), file(WAV)]), CT),                        # no headers at all
    (form([([("Content-Disposition", 'form-data; name="model"'), ("X-A", "1")] + [("X-B", "2")] * 8, b"m"),
           file(WAV)]), CT),                                                          # too many headers
    (form([([("Content-Disposition", 'form-data; name="model"'), ("Bad Header", "1")], b"m"), file(WAV)]), CT),
    (form([([("content-disposition", 'form-data; name="mo;del"')], b"m"), file(WAV)]), CT),
    (form([([("Content-Disposition", 'form-data; name=model')], b"m"), file(WAV)]), CT),
    (form([([("Content-Disposition", 'form-data; name="model"; name*=UTF-8\'\'x')], b"m"), file(WAV)]), CT),
    (form([([("Content-Disposition", 'form-data; name="model"')], "é".encode("latin-1")), file(WAV)]), CT),
    (form([field("model", "m"), file(WAV, "C:\\\\dir\\\\x.mp3")]), CT),
    (form([field("model", "m"), file(WAV, "naïve.wav")]), CT),
    (form([field("model", "m"), file(WAV)]), "multipart/form-data; boundary=\"b0undary\"; charset=latin-1"),
    (form([field("model", "m"), file(WAV)]), "multipart/form-data; charset=utf-8"),  # no boundary
    (form([field("model", "m"), file(WAV)]), "Multipart/Form-Data; boundary=b0undary"),
    (form([field("model", "m"), file(WAV)]), "multipart/form-datax; boundary=b0undary"),
    (form([field("model", "m"), file(WAV)], "other"), CT),                           # wrong boundary
    (form([field("model", "m"), file(WAV + b"\r\n--b0undaryX" + WAV)]), CT),          # boundary-like data
    (form([field("model", "m"), file(WAV + b"\r\n--b0undary\r\n" + WAV)]), CT),      # boundary inside the file
    (form([field("model", "m"), field("temperature", "2"), file(WAV)]), CT),
    (form([field("model", "m"), field("prompt", "x" * (4 * 1024 * 1024 + 1)), file(WAV)]), CT),  # over max_part_size
    (b"", CT),
    (b"--b0undary--\r\n", CT),
])
def test_same_answer_as_starlettes_parser(body, ctype):
    check(body, ctype)


def test_big_upload_goes_to_the_spooling_parser():
    big = b"RIFF" + os.urandom(multipart.LEAN_MAX_BYTES + 1000)
    want = check(form([field("model", "m"), file(big)]), CT)
    assert want[0] == "ok" and want[2] == big


def test_413_with_and_without_content_length():
    body = form([field("model", "m"), file(b"RIFF" + os.urandom(6000))])

    async def go(cl: bool, chunk: int):
        with pytest.raises(GatewayError) as e:
            await parsing.transcription_from_form(_request(body, CT, chunk, cl), "transcribe", 5000)
        return e.value
    for cl in (True, False):
        for chunk in (1000, 100000):
            e = asyncio.run(go(cl, chunk))
            assert e.status == 413 and "5000" in e.message
    # over the lean size, chunked: refused while streaming into the full parser
    big = form([field("model", "m"), file(b"RIFF" + os.urandom(multipart.LEAN_MAX_BYTES + 5000))])

    async def go_big():
        with pytest.raises(GatewayError) as e:
            await parsing.transcription_from_form(_request(big, CT, 65536, False), "transcribe",
                                                  multipart.LEAN_MAX_BYTES + 2000)
        return e.value
    assert asyncio.run(go_big()).status == 413


def test_lean_split_is_used_for_typical_uploads():
    body = form([field("model", "whisper-1"), field("language", "en"), file(WAV)])
    items = multipart.split(body, CT, max_files=4, max_fields=64, max_part_size=1 << 22)
    assert items is not None and [k for k, _ in items] == ["model", "language", "file"]
    assert isinstance(items[2][1], multipart.FilePart) and asyncio.run(items[2][1].read()) == WAV


# ---- fuzz ---------------------------------------------------------------------------------------------
NAMES = st.sampled_from(["model", "file", "language", "prompt", "format", "response_format", "temperature",
                         "timestamp_granularities[]", "x", "é", ""])
TEXT = st.sampled_from(["whisper-1", "en", "json", "0.5", "word", "", "mp3", "wav", "a;b", "x\r\ny"])


@st.composite
def bodies(draw) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b0undary", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "x"]))
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(NAMES)
        if draw(st.booleans()):
            data = draw(st.sampled_from([WAV, b"", b"ID3" + os.urandom(200), os.urandom(50)]))
            fname = draw(st.sampled_from(["a.wav", "b.mp3", "blob", "", "x.pcm", 'q"uote.wav', "dir/f.flac"]))
            cd = f'form-data; name="{name}"; filename="{fname}"'
            headers = [("Content-Disposition", cd)]
            if draw(st.booleans()):
                headers.append(("Content-Type", draw(st.sampled_from(["audio/wav", "audio/mpeg", "text/plain",
                                                                      "application/octet-stream"]))))
        else:
            data = draw(TEXT).encode()
            headers = [("Content-Disposition", draw(st.sampled_from([
                f'form-data; name="{name}"'] * 6 + [f"form-data; name={name}", f'form-data;name="{name}"',
                                                    f'form-data; name="{name}"; foo=bar', "form-data"])))]
        if draw(st.integers(0, 5)) == 0:
            headers.reverse()
        parts.append((headers, data))
    body = form(parts, boundary, preamble=draw(st.sampled_from([b""] * 8 + [b"\r\n", b"junk"])),
                epilogue=draw(st.sampled_from([b""] * 4 + [b"\r\n"] * 4 + [b"\r\nmore"])),
                close=draw(st.sampled_from([b"--"] * 8 + [b"", b"-"])))
    if draw(st.integers(0, 10)) == 0:
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"", b"\r\n", b"\r", b"-", b":", b" "])) \
            + body[at + draw(st.integers(0, 3)):]
    ctype = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}",
                                  f'multipart/form-data; boundary="{boundary}"',
                                  f"multipart/form-data; charset=latin-1; boundary={boundary}"]))
    return body, ctype


@FUZZ
@given(case=bodies())
def test_fuzz_same_answer_as_starlettes_parser(case):
    body, ctype = case
    check(body, ctype)
