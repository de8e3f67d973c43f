"""A Starlette Request whose body arrives in `chunk`-byte ASGI messages, as uvicorn delivers it (for testing
the body parsers without a server)."""
from __future__ import annotations

from starlette.requests import Request


def chunked_request(body: bytes, ctype: str, chunk: int, content_length: bool = True,
                    path: str = "/v1/audio/transcriptions") -> Request:
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    headers = [(b"content-type", ctype.encode("latin-1"))]
    if content_length:
        headers.append((b"content-length", str(len(body)).encode()))
    it = iter(range(len(chunks)))

    async def receive():
        i = next(it, None)
        if i is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}
    return Request({"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}, receive)
