"""Server-Sent Events, both ways: our streaming transcription responses in OpenAI's shape
(`transcript.text.delta` {delta} ... `transcript.text.done` {text, usage}; an `error` event if it fails
after the response started), and reading an OpenAI-compatible upstream's own transcription stream
(gpt-4o-transcribe with stream=true) so its deltas pass straight through."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable

import httpx
import orjson

from ..core.errors import GatewayError, UpstreamError
from ..core.types import Transcript, TranscriptionRequest
from .errors import error_body
from .render import _usage

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
                yield event({"type": "transcript.text.done", "text": value.transcript.text,
                             "usage": _usage(value.usage, dialect)})
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


# ---- reading an upstream's SSE ---------------------------------------------------------------------------
async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each event in a text/event-stream (multi-line data joined with newlines)."""
    data: list[str] = []
    async for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
    if data:
        yield "\n".join(data)


def speaks_openai(adapter: Any) -> bool:
    try:
        from ..providers.openai_compatible import OpenAICompatibleProvider
    except ImportError:
        return False
    return isinstance(adapter, OpenAICompatibleProvider)


async def openai_stream_transcribe(adapter: Any, req: TranscriptionRequest, audio: Any, endpoint: Any,
                                   options: dict[str, Any], on_delta: Callable[[str], None]) -> Transcript:
    """POST the audio to an OpenAI-compatible upstream with stream=true and forward its text deltas as they
    arrive. An upstream that answers with plain JSON instead is parsed as a normal transcript."""
    from ..providers.openai_compatible import malformed, parse_openai_transcript
    up = await adapter.upload(audio, endpoint)
    fields = adapter.transcription_fields(req, endpoint, options)
    fields["response_format"] = "json"
    fields.pop(adapter.granularity_field, None)
    fields["stream"] = "true"
    resp = await adapter.open_stream(adapter.transcription_path, data=fields,
                                     files={"file": (up.filename, up.data, up.mime)},
                                     headers={"Accept": "text/event-stream"})
    ctype = resp.headers.get("content-type", "").lower()
    try:
        if "text/event-stream" not in ctype:
            body = await resp.aread()
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise malformed(adapter.slug, "neither an event stream nor JSON") from None
            t = parse_openai_transcript(parsed, req.task, adapter.slug)
            return t
        parts: list[str] = []
        done: dict[str, Any] | None = None
        async for data in iter_sse_data(resp.aiter_lines()):
            if data.strip() == "[DONE]":
                break
            try:
                ev = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise malformed(adapter.slug, "an event is not JSON") from None
            if not isinstance(ev, dict):
                continue
            kind = ev.get("type")
            if kind == "transcript.text.delta" and isinstance(ev.get("delta"), str):
                parts.append(ev["delta"])
                on_delta(ev["delta"])
            elif kind == "transcript.text.done":
                done = ev
                break
            elif kind == "error" or isinstance(ev.get("error"), dict):
                err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
                msg = err.get("message") if isinstance(err.get("message"), str) else "stream error"
                raise UpstreamError(f"{adapter.slug}: upstream stream failed: {adapter.scrub(msg, 300)}",
                                    retryable=not parts, metadata={"provider_name": adapter.slug})
    except httpx.HTTPError as e:
        raise adapter.transport_error(e) from None
    finally:
        await resp.aclose()
    if done is None:
        raise malformed(adapter.slug, "the event stream ended without transcript.text.done")
    text = done.get("text") if isinstance(done.get("text"), str) else "".join(parts)
    usage = done.get("usage") if isinstance(done.get("usage"), dict) else {}
    tin, tout = usage.get("input_tokens"), usage.get("output_tokens")
    return Transcript(text=text.strip(), language=req.language, task=req.task,
                      input_tokens=tin if isinstance(tin, int) else None,
                      output_tokens=tout if isinstance(tout, int) else None)
