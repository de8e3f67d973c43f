"""A client that goes away in the middle of its upload (issue 11, item 5): raw sockets send the headers with
a Content-Length, part of the body, and close. That is a normal event on every route that reads a body (JSON
transcription and translation, speech, keys, multipart): no 500, no traceback in the server's log, and no
ledger row left as an error (none is opened before the body is complete; one opened later ends `cancelled`,
tests/test_disconnect.py). The server keeps serving."""
from __future__ import annotations

import socket
import sqlite3
import time

import httpx
import pytest

from conftest import ServerProcess

AUDIO_JSON = b'{"model": "local/whisper-base", "input_audio": {"format": "wav", "data": "' + b"A" * 4000
SPEECH_JSON = b'{"model": "local/hibari", "voice": "heart", "input": "' + b"word " * 800
BODY_START = {
    "/api/v1/audio/transcriptions": AUDIO_JSON,
    "/v1/audio/transcriptions": AUDIO_JSON,
    "/v1/audio/translations": AUDIO_JSON,
    "/api/v1/audio/speech": SPEECH_JSON,
    "/v1/audio/speech": SPEECH_JSON,
    "/api/v1/keys": b'{"name": "' + b"n" * 4000,
}
BOUNDARY = "xYzDisconnect"
MULTIPART_START = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nlocal/whisper-base\r\n"
                   f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                   f"Content-Type: audio/wav\r\n\r\n").encode() + b"\0" * 4000


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disconnect")
    s = ServerProcess(env={"AUDIOROUTER_PRELOAD": "false", "AUDIOROUTER_DATABASE_URL": f"sqlite:///{tmp}/ledger.db"},
                      tmp=tmp).start()
    s.db = tmp / "ledger.db"
    yield s
    s.stop()


def send_part_and_close(gw: ServerProcess, path: str, ctype: str, start: bytes, declared: int) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode() + start)
        time.sleep(0.3)  # the server is reading the body when the client leaves


def settled(gw: ServerProcess, before: int) -> list[tuple]:
    """The ledger rows written since `before` (rowid), once the server has had time to meet the closed
    connections (each client waited before closing, so the server was reading its body) and to flush."""
    time.sleep(1.0)
    assert httpx.get(f"{gw.url}/health", timeout=10).status_code == 200
    with sqlite3.connect(gw.db) as db:
        return db.execute("SELECT id, status, error_type, error_status FROM ar_generations WHERE rowid > ?",
                          (before,)).fetchall()


def last_rowid(gw: ServerProcess) -> int:
    with sqlite3.connect(gw.db) as db:
        return db.execute("SELECT coalesce(max(rowid), 0) FROM ar_generations").fetchone()[0]


def test_uploads_cut_short_are_not_server_errors(gw):
    log_start = len(gw.log_path.read_bytes())
    before = last_rowid(gw)
    for path, start in BODY_START.items():
        send_part_and_close(gw, path, "application/json", start, 1_000_000)
    send_part_and_close(gw, "/v1/audio/transcriptions", f"multipart/form-data; boundary={BOUNDARY}",
                        MULTIPART_START, 1_000_000)
    rows = settled(gw, before)
    log = gw.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log and '" 500' not in log, log
    lines = [ln for ln in log.splitlines() if ln.strip()]
    assert len(lines) <= len(BODY_START) + 1, log  # one short line per request at most
    assert all(status == "cancelled" for _, status, _, _ in rows), rows
    # and the server is fine afterwards
    r = httpx.post(f"{gw.url}/api/v1/keys", json={"name": "after"}, timeout=30)
    assert r.status_code in (200, 201), r.text
