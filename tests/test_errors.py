"""Every bad input gets a clear 4xx in the dialect's envelope, naming the bad field, with X-Generation-Id;
never a 5xx. OpenRouter's {"error": {"code", "message", "metadata"}} on /api/v1, OpenAI's
{"error": {"message", "type", "param", "code"}} on /v1. Includes 413s (with and without Content-Length),
404s with suggestions, and a hypothesis fuzz of the JSON body shapes."""
from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audio_factory import empty_wav, load_clip, make_audio, silence
from conftest import DEV_AUDIO, ServerProcess

STT_PATHS = ("/api/v1/audio/transcriptions", "/v1/audio/transcriptions")
TTS_PATHS = ("/api/v1/audio/speech", "/v1/audio/speech")
MODEL = "local/whisper-base"


def _check_generation_id(response: httpx.Response) -> None:
    path = response.request.url.path
    if path.startswith(("/api/", "/v1/")):
        assert response.headers.get("x-generation-id", "").startswith("gen-"), (path, dict(response.headers))


@pytest.fixture
def api(server):
    """A client that checks X-Generation-Id on every response it gets, errors included."""
    with httpx.Client(base_url=server.url, timeout=120, event_hooks={"response": [_check_generation_id]}) as c:
        yield c


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    s = ServerProcess(env={"AUDIOROUTER_MAX_BODY_BYTES": "100000", "AUDIOROUTER_MAX_SPEECH_CHARS": "50",
                           "AUDIOROUTER_PRELOAD": "false"},
                      tmp=tmp_path_factory.mktemp("small-limits")).start()
    yield s
    s.stop()


@pytest.fixture
def small(small_server):
    with httpx.Client(base_url=small_server.url, timeout=60, event_hooks={"response": [_check_generation_id]}) as c:
        yield c


@pytest.fixture(scope="module")
def tiny_wav() -> bytes:
    return make_audio(silence(0.5), "wav")


@pytest.fixture(scope="module")
def tiny_b64(tiny_wav) -> str:
    return base64.b64encode(tiny_wav).decode()


def dialect(path: str) -> str:
    return "openai" if path.startswith("/v1/") else "openrouter"


def assert_envelope(r: httpx.Response) -> dict:
    """The response is an error in its path's dialect; returns the inner error object."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    body = r.json()
    assert set(body) == {"error"}, body
    e = body["error"]
    if dialect(r.request.url.path) == "openai":
        assert set(e) == {"message", "type", "param", "code"}, e
        assert isinstance(e["type"], str) and e["type"]
    else:
        assert set(e) == {"code", "message", "metadata"}, e
        assert e["code"] == r.status_code
        assert isinstance(e["metadata"], dict)
    assert isinstance(e["message"], str) and e["message"]
    return e


def assert_error(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    e = assert_envelope(r)
    if param is not None:
        got = e["param"] if dialect(r.request.url.path) == "openai" else e["metadata"].get("param")
        assert got == param, e
        assert e["message"].startswith(param), e["message"]  # the message names the field first
    return e


# ---- JSON transcription bodies ------------------------------------------------------------------------
def bad_stt_bodies(b64: str):
    ok = {"model": MODEL, "input_audio": {"data": b64, "format": "wav"}}
    yield "missing model", {"input_audio": ok["input_audio"]}, "model"
    yield "model not a string", {**ok, "model": 7}, "model"
    yield "empty model", {**ok, "model": "  "}, "model"
    yield "missing input_audio", {"model": MODEL}, "input_audio"
    yield "input_audio a string", {**ok, "input_audio": b64}, "input_audio"
    yield "input_audio a list", {**ok, "input_audio": [b64, "wav"]}, "input_audio"
    yield "missing data", {**ok, "input_audio": {"format": "wav"}}, "input_audio.data"
    yield "data not a string", {**ok, "input_audio": {"data": 12, "format": "wav"}}, "input_audio.data"
    yield "data null", {**ok, "input_audio": {"data": None, "format": "wav"}}, "input_audio.data"
    yield "data empty", {**ok, "input_audio": {"data": "", "format": "wav"}}, "input_audio.data"
    yield "missing format", {**ok, "input_audio": {"data": b64}}, "input_audio.format"
    yield "format not a string", {**ok, "input_audio": {"data": b64, "format": ["wav"]}}, "input_audio.format"
    yield "language not a string", {**ok, "language": 5}, "language"
    yield "language not a code", {**ok, "language": "klingon"}, "language"
    yield "temperature a word", {**ok, "temperature": "warm"}, "temperature"
    yield "temperature a bool", {**ok, "temperature": True}, "temperature"
    yield "temperature too high", {**ok, "temperature": 1.5}, "temperature"
    yield "temperature negative", {**ok, "temperature": -0.1}, "temperature"
    yield "temperature nan", {**ok, "temperature": "nan"}, "temperature"
    yield "response_format unknown", {**ok, "response_format": "xml"}, "response_format"
    yield "response_format not a string", {**ok, "response_format": {"type": "json"}}, "response_format"
    yield "granularity unknown", {**ok, "timestamp_granularities": ["char"]}, "timestamp_granularities"
    yield "granularities not strings", {**ok, "timestamp_granularities": [1, 2]}, "timestamp_granularities[0]"
    yield "prompt not a string", {**ok, "prompt": ["a"]}, "prompt"
    yield "provider not an object", {**ok, "provider": 3}, "provider"
    yield "provider.order not a list", {**ok, "provider": {"order": 5}}, "provider.order"
    yield "provider.only not strings", {**ok, "provider": {"only": ["a", 1]}}, "provider.only[1]"
    yield "provider.ignore not strings", {**ok, "provider": {"ignore": {"a": 1}}}, "provider.ignore"
    yield "provider.allow_fallbacks", {**ok, "provider": {"allow_fallbacks": "maybe"}}, "provider.allow_fallbacks"
    yield "provider.sort", {**ok, "provider": {"sort": "cheapest"}}, "provider.sort"
    yield "provider.max_price", {**ok, "provider": {"max_price": ["1"]}}, "provider.max_price"
    yield "provider.max_price.prompt", {**ok, "provider": {"max_price": {"prompt": "cheap"}}}, \
        "provider.max_price.prompt"
    yield "provider.max_price.audio", {**ok, "provider": {"max_price": {"audio": None}}}, "provider.max_price.audio"
    yield "provider.data_collection", {**ok, "provider": {"data_collection": "sometimes"}}, "provider.data_collection"
    yield "provider.zdr", {**ok, "provider": {"zdr": 2}}, "provider.zdr"
    yield "provider.options", {**ok, "provider": {"options": ["groq"]}}, "provider.options"
    yield "provider.options.slug", {**ok, "provider": {"options": {"groq": "prompt"}}}, "provider.options.groq"
    yield "models not strings", {**ok, "models": [1]}, "models[0]"
    yield "stream not a bool", {**ok, "stream": "often"}, "stream"
    yield "session_id not a string", {**ok, "session_id": 5}, "session_id"
    # checked by the engine that serves the request (local Whisper here), still a 400 naming the field
    yield "language the engine lacks", {**ok, "language": "ab"}, "language"
    yield "local language option", {**ok, "provider": {"options": {"local": {"language": 5}}}}, \
        "provider.options.local.language"
    yield "local temperature option", {**ok, "provider": {"options": {"local": {"temperature": "x"}}}}, \
        "provider.options.local.temperature"
    yield "local prompt option", {**ok, "provider": {"options": {"local": {"prompt": ["a"]}}}}, \
        "provider.options.local.prompt"


@pytest.mark.parametrize("path", STT_PATHS)
def test_bad_transcription_fields(api, tiny_b64, path):
    for case, body, param in bad_stt_bodies(tiny_b64):
        r = api.post(path, json=body)
        assert r.status_code == 400, (case, r.text)
        assert_error(r, 400, param)


@pytest.mark.parametrize("path", STT_PATHS)
@pytest.mark.parametrize("raw,why", [
    (b"", "empty body"), (b"{", "broken JSON"), (b"[1, 2]", "not an object"), (b'"text"', "a string"),
    (b"\xff\xfe{}", "not UTF-8"), (b'{"model": 1e999}', "number out of range"),
])
def test_malformed_json_body(api, path, raw, why):
    r = api.post(path, content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, "body")


def test_unsupported_content_type(api):
    for path in STT_PATHS:
        r = api.post(path, content=b"model=x", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        e = assert_envelope(r)
        assert "Content-Type" in e["message"]


# ---- base64 and audio content -------------------------------------------------------------------------
@pytest.mark.parametrize("path", STT_PATHS)
@pytest.mark.parametrize("data", ["!!!!not base64!!!!", "QUJD$", "A", "ÄÖÜ=", "data:audio/wav;base64,@@@"])
def test_invalid_base64(api, path, data):
    r = api.post(path, json={"model": MODEL, "input_audio": {"data": data, "format": "wav"}})
    e = assert_error(r, 400, "input_audio.data")
    assert "base64" in e["message"]


def _undecodable() -> dict[str, tuple[bytes, str]]:
    jfk = (DEV_AUDIO / "jfk_inaugural_excerpt.flac").read_bytes()
    m4a = make_audio(load_clip("librispeech_dev-clean_3752-4944-0000.flac"), "m4a")
    return {
        "random bytes": (np.random.default_rng(1).bytes(20000), "wav"),
        "random bytes as mp3": (np.random.default_rng(2).bytes(20000), "mp3"),
        "text file": (b"This is a plain text file, not audio.\n" * 100, "mp3"),
        "json file": (json.dumps({"hello": "world"}).encode(), "ogg"),
        "truncated flac": (jfk[:3000], "flac"),
        "flac cut in half": (jfk[:len(jfk) // 2], "flac"),
        "truncated m4a": (m4a[:len(m4a) // 2], "m4a"),
        "header only": (jfk[:42], "flac"),
    }


UNDECODABLE = _undecodable()


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
def test_undecodable_audio_json(api, case):
    data, fmt = UNDECODABLE[case]
    for path in STT_PATHS:
        r = api.post(path, json={"model": MODEL, "input_audio": {"data": base64.b64encode(data).decode(),
                                                                  "format": fmt}})
        assert_error(r, 400, "input_audio.data")


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
def test_undecodable_audio_multipart(api, case):
    data, fmt = UNDECODABLE[case]
    r = api.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": (f"a.{fmt}", data)})
    assert_error(r, 400, "file")


def _empty_audio() -> dict[str, tuple[bytes, str]]:
    return {
        "wav with no samples": (empty_wav(), "wav"),
        "flac with no frames": (make_audio(np.zeros(0, np.float32), "flac"), "flac"),
        "aiff with no samples": (make_audio(np.zeros(0, np.float32), "aiff"), "aiff"),
        "ogg with no pages of audio": (make_audio(np.zeros(0, np.float32), "opus"), "opus"),
        "mp4 with no audio": (make_audio(np.zeros(0, np.float32), "m4a"), "m4a"),
        "one pcm byte": (b"\x01", "pcm"),
    }


EMPTY = _empty_audio()


@pytest.mark.parametrize("case", sorted(EMPTY))
def test_empty_audio(api, case):
    data, fmt = EMPTY[case]
    r = api.post(STT_PATHS[0], json={"model": MODEL, "input_audio": {"data": base64.b64encode(data).decode(),
                                                                      "format": fmt}})
    assert_error(r, 400, "input_audio.data")
    r = api.post(STT_PATHS[1], data={"model": MODEL}, files={"file": (f"x.{fmt}", data)})
    assert_error(r, 400, "file")


def test_zero_byte_upload(api):
    r = api.post("/v1/audio/transcriptions", data={"model": MODEL}, files={"file": ("a.wav", b"")})
    e = assert_error(r, 400, "file")
    assert "empty" in e["message"]


def test_headerless_bytes_declared_as_a_container(api, tiny_wav):
    pcm = tiny_wav[44:] + b"\x10\x20" * 4000  # raw samples with no header, declared wav
    r = api.post(STT_PATHS[0], json={"model": MODEL, "input_audio": {"data": base64.b64encode(pcm).decode(),
                                                                      "format": "wav"}})
    e = assert_error(r, 400, "input_audio.data")
    assert "pcm" in e["message"]  # says how to send raw PCM


def test_unknown_format_name_with_unrecognisable_bytes(api):
    data = base64.b64encode(b"\x00\x01" * 500).decode()
    r = api.post(STT_PATHS[0], json={"model": MODEL, "input_audio": {"data": data, "format": "tape"}})
    e = assert_error(r, 400, "input_audio.format")
    assert "tape" in e["message"]


# ---- multipart fields ---------------------------------------------------------------------------------
def test_bad_multipart_fields(api, tiny_wav):
    path = "/v1/audio/transcriptions"
    f = {"file": ("a.wav", tiny_wav)}
    cases = [
        ({}, f, "model"),
        ({"model": MODEL}, None, "file"),
        ({"model": MODEL, "file": "not a file"}, {"other": ("a.wav", tiny_wav)}, "file"),
        ({"model": MODEL, "temperature": "hot"}, f, "temperature"),
        ({"model": MODEL, "temperature": "7"}, f, "temperature"),
        ({"model": MODEL, "response_format": "docx"}, f, "response_format"),
        ({"model": MODEL, "timestamp_granularities[]": "syllable"}, f, "timestamp_granularities"),
        ({"model": MODEL, "language": "english please"}, f, "language"),
        ({"model": MODEL, "provider": "{not json"}, f, "provider"),
        ({"model": MODEL, "provider": '{"sort": 1}'}, f, "provider.sort"),
        ({"model": MODEL, "stream": "perhaps"}, f, "stream"),
    ]
    for data, files, param in cases:
        r = api.post(path, data=data, files=files) if files else api.post(path, data=data, files={"x": ("x", b"")})
        assert_error(r, 400, param)


def test_malformed_multipart(api):
    r = api.post("/v1/audio/transcriptions", content=b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n",
                 headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400
    assert_envelope(r)


# ---- speech bodies --------------------------------------------------------------------------------------
def bad_tts_bodies():
    ok = {"model": "local/hibari", "input": "Hello there."}
    yield {"input": "Hi."}, "model"
    yield {**ok, "model": ["local/hibari"]}, "model"
    yield {"model": "local/hibari"}, "input"
    yield {**ok, "input": 42}, "input"
    yield {**ok, "input": ""}, "input"
    yield {**ok, "input": "   \n\t "}, "input"
    yield {**ok, "input": "x" * 4097}, "input"
    yield {**ok, "input": [{"speaker": "a"}]}, "input[0].speaker"
    yield {**ok, "input": "😀 ... !!"}, "input"
    yield {**ok, "response_format": "ogg"}, "response_format"
    yield {**ok, "response_format": 3}, "response_format"
    yield {**ok, "speed": 0.1}, "speed"
    yield {**ok, "speed": 4.01}, "speed"
    yield {**ok, "speed": "fast"}, "speed"
    yield {**ok, "speed": "nan"}, "speed"
    yield {**ok, "speed": False}, "speed"
    yield {**ok, "voice": 1}, "voice"
    yield {**ok, "voice": "no-such-voice"}, "voice"
    yield {**ok, "stream_format": "ws"}, "stream_format"
    yield {**ok, "instructions": {"tone": "calm"}}, "instructions"
    yield {**ok, "provider": "local"}, "provider"
    yield {**ok, "provider": {"ignore": "x", "order": [None]}}, "provider.order[0]"


@pytest.mark.parametrize("path", TTS_PATHS)
def test_bad_speech_fields(api, path):
    for body, param in bad_tts_bodies():
        r = api.post(path, json=body)
        assert r.status_code == 400, (body, r.text[:300])
        assert_error(r, 400, param)


def test_speech_input_limit_default_and_message(api):
    r = api.post(TTS_PATHS[0], json={"model": "local/hibari", "input": "a" * 4097})
    e = assert_error(r, 400, "input")
    assert "4096" in e["message"] and e["metadata"]["limit"] == 4096


def test_speech_input_limit_is_configurable(small):
    r = small.post(TTS_PATHS[1], json={"model": "tts-1", "input": "b" * 51})
    e = assert_error(r, 400, "input")
    assert "50" in e["message"]
    at_limit = "Fifty characters exactly, no more and no less, ok."
    assert len(at_limit) == 50
    r = small.post(TTS_PATHS[1], json={"model": "tts-1", "input": at_limit})
    assert r.status_code == 200 and len(r.content) > 0


# ---- unknown models -----------------------------------------------------------------------------------
def test_unknown_model_openrouter(api, tiny_b64):
    r = api.post(STT_PATHS[0], json={"model": "openai/whisper-2", "input_audio": {"data": tiny_b64, "format": "wav"}})
    e = assert_error(r, 404, "model")
    assert "openai/whisper-1" in e["metadata"]["suggestions"]
    assert all(isinstance(s, str) and "/" in s for s in e["metadata"]["suggestions"])
    r = api.post(TTS_PATHS[0], json={"model": "openai/tts-2", "input": "hi"})
    e = assert_error(r, 404, "model")
    assert "openai/tts-1" in e["metadata"]["suggestions"]


def test_unknown_model_openai(api, tiny_wav):
    r = api.post(STT_PATHS[1], data={"model": "whisper-9"}, files={"file": ("a.wav", tiny_wav)})
    e = assert_error(r, 404, "model")
    assert "whisper-9" in e["message"]


def test_wrong_kind_of_model(api, tiny_b64):
    r = api.post(STT_PATHS[0], json={"model": "local/hibari", "input_audio": {"data": tiny_b64, "format": "wav"}})
    assert_error(r, 400, "model")
    r = api.post(TTS_PATHS[1], json={"model": "local/whisper-base", "input": "hi"})
    assert_error(r, 400, "model")


# ---- other routes ---------------------------------------------------------------------------------------
def test_unknown_route_and_method(api):
    r = api.get("/api/v1/audio/nothing")
    assert r.status_code == 404 and assert_envelope(r)
    r = api.get("/v1/audio/speech")
    assert r.status_code == 405 and assert_envelope(r)


# ---- 413 ----------------------------------------------------------------------------------------------
def _chunks(data: bytes, n: int = 16384):
    for i in range(0, len(data), n):
        yield data[i:i + n]


def _assert_413(r: httpx.Response) -> None:
    e = assert_error(r, 413, None)
    assert "100000" in e["message"], e["message"]  # the limit is in the message


def test_413_json_with_content_length(small):
    body = json.dumps({"model": MODEL, "input_audio": {"data": "A" * 200000, "format": "wav"}}).encode()
    for path in STT_PATHS:
        _assert_413(small.post(path, content=body, headers={"content-type": "application/json"}))
    _assert_413(small.post(TTS_PATHS[0], json={"model": "local/hibari", "input": "word " * 30000}))


def test_413_json_chunked_without_content_length(small):
    body = json.dumps({"model": MODEL, "input_audio": {"data": "A" * 300000, "format": "wav"}}).encode()
    for path in STT_PATHS:
        r = small.post(path, content=_chunks(body), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
        _assert_413(r)
    r = small.post(TTS_PATHS[1], content=_chunks(json.dumps({"model": "tts-1", "input": "w " * 80000}).encode()),
                   headers={"content-type": "application/json"})
    _assert_413(r)


def test_413_multipart_with_and_without_content_length(small):
    big = np.random.default_rng(3).bytes(250000)
    for path in STT_PATHS:
        _assert_413(small.post(path, data={"model": MODEL}, files={"file": ("big.wav", big)}))
        req = small.build_request("POST", path, data={"model": MODEL}, files={"file": ("big.wav", big)})
        body = req.read()
        r = small.post(path, content=_chunks(body), headers={"content-type": req.headers["content-type"]})
        assert "content-length" not in r.request.headers
        _assert_413(r)


def test_under_the_limit_still_works(small):
    clip = make_audio(load_clip("sr_english.wav"), "mp3")
    assert len(clip) < 60000
    r = small.post(STT_PATHS[1], data={"model": MODEL, "response_format": "text"}, files={"file": ("a.mp3", clip)})
    assert r.status_code == 200, r.text


# ---- fuzzing the JSON body shapes -----------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)
MISSING = object()


def field(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A field that is valid, absent, or any JSON value at all."""
    return st.one_of(valid, st.just(MISSING), json_values)


def body_of(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not MISSING}


FUZZ_SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TINY = base64.b64encode(make_audio(silence(0.3), "wav")).decode()


# pass-through options for the engine that serves the request: their types are checked there
local_options = st.fixed_dictionaries({"local": st.fixed_dictionaries({}, optional={
    "language": field(st.sampled_from(["en", "zz", "ab"])), "prompt": json_values,
    "temperature": field(st.sampled_from([0.3, 7, "x"]))}).map(body_of)})


def stt_bodies():
    input_audio = st.fixed_dictionaries({
        "data": field(st.sampled_from([TINY, "data:audio/wav;base64," + TINY, "", "@@", TINY[:-7]])),
        "format": field(st.sampled_from(["wav", "mp3", "pcm", "audio/wav", "", "xyz"])),
    }).map(body_of)
    return st.fixed_dictionaries({
        "model": field(st.sampled_from([MODEL, "whisper-1", "openai/whisper-1", "local/hibari", "nope/nope", ""])),
        "input_audio": st.one_of(input_audio, json_values, st.just(MISSING)),
        "language": field(st.sampled_from(["en", "EN-us", "", "zz", "english", "ab"])),
        "prompt": field(st.text(max_size=30)),
        "temperature": field(st.sampled_from([0, 0.5, 1, "0.2", -1, 2])),
        "response_format": field(st.sampled_from(["json", "text", "srt", "vtt", "verbose_json", "xml"])),
        "timestamp_granularities": field(st.sampled_from([["word"], ["segment"], ["word", "segment"], [], ["x"]])),
        "provider": field(st.fixed_dictionaries({}, optional={
            "order": json_values, "only": json_values, "ignore": json_values, "allow_fallbacks": json_values,
            "sort": json_values, "options": json_values | local_options, "max_price": json_values, "zdr": json_values,
            "data_collection": json_values, "require_parameters": json_values})),
        "models": field(st.lists(st.sampled_from([MODEL, "openai/whisper-1", "bad/model"]), max_size=2)),
        "stream": field(st.booleans()),
    }).map(body_of)


def tts_bodies():
    return st.fixed_dictionaries({
        "model": field(st.sampled_from(["local/hibari", "tts-1", "openai/tts-1", "local/whisper-base", "x/y"])),
        "input": field(st.sampled_from(["Hi.", "One two.", "", "?", "😀"]) | st.text(max_size=8)),
        "voice": field(st.sampled_from(["alloy", "nova", "heart", "nobody"])),
        "response_format": field(st.sampled_from(["pcm", "mp3", "wav", "flac", "opus", "aac", "ogg"])),
        "speed": field(st.sampled_from([0.25, 1, 4, "2", 0, 5])),
        "stream_format": field(st.sampled_from(["audio", "sse", "x"])),
        "instructions": field(st.text(max_size=10)),
        "provider": field(st.fixed_dictionaries({}, optional={"order": json_values, "options": json_values,
                                                              "allow_fallbacks": json_values})),
    }).map(body_of)


def _check_fuzz_response(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers.get("x-generation-id", "").startswith("gen-")
    if r.status_code >= 400:
        assert_envelope(r)


@FUZZ_SETTINGS
@given(body=stt_bodies(), path=st.sampled_from((*STT_PATHS, "/v1/audio/translations")))
def test_fuzz_transcription_bodies(api, body, path):
    _check_fuzz_response(api.post(path, json=body))


@FUZZ_SETTINGS
@given(body=tts_bodies(), path=st.sampled_from(TTS_PATHS))
def test_fuzz_speech_bodies(api, body, path):
    _check_fuzz_response(api.post(path, json=body))


@FUZZ_SETTINGS
@given(body=json_values, path=st.sampled_from(STT_PATHS + TTS_PATHS))
def test_fuzz_any_json(api, body, path):
    _check_fuzz_response(api.post(path, content=json.dumps(body).encode(),
                                  headers={"content-type": "application/json"}))
