"""api/fastpath.py: the audio endpoints are dispatched straight to their handlers, with the same answers
FastAPI's route table and exception handlers would give."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from sqlalchemy.exc import OperationalError

from audiorouter.api.auth import store_error_response
from audiorouter.api.fastpath import FastRoutes, audio_routes
from audiorouter.core.errors import InvalidRequest


def test_every_fast_route_is_the_same_endpoint_fastapi_declares(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOROUTER_DATA_DIR", str(tmp_path))
    from audiorouter.api.app import create_app
    from audiorouter.config import Settings
    app = create_app(Settings())
    paths = app.openapi()["paths"]  # what FastAPI routes (its route objects are internal)
    fast = audio_routes()
    assert len(fast) == 6
    for (method, path), handler in fast.items():
        op = paths[path][method.lower()]
        assert op["operationId"].startswith(handler.__name__ + "_"), (path, op["operationId"])
    # and nothing else is taken away from FastAPI
    assert not [k for k in fast if not k[1].startswith(("/api/v1/audio/", "/v1/audio/"))]


def call(app, path: str, method: str = "POST") -> tuple[int, dict, list]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], orjson.loads(body) if body else {}, start["headers"]


def make(handler):
    inner_calls = []

    async def inner(scope, receive, send):
        inner_calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    return FastRoutes(inner, {("POST", "/v1/audio/speech"): handler, ("POST", "/api/v1/audio/speech"): handler},
                      on_error=store_error_response), inner_calls


def test_a_gateway_error_gets_the_dialects_envelope():
    async def handler(request):
        raise InvalidRequest("voice: unknown voice 'x'", param="voice")
    app, _ = make(handler)
    status, body, _ = call(app, "/v1/audio/speech")
    assert status == 400 and body["error"]["param"] == "voice" and "unknown voice" in body["error"]["message"]
    status, body, _ = call(app, "/api/v1/audio/speech")
    assert status == 400 and body["error"]["code"] == 400 and "unknown voice" in body["error"]["message"]


def test_a_database_error_is_a_503_with_retry_after():
    async def handler(request):
        raise OperationalError("INSERT", {}, Exception("database is locked"))
    app, _ = make(handler)
    status, body, headers = call(app, "/api/v1/audio/speech")
    assert status == 503 and body["error"]["metadata"]["type"] == "store_unavailable"
    assert (b"retry-after", b"2") in headers


def test_any_other_exception_goes_up_to_the_500_handler():
    async def handler(request):
        raise KeyError("bug")
    app, _ = make(handler)
    with pytest.raises(KeyError):
        call(app, "/v1/audio/speech")


def test_other_paths_and_methods_go_to_fastapi():
    async def handler(request):
        raise AssertionError("not for this path")
    app, inner_calls = make(handler)
    assert call(app, "/v1/models", "GET")[0] == 204
    assert call(app, "/v1/audio/speech", "GET")[0] == 204
    assert inner_calls == ["/v1/models", "/v1/audio/speech"]
