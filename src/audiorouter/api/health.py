"""GET /health: answers at once, even while every local worker is busy."""
from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from .context import services

router = APIRouter()


@router.get("/health")
@router.get("/api/v1/health")
async def health(request: Request) -> Response:
    svc = services(request)
    local = svc.router.adapters.get("local")
    body = {"status": "ok", "version": svc.version,
            "providers": sorted(s for s, a in svc.router.adapters.items() if a.available())}
    if local is not None:
        body["local_queue"] = {"pending": local.pool.pending, "workers": local.pool.workers,
                               "queue_size": local.pool.queue_size}
    return Response(orjson.dumps(body), media_type="application/json")
