"""The floor: the least a Python gateway can do, to show what any process in the path costs on this machine.

    python bench/null_proxy.py --port 9000      # each request names its upstream: X-Null-Upstream: 8001

A uvloop server that reads each HTTP/1.1 request (Content-Length bodies, keep-alive), writes it unchanged to
the upstream over one kept-alive connection per client connection, and copies the answer back byte for byte
(Content-Length or chunked). No parsing of bodies, no auth, no ledger, no routing: every gateway in the
benchmark does at least this much (two extra socket hops and two extra process wake-ups per request), so its
added latency is the machine's share of any gateway's figure, not the product's."""
from __future__ import annotations

import argparse
import asyncio

import uvloop


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def header(head: bytes, wanted: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == wanted:
            return value.strip()
    return None


def content_length(head: bytes) -> int | None:
    v = header(head, b"content-length")
    return int(v) if v is not None else None


def is_chunked(head: bytes) -> bool:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False


async def copy_answer(up: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    head = await read_head(up)
    client.write(head)
    n = content_length(head)
    if n is not None:
        while n:
            data = await up.read(min(n, 1 << 16))
            if not data:
                raise ConnectionError("upstream closed mid-body")
            client.write(data)
            n -= len(data)
    elif is_chunked(head):
        while True:
            size_line = await up.readuntil(b"\r\n")
            client.write(size_line)
            size = int(size_line.split(b";")[0], 16)
            data = await up.readexactly(size + 2)
            client.write(data)
            if size == 0:
                break
    await client.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    upstreams: dict[bytes, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    try:
        while True:
            try:
                head = await read_head(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            n = content_length(head) or 0
            body = await reader.readexactly(n) if n else b""
            port = header(head, b"x-null-upstream") or b"0"
            if port not in upstreams:
                upstreams[port] = await asyncio.open_connection("127.0.0.1", int(port))
            up_r, up_w = upstreams[port]
            up_w.write(head + body)
            await copy_answer(up_r, writer)
    finally:
        for _, w in upstreams.values():
            w.close()
        writer.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", a.port, limit=1 << 20)
        async with server:
            await server.serve_forever()

    uvloop.run(run())


if __name__ == "__main__":
    main()
