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
            out.append(f"{k}: {v}\r\n".encode())
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


def ok(model, fmt, filename, *, language=None, response_format="json", granularities=("segment",), data=WAV):
    """The expected outcome of a body that parses (see _outcome), written out, not computed by our code."""
    return ("ok", model, data, fmt, filename, language, None, response_format, list(granularities), None, {})


def err(param, message):
    return ("error", 400, message, param)


def malformed(why):
    return err("body", f"body: malformed multipart form ({why})")


# ---- fixed cases --------------------------------------------------------------------------------------
@pytest.mark.parametrize("body,ctype,expected", [
    (form([field("model", "whisper-1"), file(WAV)]), CT,
     ok('whisper-1', 'wav', 'speech.wav')),
    (form([file(WAV), field("model", "whisper-1"), field("language", "en"), field("response_format", "text")]), CT,
     ok('whisper-1', 'wav', 'speech.wav', language='en', response_format='text')),
    (form([field("model", "m"), field("timestamp_granularities[]", "word"),
           field("timestamp_granularities[]", "segment"), field("response_format", "verbose_json"), file(WAV)]), CT,
     ok('m', 'wav', 'speech.wav', response_format='verbose_json', granularities=['word', 'segment'])),
    (form([field("model", "m"), file(WAV, "a.blob", "audio/mpeg")]), CT,
     ok('m', 'mp3', 'a.blob')),
    (form([field("model", "m"), file(WAV, "noext", None)]), CT,
     ok('m', None, 'noext')),
    (form([field("model", "m"), file(WAV, "x.pcm", "application/octet-stream")]), CT,
     ok('m', 'pcm', 'x.pcm')),
    (form([field("model", "m"), field("format", "mp3"), file(WAV)]), CT,
     ok('m', 'mp3', 'speech.wav')),
    (form([field("model", "m"), file(b"")]), CT,
     err('file', 'file: the uploaded file is empty (0 bytes)')),  # empty file
    (form([field("model", "m")]), CT,
     err('file', "file: required field is missing (upload the audio as 'file')")),  # no file
    (form([field("model", "m"), field("file", "not a file")]), CT,
     err('file', 'file: expected a file upload, got a text field')),  # file as text
    (form([file(WAV)]), CT,
     err('model', 'model: required field is missing')),  # no model
    (form([field("model", "m"), file(WAV), file(WAV)]), CT,
     ok('m', 'wav', 'speech.wav')),  # two files: the last wins
    (form([field("model", "m"), file(WAV, name="other"), file(WAV)]), CT,
     ok('m', 'wav', 'speech.wav')),
    (form([field("model", "m")] + [file(WAV, name=f"f{i}") for i in range(5)]), CT,
     malformed('Too many files. Maximum number of files is 4.')),  # too many files
    (form([field(f"x{i}", "1") for i in range(65)] + [file(WAV)]), CT,
     malformed('Too many fields. Maximum number of fields is 64.')),  # too many fields
    (form([field("model", "m"), file(WAV)], preamble=b"\r\n"), CT,
     ok('m', 'wav', 'speech.wav')),  # leading CRLF
    (form([field("model", "m"), file(WAV)], preamble=b"preamble\r\n"), CT,
     malformed('Invalid multipart data.')),
    (form([field("model", "m"), file(WAV)], epilogue=b"\r\nepilogue"), CT,
     ok('m', 'wav', 'speech.wav')),
    (form([field("model", "m"), file(WAV)], close=b""), CT,
     err('file', "file: required field is missing (upload the audio as 'file')")),  # no closing --
    (form([field("model", "m"), file(WAV)], close=b"  \r\n--b0undary--"), CT,
     ok('m', 'wav', 'speech.wav')),
    (form([field("model", "m"), file(WAV)])[:-20], CT,
     err('file', "file: required field is missing (upload the audio as 'file')")),  # truncated
    (form([([("Content-Disposition", "form-data")], b"x"), file(WAV)]), CT,
     malformed('The Content-Disposition header field "name" must be provided.')),  # no name
    (form([([], b"x"), field("model", "m"), file(WAV)]), CT,
     malformed('The Content-Disposition header field "name" must be provided.')),  # no headers at all
    (form([([("Content-Disposition", 'form-data; name="model"'), ("X-A", "1")] + [("X-B", "2")] * 8, b"m"),
           file(WAV)]), CT,
     malformed('Invalid multipart data.')),  # too many headers
    (form([([("Content-Disposition", 'form-data; name="model"'), ("Bad Header", "1")], b"m"), file(WAV)]), CT,
     malformed('Invalid multipart data.')),
    (form([([("content-disposition", 'form-data; name="mo;del"')], b"m"), file(WAV)]), CT,
     err('model', 'model: required field is missing')),
    (form([([("Content-Disposition", 'form-data; name=model')], b"m"), file(WAV)]), CT,
     ok('m', 'wav', 'speech.wav')),
    (form([([("Content-Disposition", 'form-data; name="model"; name*=UTF-8\'\'x')], b"m"), file(WAV)]), CT,
     ok('m', 'wav', 'speech.wav')),
    (form([([("Content-Disposition", 'form-data; name="model"')], "é".encode("latin-1")), file(WAV)]), CT,
     ok('é', 'wav', 'speech.wav')),
    (form([field("model", "m"), file(WAV, "C:\\\\dir\\\\x.mp3")]), CT,
     ok('m', 'mp3', 'x.mp3')),
    (form([field("model", "m"), file(WAV, "naïve.wav")]), CT,
     ok('m', 'wav', 'naïve.wav')),
    (form([field("model", "m"), file(WAV)]), "multipart/form-data; boundary=\"b0undary\"; charset=latin-1",
     ok('m', 'wav', 'speech.wav')),
    (form([field("model", "m"), file(WAV)]), "multipart/form-data; charset=utf-8",
     malformed('Missing boundary in multipart.')),  # no boundary
    (form([field("model", "m"), file(WAV)]), "Multipart/Form-Data; boundary=b0undary",
     ok('m', 'wav', 'speech.wav')),
    (form([field("model", "m"), file(WAV)]), "multipart/form-datax; boundary=b0undary",
     err('model', 'model: required field is missing')),
    (form([field("model", "m"), file(WAV)], "other"), CT,
     malformed('Invalid multipart data.')),  # wrong boundary
    (form([field("model", "m"), file(WAV + b"\r\n--b0undaryX" + WAV)]), CT,
     ok('m', 'wav', 'speech.wav', data=WAV + b"\r\n--b0undaryX" + WAV)),  # boundary-like data
    (form([field("model", "m"), file(WAV + b"\r\n--b0undary\r\n" + WAV)]), CT,
     malformed('Invalid multipart data.')),  # boundary inside the file
    (form([field("model", "m"), field("temperature", "2"), file(WAV)]), CT,
     err('temperature', 'temperature: 2 is out of range; it must be between 0 and 1')),
    (form([field("model", "m"), field("prompt", "x" * (4 * 1024 * 1024 + 1)), file(WAV)]), CT,
     malformed('Part exceeded maximum size of 4096KB.')),  # over max_part_size
    (b"", CT,
     err('model', 'model: required field is missing')),
    (b"--b0undary--\r\n", CT,
     err('model', 'model: required field is missing')),
])
def test_same_answer_as_starlettes_parser(body, ctype, expected):
    assert check(body, ctype) == expected


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


# ---- nested fields: the bracket notation the openai SDKs send for extra_body ---------------------------------
SDK_EXTRA_BODY = {"models": ["m1", "m2"], "temperature": 0.5, "provider": {
    "order": ["B", "A"], "allow_fallbacks": False, "max_price": {"audio": 0.00006},
    "options": {"deepgram": {"smart_format": True}}}}
SDK_FIELDS = [("models[]", "m1"), ("models[]", "m2"), ("temperature", "0.5"), ("provider[order][]", "B"),
              ("provider[order][]", "A"), ("provider[allow_fallbacks]", "false"),
              ("provider[max_price][audio]", "6e-05"),
              ("provider[options][deepgram][smart_format]", "true")]


def test_the_python_sdk_sends_bracketed_fields():
    """The wire contract form_fields reads, as the installed openai SDK writes it (the npm SDK's addFormValue
    writes the same names: key[] for arrays, key[name] for objects, String(value) for scalars)."""
    from openai import OpenAI
    with OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1") as c:
        sent = c._serialize_multipartform({"model": "m", **SDK_EXTRA_BODY})
    flat = [(k, x) for k, v in sent.items() for x in (v if isinstance(v, list) else [v])]
    assert flat == [("model", "m"), *SDK_FIELDS]


def test_form_fields_reads_the_sdk_notation():
    assert parsing.form_fields([("model", "m"), ("file", "ignored"), *SDK_FIELDS]) == {
        "model": "m", "models": ["m1", "m2"], "temperature": "0.5", "provider": {
            "order": ["B", "A"], "allow_fallbacks": "false", "max_price": {"audio": "6e-05"},
            "options": {"deepgram": {"smart_format": "true"}}}}


@pytest.mark.parametrize("items, expected", [
    ([("models", "a"), ("models", "b")], {"models": ["a", "b"]}),                 # a repeated plain name
    ([("models[0]", "a"), ("models[1]", "b")], {"models": ["a", "b"]}),           # indices
    ([("models", '["a", "b"]')], {"models": ["a", "b"]}),                         # a JSON array string
    ([("keyterms", "[laughter]")], {"keyterms": "[laughter]"}),                   # not JSON: the string itself
    ([("provider", '{"order": ["b"]}')], {"provider": '{"order": ["b"]}'}),       # read by parse_provider
    ([("a[][x]", "1"), ("a[][x]", "2")], {"a": [{"x": "1"}, {"x": "2"}]}),
    ([("timestamp_granularities[]", "word")], {"timestamp_granularities": ["word"]}),
    ([("a[²]", "x"), ("a[１]", "y")], {"a": {"²": "x", "１": "y"}}),  # only ASCII digits index (int('²') raised: 500)
])
def test_form_fields_values(items, expected):
    assert parsing.form_fields(items) == expected


@pytest.mark.parametrize("items, param, message", [
    ([("provider", "{}"), ("provider[order][]", "b")], "provider", "provider: sent both as one value and as nested"),
    ([("provider[order]", "a"), ("provider[order][x]", "b")], "provider.order", "provider.order: sent both"),
    ([("models[1]", "a")], "models[1]", "models[1]: list indices must come in order from 0"),
    ([("provider[order", "a")], "provider[order", "'provider[order': malformed field name"),
    ([("[x]", "a")], "[x]", "'[x]': malformed field name"),
    ([("a]", "a")], "a]", "'a]': malformed field name"),
    ([("a" + "[b]" * 7, "1")], "a", "a: nested more than 6 levels deep"),
    ([("models[" + "9" * 5000 + "]", "a")], "models[999999999999]", "models[999999999999]: list indices"),
])
def test_form_fields_errors(items, param, message):
    with pytest.raises(GatewayError) as e:
        parsing.form_fields(items)
    assert (e.value.status, e.value.param) == (400, param) and e.value.message.startswith(message), e.value.message


def test_a_non_ascii_digit_index_is_a_400_naming_the_field():
    body = form([field("model", "m"), file(WAV), field("models[²]", "m1")])
    with pytest.raises(GatewayError) as e:
        asyncio.run(parsing.transcription_from_form(_request(body, CT, 1 << 30), "transcribe", LIMIT))
    assert (e.value.status, e.value.param) == (400, "models"), e.value.message


def test_nested_fields_reach_the_request():
    body = form([field("model", "m"), file(WAV)] + [field(k, v) for k, v in SDK_FIELDS])
    req = asyncio.run(parsing.transcription_from_form(_request(body, CT, 1 << 30), "transcribe", LIMIT))
    assert req.models == ["m1", "m2"] and req.temperature == 0.5
    p = req.provider
    assert (p.order, p.allow_fallbacks, p.max_price, p.options) == (["B", "A"], False, {"audio": 6e-05},
                                                                    {"deepgram": {"smart_format": "true"}})


@FUZZ
@given(items=st.lists(st.tuples(st.text("ab[]0", max_size=12), st.text("ab[]{}\"0", max_size=8)), max_size=10))
def test_fuzz_form_fields_answers_or_names_a_field(items):
    try:
        out = parsing.form_fields(items)
    except GatewayError as e:
        assert e.status == 400 and e.param
    else:
        def leaves(v):
            if isinstance(v, dict):
                return [x for y in v.values() for x in leaves(y)]
            if isinstance(v, list):
                return [x for y in v for x in leaves(y)]
            return [v]
        assert isinstance(out, dict) and all(isinstance(x, str) for x in leaves(out))
