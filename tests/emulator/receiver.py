"""A CloudEvents receiver for tests: records what arrives, answers what it is told to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from .ce import CloudEvent, from_http
from .http import HttpServer, Request, Response


@dataclass(frozen=True)
class Arrival:
    event: CloudEvent
    path: str
    at: float  # time.monotonic()
    structured: bool


class Receiver:
    """`async with Receiver() as r:` - a CloudEvents endpoint on loopback at `r.url`.

    Every CloudEvent (binary or structured) is recorded in `arrivals` (also those answered with
    an error status); the answer is `status` (202 by default; set it to 503 to fail
    deliveries). Non-CloudEvents get 400 and are counted in `invalid`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 202,
                 body: bytes = b"") -> None:
        self.server = HttpServer(self._handle, host, port, name="receiver")
        self.status = status
        self.body = body
        self.arrivals: list[Arrival] = []
        self.invalid = 0
        self._changed: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self.server.url + "/"

    @property
    def events(self) -> list[CloudEvent]:
        return [a.event for a in self.arrivals]

    async def start(self) -> Receiver:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def of(self, event_id: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.event.id == event_id]

    async def wait_until(self, what: str, predicate: Callable[[], bool],
                         timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"receiver {self.url}: timed out after {timeout}s waiting for {what} "
                    f"(got {[(a.event.type, a.event.id) for a in self.arrivals]})")
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for(self, event_id: str, count: int = 1, timeout: float = 10.0) -> list[Arrival]:
        """Wait until `count` copies of the event have arrived; returns them."""
        await self.wait_until(f"{count} x event {event_id}",
                              lambda: len(self.of(event_id)) >= count, timeout)
        return self.of(event_id)

    async def _handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.text(405, "POST CloudEvents here")
        try:
            event = from_http(request.headers, request.body)
        except ValueError as err:
            self.invalid += 1
            return Response.text(400, str(err))
        structured = request.headers.get("content-type", "").startswith(
            "application/cloudevents+json")
        self.arrivals.append(Arrival(event, request.path, time.monotonic(), structured))
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return Response(self.status, self.body)
