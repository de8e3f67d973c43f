"""A streamed answer without Starlette's per-response task group.

Starlette's StreamingResponse runs the body in an anyio task group next to a task that waits for the client
to go away (uvicorn speaks ASGI 2.3, so it takes that path). That machinery cost more CPU than the rest of a
proxied speech request. Here the body is sent from the request's own task, and one plain asyncio task waits
on `receive()`: when the client disconnects it cancels the sending task, so the upstream stream is closed and
the ledger row says `cancelled`, exactly as before."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class StreamedResponse(Response):
    def __init__(self, body: AsyncIterator[bytes], *, media_type: str, headers: Mapping[str, str] | None = None,
                 status_code: int = 200):
        self.body_iterator = body
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if sender is not None:
                sender.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                if gone:  # our cancel was swallowed on the way (a library's wait_for): stop here all the same
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if gone and sender is not None and sender.cancelling():
                sender.uncancel()  # our own cancel, delivered above or swallowed on the way: the answer ends here
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
