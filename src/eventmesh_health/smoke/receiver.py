"""The smoke run's own receiver: the subscriber (and dead-letter sink) of its one object.

One aiohttp server for the run's life, at `POST /smoke/<run>/<token>/event` and
`/smoke/<run>/<token>/deadletter` (the token: 18 random bytes, so nobody who cannot read
the run's Trigger can post to it). Events are read with probing's strict CloudEvents reader
(`heartbeat.parse_http`) and the run's event is recognised by probing's signature check
(`signing.Verifier` with the run's own ephemeral key): a forged or replayed event is not
taken for the run's. Everything parseable is answered 202, ours or not, so that a Channel's
other events (a Subscription cannot filter) are neither retried nor dead-lettered at us.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web

from eventmesh_health.probing.heartbeat import (
    HeartbeatError,
    heartbeat_from_event,
    parse_http,
)
from eventmesh_health.probing.signing import Verifier
from eventmesh_health.probing.triggers import new_pair_token

__all__ = ["Arrival", "SmokeReceiver"]

MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Arrival:
    """The run's event, as it arrived."""

    dead_letter: bool
    at: float  # time.monotonic()
    traceparent: str | None  # the W3C header or the CloudEvents extension, as received
    error_code: str | None = None  # dead letters: knativeerrorcode
    error_dest: str | None = None  # dead letters: knativeerrordest (cut short)


@dataclass
class SmokeReceiver:
    run: str
    event_type: str
    verifier: Verifier
    host: str = "127.0.0.1"
    port: int = 0
    token: str = field(default_factory=new_pair_token)
    arrivals: dict[str, list[Arrival]] = field(default_factory=dict)  # by event id
    others: int = 0  # events that were not the run's
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def path(self) -> str:
        return f"/smoke/{self.run}/{self.token}"

    async def start(self) -> int:
        """Listen; the port (chosen by the system when 0)."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self.path + "/event", self._event)
        app.router.add_post(self.path + "/deadletter", self._dead_letter)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait(self, event_id: str, timeout: float) -> Arrival | None:
        """The first arrival of `event_id` (delivered or dead-lettered) within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.arrivals.get(event_id):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return None
        return self.arrivals[event_id][0]

    async def _event(self, request: web.Request) -> web.Response:
        return await self._take(request, dead_letter=False)

    async def _dead_letter(self, request: web.Request) -> web.Response:
        return await self._take(request, dead_letter=True)

    async def _take(self, request: web.Request, *, dead_letter: bool) -> web.Response:
        at = time.monotonic()
        body = await request.read()
        try:
            event = parse_http(request.headers.items(), body)
            hb = heartbeat_from_event(event, self.event_type)
            self.verifier.check_signature(hb)
        except HeartbeatError:
            self.others += 1
            return web.Response(status=202)
        if hb.run != self.run:
            self.others += 1
            return web.Response(status=202)
        attrs = event.attributes
        trace = request.headers.get("traceparent") or attrs.get("traceparent")
        self.arrivals.setdefault(event.id, []).append(Arrival(
            dead_letter, at, trace, attrs.get("knativeerrorcode"),
            (attrs.get("knativeerrordest") or "")[:200] or None))
        self._changed.set()
        return web.Response(status=202)
