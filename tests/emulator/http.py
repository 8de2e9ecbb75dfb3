"""A small HTTP/1.1 server on asyncio + h11, one per hop.

Why not uvicorn: a hop must be able to *stop* (close its listening socket, so that new
connections are refused, and cut the connections it has, so that pooled keep-alive
connections die too), start again on the same port, and abort a single request's connection
without an answer. A few lines over h11 give exactly that.

Handlers are `async def handler(request) -> Response`; raising `Abort` closes the connection
without a response (the client sees a reset / "server disconnected").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # 1 MiB; larger requests get 413
READ_CHUNK = 65536


class Abort(Exception):
    """Raised by a handler: close the connection at once, without a response."""


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = unquote(parts.path) or "/"
        self.query = dict(parse_qsl(parts.query))

    def segments(self) -> list[str]:
        return [s for s in self.path.split("/") if s]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, doc: Any) -> Response:
        return cls(status, json.dumps(doc).encode(), {"content-type": "application/json"})

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode(), {"content-type": "text/plain; charset=utf-8"})


Handler = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    pass


class HttpServer:
    """Serves `handler` on host:port (port 0: an ephemeral port, kept across restarts)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 name: str = "", max_body: int = MAX_BODY) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.name = name or f"http:{port}"
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen (again). Idempotent."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, backlog=128
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection.
        The handlers running on them are cancelled, as when a process dies."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = []
        for writer, task in list(self._connections.items()):
            writer.transport.abort()
            if task is not asyncio.current_task():
                task.cancel()
                tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                try:
                    request = await self._read(conn, reader)
                except _TooLarge:
                    await self._write(conn, writer, Response.text(
                        413, "request body too large"))
                    await self._drain(conn, reader)  # so that the client reads the 413
                    return
                except h11.RemoteProtocolError as err:
                    with contextlib.suppress(Exception):
                        await self._write(conn, writer, Response.text(400, f"bad request: {err}"))
                    return
                if request is None:
                    return
                try:
                    response = await self.handler(request)
                except Abort:
                    writer.transport.abort()
                    return
                except Exception as err:  # a bug in a handler must not kill the server
                    log.exception("%s: handler failed on %s %s", self.name, request.method,
                                  request.target)
                    response = Response.text(500, f"internal error: {err!r}")
                await self._write(conn, writer, response)
                if h11.MUST_CLOSE in (conn.our_state, conn.their_state):
                    return
                conn.start_next_cycle()
        except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:
            if self._server is not None:  # not ours (we cancel only on stop): pass it on
                raise
        finally:
            self._connections.pop(writer, None)
            writer.close()

    async def _read(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_CHUNK))
            elif isinstance(event, h11.Request):
                head = event
                length = _header(event.headers, b"content-length")
                if length is not None and length.isdigit() and int(length) > self.max_body:
                    raise _TooLarge
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers: dict[str, str] = {}
                for name, value in head.headers:
                    key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                return Request(head.method.decode(), head.target.decode("latin-1"), headers,
                               bytes(body))
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    @staticmethod
    async def _drain(conn: h11.Connection, reader: asyncio.StreamReader,
                     limit: int = 64 << 20, timeout: float = 5.0) -> None:
        """Read and discard the rest of a request's body (up to `limit` bytes)."""
        with contextlib.suppress(TimeoutError, ConnectionError, h11.ProtocolError):
            async with asyncio.timeout(timeout):
                while limit > 0:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(READ_CHUNK)
                        limit -= len(data)
                        conn.receive_data(data)
                    elif isinstance(event, h11.Data):
                        continue
                    else:
                        return

    @staticmethod
    async def _write(conn: h11.Connection, writer: asyncio.StreamWriter,
                     response: Response) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1"))
                   for k, v in response.headers.items() if k.lower() != "content-length"]
        headers.append((b"content-length", str(len(response.body)).encode()))
        data = conn.send(h11.Response(status_code=response.status, headers=headers))
        if response.body:
            data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(data)
        await writer.drain()


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
