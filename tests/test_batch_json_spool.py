"""The batch jobs' JSON bodies: `BodyScanner(spool=f)` decodes input_audio.data into a file as the body arrives
(api/json_body.py) and must answer exactly what the in-memory scanner answers, on any chunk split: the same
bytes (in the file), the same error kind, the same blank flag, the same rest of the body."""
from __future__ import annotations

import base64
import os
import random

import orjson
import pytest

from audiorouter.api.json_body import SPOOL_HEAD, BodyScanner, SpooledBase64, StreamedBase64
from audiorouter.api.parsing import ScannedBody, parse_json, streamed_b64
from audiorouter.core.errors import InvalidRequest

AUDIO = os.urandom(3 * 1024 * 1024 + 5)  # over SPOOL_HEAD, not a multiple of 3
B64 = base64.b64encode(AUDIO)


def _body(data: bytes) -> bytes:
    return b'{"model": "m", "input_audio": {"format": "wav", "data": "' + data + b'"}, "webhook": {"url": "u"}}'


BODIES = {
    "plain": _body(B64),
    "data uri": _body(b"data:audio/wav;base64," + B64),
    "escaped slashes and line breaks": _body(B64[:1000].replace(b"/", b"\\/") + b"\\n" + B64[1000:]),
    "url-safe, unpadded": _body(base64.urlsafe_b64encode(AUDIO).rstrip(b"=")),
    "small": _body(base64.b64encode(b"RIFF1234")),
    "outside the alphabet": _body(B64[:5000] + b"*" + B64[5000:]),
    "non-ascii": _body(B64[:100] + "é".encode() + B64[100:]),
    "empty": _body(b""),
    "blank": _body(b"   "),
    "only padding": _body(b"===="),
}


def _scan(body: bytes, cuts: list[int], spool=None) -> BodyScanner:
    scan = BodyScanner(spool)
    prev = 0
    for c in [*cuts, len(body)]:
        scan.feed(body[prev:c])
        prev = c
    return scan.finish()


def _parsed(scan: BodyScanner) -> dict:
    body = ScannedBody()
    body += scan.skel
    body.scan = scan
    return parse_json(body)


@pytest.mark.parametrize("name", list(BODIES))
def test_spooled_scan_equals_the_in_memory_scan(name, tmp_path):
    body = BODIES[name]
    rng = random.Random(name)
    for trial in range(4):
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.choice([1, 7, 300]))))
        mem = _scan(body, cuts)
        path = tmp_path / f"spool-{trial}"
        with open(path, "w+b") as f:
            disk = _scan(body, cuts, f)
        got, want = disk.result, mem.result
        assert isinstance(got, SpooledBase64) and isinstance(want, StreamedBase64)
        assert (got.error, got.blank) == (want.error, want.blank)
        if want.error is None:
            written = path.read_bytes()
            assert written == want.data
            assert got.size == len(want.data) and got.data == want.data[:SPOOL_HEAD]
        # the rest of the body parses the same; input_audio.data is the decoded value either way
        a, b = _parsed(disk), _parsed(mem)
        assert a["input_audio"]["data"] is got and b["input_audio"]["data"] is want
        a["input_audio"]["data"] = b["input_audio"]["data"] = None
        assert a == b == {**orjson.loads(_body(b"")), "input_audio": {"format": "wav", "data": None}}


@pytest.mark.parametrize("name,message", [("outside the alphabet", "invalid base64"),
                                          ("non-ascii", "non-ASCII"), ("empty", "empty"),
                                          ("only padding", "empty")])
def test_spooled_errors_are_the_same_400(name, message, tmp_path):
    with open(tmp_path / "spool", "w+b") as f:
        v = _scan(BODIES[name], [17], f).result
    assert isinstance(v, SpooledBase64)
    with pytest.raises(InvalidRequest) as e:
        streamed_b64(v, "input_audio.data")
    assert e.value.param == "input_audio.data" and message in e.value.message


def test_the_spool_is_left_open_for_the_caller(tmp_path):
    with open(tmp_path / "spool", "w+b") as f:
        v = _scan(BODIES["small"], [40], f).result
        assert not f.closed and f.tell() == v.size == 8
        f.seek(0)
        assert f.read() == v.data == b"RIFF1234"
