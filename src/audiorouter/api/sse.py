"""Server-Sent Events for our streaming transcription responses in OpenAI's shape (`transcript.text.delta`
{delta} ... `transcript.text.done` {text, logprobs (include[]=logprobs, where the engine had them), usage};
an `error` event if it fails after the response started). Deltas carry no logprobs: the done event has them all.
The text comes from the transcription job's `on_text` sink (jobs/transcription.py); reading an upstream's own
event stream is the adapter's business (providers/openai_compatible.py transcribe_stream)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from ..core.errors import GatewayError
from .errors import error_body
from .render import usage_payload

log = logging.getLogger("audiorouter.sse")
KEEPALIVE_S = 15.0


def event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def error_event(e: GatewayError, dialect: str) -> bytes:
    return event({"type": "error", "error": error_body(e, dialect)["error"]})


async def transcription_events(job: Any, dialect: str, state: Any = None,
                               on_result: Callable[[Any], None] | None = None,
                               outcome: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
    """Run a prepared TranscriptionJob and yield its SSE events. `on_result(result)` runs before the done
    event (the ledger's hook, which may adjust usage.cost); usage and route also land on `state` (the
    request's state). `outcome` receives "result" or "error"."""
    q: asyncio.Queue = asyncio.Queue()
    outcome = outcome if outcome is not None else {}

    async def runner() -> None:
        try:
            result = await job.run(on_text=lambda d: q.put_nowait(("delta", d)))
            q.put_nowait(("done", result))
        except GatewayError as e:
            q.put_nowait(("error", e))
        except Exception:  # noqa: BLE001 - reported to the client as an error event
            log.exception("streaming transcription failed")
            q.put_nowait(("error", GatewayError("internal error; the transcription was not completed", status=500,
                                                code="internal_error")))

    task = asyncio.create_task(runner())
    try:
        while True:
            try:
                # not asyncio.wait_for: on 3.11 it swallows a cancellation that lands as q.get() completes,
                # and the client leaving is exactly such a cancellation (deltas arrive in bursts)
                async with asyncio.timeout(KEEPALIVE_S):
                    kind, value = await q.get()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if kind == "delta":
                if value:
                    yield event({"type": "transcript.text.delta", "delta": value})
            elif kind == "done":
                outcome["result"] = value
                if on_result is not None:
                    on_result(value)
                if state is not None:
                    state.usage = value.usage
                    state.route = value.route
                done: dict[str, Any] = {"type": "transcript.text.done", "text": value.transcript.text}
                if value.transcript.logprobs is not None:  # include[]=logprobs (TranscriptTextDoneEvent.logprobs)
                    done["logprobs"] = value.transcript.logprobs
                done["usage"] = usage_payload(value.usage, dialect)
                yield event(done)
                return
            else:
                outcome["error"] = value
                yield error_event(value, dialect)
                return
    finally:
        if not task.done():
            task.cancel()
        job.close()


async def tracked_events(tracker: Any, gen: Any, job: Any, dialect: str, state: Any) -> AsyncIterator[bytes]:
    """transcription_events inside an already entered ledger context (api/generations.track): the row is
    settled with the result, the error event's error, or the client going away."""
    outcome: dict[str, Any] = {}
    exc: BaseException | None = None
    try:
        async for chunk in transcription_events(job, dialect, state, on_result=lambda r: gen.served(r.route, r.usage),
                                                outcome=outcome):
            yield chunk
    except BaseException as e:  # noqa: BLE001 - cancelled / disconnected: settled below, then re-raised
        exc = e
        raise
    finally:
        if exc is None and "error" in outcome:
            exc = outcome["error"]
        await asyncio.shield(tracker.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None))
