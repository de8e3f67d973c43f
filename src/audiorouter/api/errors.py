"""Error envelopes: OpenRouter's {"error": {"code", "message", "metadata"}} on /api/v1 and OpenAI's
{"error": {"message", "type", "param", "code"}} on /v1."""
from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..core.errors import GatewayError


def dialect_of(path: str) -> str:
    return "openai" if path.startswith("/v1/") or path == "/v1" else "openrouter"


def error_body(e: GatewayError, dialect: str) -> dict[str, Any]:
    if dialect == "openai":
        return {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}
    meta = dict(e.metadata)
    meta.setdefault("type", e.code)
    return {"error": {"code": e.status, "message": e.message, "metadata": meta}}


def error_response(e: GatewayError, path: str) -> Response:
    return Response(orjson.dumps(error_body(e, dialect_of(path))), status_code=e.status,
                    media_type="application/json", headers=e.headers)
