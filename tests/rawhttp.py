"""HTTP/1.1 over a bare socket: the exact bytes a hostile client sends, which httpx will not send.

httpx normalises paths (`..` segments), always frames a body correctly and refuses to lie about its
Content-Length; these tests need to do all of that. Keep-alive connections are supported, so that a
load of requests need not pay a TCP handshake each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Iterable
from typing import Any

AUTO = -1  # content_length: the body's true length


@dataclasses.dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def request_bytes(
    method: str,
    target: str | bytes,
    headers: Iterable[tuple[str, str]] | dict[str, str] = (),
    body: bytes = b"",
    *,
    content_length: int | None = AUTO,
    host: str = "127.0.0.1",
) -> bytes:
    """One request, byte for byte. `content_length`: AUTO (the truth), None (no header), or any lie."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: " + host.encode()]
    lines += [name.encode("latin-1") + b": " + value.encode("latin-1") for name, value in pairs]
    if content_length is not None:
        lines.append(b"Content-Length: %d" % (len(body) if content_length == AUTO else content_length))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes, size: int = 4096) -> bytes:
    """`body` in Transfer-Encoding: chunked framing (the header itself is the caller's)."""
    out = bytearray()
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


class RawConnection:
    """One TCP connection to 127.0.0.1:port on which the caller writes what it likes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=16 * 1024 * 1024)
        return cls(reader, writer)

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, data: bytes) -> bool:
        """Write `data`; False when the server had already closed the connection (a refusal may do so)."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            return False
        return True

    async def response(self, timeout: float = 15.0) -> RawResponse | None:
        """The next response, or None when the server closed the connection without one."""
        return await asyncio.wait_for(self._response(), timeout)

    async def _response(self) -> RawResponse | None:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        try:
            body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            body = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
        return RawResponse(status, headers, body)

    async def closed_by_server(self, timeout: float = 15.0) -> bool:
        """Read (and drop) until the server closes the connection; False if it is still open at `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def exchange(port: int, data: bytes, timeout: float = 15.0) -> RawResponse | None:
    """Send `data` on a fresh connection and read one response (None: closed without one)."""
    async with await RawConnection.open(port) as connection:
        await connection.send(data)
        try:
            return await connection.response(timeout)
        except ConnectionResetError:
            return None
