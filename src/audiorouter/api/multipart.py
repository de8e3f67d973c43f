"""multipart/form-data bodies (OpenAI's transcription upload) without the per-chunk callback machinery.

A body of up to LEAN_MAX_BYTES (Starlette's in-memory spool size, 1 MiB: a 30 s 16 kHz WAV) is received whole
and split with bytes.find on the boundary; the file part is one slice of it. Anything bigger, and any body
this splitter does not fully recognise (a preamble, boundary padding, odd header lines, a missing name, more
files/fields than allowed, an over-size field...), goes to Starlette's parser exactly as before (the bytes
already received are replayed to it), so files are still spooled to disk and every error is still its
error. The answer is the same either way: the fields in order, file parts as `FilePart`."""
from __future__ import annotations

import asyncio
import codecs
import re
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

LEAN_MAX_BYTES = 1024 * 1024
_TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")
_MAX_HEADERS = 8          # per part (python-multipart's limit); more goes to the full parser
_MAX_HEADER_LINE = 4096


class FilePart:
    """An uploaded file: its name, the part's Content-Type and its bytes (or the spooled upload)."""

    __slots__ = ("_data", "_upload", "content_type", "filename")

    def __init__(self, filename: str | None, content_type: str | None, data: bytes | None = None,
                 upload: UploadFile | None = None):
        self.filename = filename
        self.content_type = content_type
        self._data = data
        self._upload = upload

    async def read(self) -> bytes:
        if self._upload is not None:
            return await self._upload.read()
        return self._data or b""

    async def save(self, path: str, limit: int) -> tuple[int, bytes]:
        """Write the file to `path` a piece at a time (a big upload is already spooled to disk by Starlette's
        parser: copied from there, never read whole). Returns its size and its first bytes (for sniffing); stops
        once the size passes `limit` (the caller's 413)."""
        if self._upload is None:
            data = self._data or b""
            await asyncio.to_thread(_write, path, data)
            return len(data), data[:HEAD_BYTES]
        await self._upload.seek(0)
        return await asyncio.to_thread(_copy, self._upload.file, path, limit)

    async def close(self) -> None:
        if self._upload is not None:
            await self._upload.close()

    def __repr__(self) -> str:
        return f"FilePart(filename={self.filename!r}, content_type={self.content_type!r})"


HEAD_BYTES = 1024 * 1024
_COPY_STEP = 1024 * 1024


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _copy(src: Any, path: str, limit: int) -> tuple[int, bytes]:
    size, head = 0, b""
    with open(path, "wb") as out:
        while block := src.read(_COPY_STEP):
            if not head:
                head = block[:HEAD_BYTES]
            size += len(block)
            if size > limit:
                break
            out.write(block)
    return size, head


class Form:
    """The parts in order; `get` answers the last value of a name, as Starlette's FormData does."""

    def __init__(self, items: list[tuple[str, Any]]):
        self.items = items

    def multi_items(self) -> list[tuple[str, Any]]:
        return self.items

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in reversed(self.items):
            if k == key:
                return v
        return default

    async def close(self) -> None:
        for _, v in self.items:
            if isinstance(v, FilePart):
                await v.close()


def _decode(b: bytes | bytearray | memoryview, charset: str) -> str:
    try:  # as Starlette decodes field names, values and file names
        return bytes(b).decode(charset)
    except (UnicodeDecodeError, LookupError):
        return bytes(b).decode("latin-1")


# `form-data; name="..."[; filename="..."]` with plain quoted values: what parse_options_header makes of it,
# without its general (and slower) quoting rules; anything else goes to parse_options_header itself
_SIMPLE_DISPOSITION = re.compile(rb'form-data(?:;[ \t]*(?:name|filename)="[^"\\;\r\n]*")+')
_SIMPLE_PARAM = re.compile(rb'(name|filename)="([^"]*)"')


def _disposition(value: bytes) -> dict[bytes, bytes]:
    if _SIMPLE_DISPOSITION.fullmatch(value):
        return dict(_SIMPLE_PARAM.findall(value))
    return parse_options_header(value)[1]


def _charset(params: dict) -> str:
    cs = params.get(b"charset", "utf-8")
    if isinstance(cs, bytes):
        cs = cs.decode("latin-1")
    try:
        return codecs.lookup(cs).name
    except LookupError:
        return "latin-1"


def split(body: bytes | bytearray, content_type: str, *, max_files: int, max_fields: int,
          max_part_size: int) -> list[tuple[str, Any]] | None:
    """The parts of a well-formed body, or None when the full parser must decide (and word any error)."""
    main, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if main != b"multipart/form-data" or not boundary:
        return None
    charset = _charset(params)
    delim = b"\r\n--" + boundary
    if not body.startswith(delim[2:] + b"\r\n"):
        return None
    pos = len(delim)  # first header line
    items: list[tuple[str, Any]] = []
    files = fields = 0
    mv = memoryview(body)
    while True:
        hend = body.find(b"\r\n\r\n", pos - 2)
        if hend < 0:
            return None
        headers: list[tuple[bytes, bytes]] = []
        disposition = b""
        if hend >= pos:  # (hend == pos - 2: no header lines at all)
            for line in bytes(mv[pos:hend]).split(b"\r\n"):
                colon = line.find(b":")
                if colon <= 0 or len(line) > _MAX_HEADER_LINE or not _TOKEN.issuperset(line[:colon]) \
                        or b"\r" in line or b"\n" in line:
                    return None
                name = line[:colon].lower()
                value = line[colon + 1:].lstrip(b" ")
                headers.append((name, value))
                if name == b"content-disposition":
                    disposition = value
            if len(headers) > _MAX_HEADERS:
                return None
        start = hend + 4
        end = body.find(delim, start)
        if end < 0:
            return None
        after = body[end + len(delim):end + len(delim) + 2]
        if after not in (b"\r\n", b"--"):
            return None
        options = _disposition(disposition)
        if b"name" not in options:
            return None
        field = _decode(options[b"name"], charset)
        if b"filename" in options:
            files += 1
            if files > max_files:
                return None
            ctype = None
            for k, v in headers:
                if k == b"content-type":
                    ctype = v.decode("latin-1")
                    break
            items.append((field, FilePart(_decode(options[b"filename"], charset), ctype, bytes(mv[start:end]))))
        else:
            fields += 1
            if fields > max_fields or end - start > max_part_size:
                return None
            items.append((field, _decode(mv[start:end], charset)))
        if after == b"--":
            epilogue = body[end + len(delim) + 2:]
            return items if epilogue in (b"", b"\r\n") else None
        pos = end + len(delim) + 2


async def read_form(request: Request, limit: int, too_large, *, max_files: int, max_fields: int,
                    max_part_size: int) -> Form:
    """The form, through the lean splitter when the body is small and plain, else Starlette's parser.
    `too_large(limit, size=None)` makes the 413."""
    cl = request.headers.get("content-length")
    declared = int(cl) if cl and cl.strip().isdigit() else None
    if declared is not None and declared > limit:
        raise too_large(limit, declared)
    received: list[Message] = []
    size = 0
    receive = request.receive
    done = False
    if declared is None or declared <= LEAN_MAX_BYTES:
        while size <= LEAN_MAX_BYTES:
            message = await receive()
            if message["type"] != "http.request":  # a disconnect: let the full parser meet it
                received.append(message)
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            received.append(message)
            if not message.get("more_body", False):
                done = True
                break
        if done:
            body = b"".join(m.get("body", b"") for m in received)
            items = split(body, request.headers.get("content-type", ""), max_files=max_files,
                          max_fields=max_fields, max_part_size=max_part_size)
            if items is not None:
                return Form(items)
    return await _full(request, received, size, limit, too_large, max_files=max_files, max_fields=max_fields,
                       max_part_size=max_part_size)


async def _full(request: Request, replay: list, size: int, limit: int, too_large, **limits: int) -> Form:
    """Starlette's parser on the same bytes: those already received first, then the rest of the stream,
    still refusing (413) past the limit."""
    pending = list(replay)
    received = size
    receive = request.receive

    async def replaying_receive() -> Message:
        nonlocal received
        if pending:
            return pending.pop(0)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit)
        return message

    form = await Request(request.scope, replaying_receive).form(**limits)
    items: list[tuple[str, Any]] = []
    for k, v in form.multi_items():
        if isinstance(v, UploadFile):
            items.append((k, FilePart(v.filename, v.content_type, upload=v)))
        else:
            items.append((k, v))
    return Form(items)
