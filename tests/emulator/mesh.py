"""The emulated Kyma 1.x / Knative v0.12 data plane: every hop an HTTP server on loopback.

See `tests/emulator/README.md` for the picture, the URL map and the fault API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, fields
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from lightkube import AsyncClient, KubeConfig
from lightkube.config.kubeconfig import SingleConfig

from .ce import CloudEvent, from_http, to_binary
from .faults import HOPS, Counters, Ctx, Effect, Fault
from .http import Abort, HttpServer, Request, Response
from .routing import (
    DEFAULT_BROKER,
    SYSTEM_NAMESPACE,
    Delivery,
    KubeWatcher,
    Routes,
    cluster_name,
    is_loopback,
    matches,
)

log = logging.getLogger(__name__)

CONTROL = "control"
PORT_ORDER = (*HOPS, CONTROL)  # --port-base P: hop i listens on P + i
ERROR_DATA_LIMIT = 1024  # bytes of the failed response kept in knativeerrordata


@dataclass(frozen=True)
class Outcome:
    """One HTTP request a hop made."""

    status: int | None  # None: no HTTP answer (refused, reset, timeout)
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else str(self.error)


@dataclass(frozen=True)
class SubscriberDelivery:
    """An event the subscriber stand-in received."""

    host: str
    path: str
    event: CloudEvent
    at: float  # time.monotonic()


class Emulator:
    """The emulated mesh. `async with Emulator(kubeconfig=...) as emu:` or `start()`/`stop()`.

    Routing comes from the API server (`kubeconfig`: a path or a lightkube `KubeConfig`;
    `client`: a lightkube `AsyncClient` of yours) or, without one, from a fixed `Routes`.
    `port_base` 0 gives every hop an ephemeral port; otherwise hop i listens on port_base + i
    in the order of `PORT_ORDER`. `host_map` maps subscriber hosts (exact `host`, `host:port`
    or fnmatch patterns such as `*.stage.svc.cluster.local`) to base URLs. `retries` and
    `retry_backoff` are the delivery defaults where an object's `spec.delivery` says nothing.
    """

    def __init__(self, kubeconfig: str | Path | KubeConfig | SingleConfig | None = None, *,
                 client: AsyncClient | None = None, routes: Routes | None = None,
                 host: str = "127.0.0.1", port_base: int = 0,
                 system_namespace: str = SYSTEM_NAMESPACE,
                 host_map: Mapping[str, str] | None = None, retries: int = 2,
                 retry_backoff: float = 0.05, request_timeout: float = 10.0,
                 trace_size: int = 10000) -> None:
        if routes is not None and (client is not None or kubeconfig is not None):
            raise ValueError("routes come from the API server or from `routes`, not both")
        self.routes = routes if routes is not None else Routes(system_namespace)
        self._kubeconfig = kubeconfig
        self._client = client
        self._own_client = False
        self._static = routes is not None
        self.host = host
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.request_timeout = request_timeout
        self.host_map: dict[str, str] = dict(host_map or {})
        handlers: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "event-service": self._event_service, "adapter": self._adapter,
            "channel": self._channel, "broker-ingress": self._broker_ingress,
            "trigger-channel": self._trigger_channel, "broker-filter": self._broker_filter,
            "subscriber": self._subscriber, CONTROL: self._control,
        }
        self.servers = {
            name: HttpServer(self._guard(name, handlers[name]), host,
                             port_base + i if port_base else 0, name=f"emulator {name}")
            for i, name in enumerate(PORT_ORDER)
        }
        self.faults: dict[str, Fault] = {}
        self._counters: dict[tuple[str, Ctx], Counters] = {}
        self._trace: deque[dict[str, Any]] = deque(maxlen=trace_size)
        self.delivered: list[SubscriberDelivery] = []
        self._watcher: KubeWatcher | None = None
        self._http: aiohttp.ClientSession | None = None
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._faults_lock: asyncio.Lock | None = None

    # --- life cycle -------------------------------------------------------------------------

    async def start(self, sync_timeout: float = 30.0) -> Emulator:
        """Read the routing objects (waits until each kind is listed), then listen."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._faults_lock = asyncio.Lock()
        # aiohttp, not httpx: a hop's forward costs a quarter of the CPU (measured on
        # loopback), and the emulator forwards every heartbeat up to eight times in one
        # process - with httpx a probing round kept it busy long enough to read as latency.
        # Idle connections are closed after 4 s, before the servers' 5 s (uvicorn's
        # default), so a post never goes out on a connection the server is closing.
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=4.0))
        if not self._static:
            if self._client is None:
                config = self._kubeconfig
                if config is None:
                    config = KubeConfig.from_env()
                elif not isinstance(config, (KubeConfig, SingleConfig)):
                    config = KubeConfig.from_file(config)
                self._client = AsyncClient(config, trust_env=False)
                self._own_client = True
            self._watcher = KubeWatcher(self._client, self.routes)
            self._watcher.start()
        try:
            if self._watcher is not None:
                await self._watcher.wait_synced(sync_timeout)
            for server in self.servers.values():
                await server.start()
        except BaseException:
            await self.stop()  # no watch or listener left behind
            raise
        return self

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watcher is not None:
            await self._watcher.stop()
        if self._http is not None:
            await self._http.close()
        if self._own_client and self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the URL map ------------------------------------------------------------------------

    def port(self, hop: str) -> int:
        return self.servers[hop].port

    def base_url(self, hop: str) -> str:
        return self.servers[hop].url

    def event_service_url(self, app: str) -> str:
        """Legacy events: `POST` `{"event-type", "event-type-version", "event-time", "data"}`."""
        return f"{self.base_url('event-service')}/{_seg(app)}/v1/events"

    def event_service_cloudevents_url(self, app: str) -> str:
        return f"{self.base_url('event-service')}/{_seg(app)}/events"

    def adapter_url(self, app: str) -> str:
        return f"{self.base_url('adapter')}/{_seg(app)}"

    def channel_url(self, app: str) -> str:
        return f"{self.base_url('channel')}/{_seg(app)}"

    def broker_ingress_url(self, namespace: str, broker: str = DEFAULT_BROKER) -> str:
        return f"{self.base_url('broker-ingress')}/{_broker_path(namespace, broker)}"

    def trigger_channel_url(self, namespace: str, broker: str = DEFAULT_BROKER) -> str:
        return f"{self.base_url('trigger-channel')}/{_broker_path(namespace, broker)}"

    def broker_filter_url(self, namespace: str, trigger: str, uid: str = "") -> str:
        tail = f"/{_seg(uid)}" if uid else ""
        return f"{self.base_url('broker-filter')}/triggers/{_seg(namespace)}/{_seg(trigger)}{tail}"

    def subscriber_url(self, host: str, path: str = "/") -> str:
        """The subscriber stand-in's address for a cluster host (see `resolve`)."""
        path = path if path.startswith("/") else "/" + path
        return f"{self.base_url('subscriber')}/{_seg(host)}{path}"

    @property
    def control_url(self) -> str:
        return self.base_url(CONTROL)

    def url_templates(self) -> dict[str, str]:
        """`str.format` templates (`{app}`, `{namespace}`) of the hops a checker sends to."""
        return {
            "event_service": f"{self.base_url('event-service')}/{{app}}/v1/events",
            "event_service_cloudevents": f"{self.base_url('event-service')}/{{app}}/events",
            "adapter": f"{self.base_url('adapter')}/{{app}}",
            "channel": f"{self.base_url('channel')}/{{app}}",
            "broker_ingress": f"{self.base_url('broker-ingress')}/{{namespace}}",
            "trigger_channel": f"{self.base_url('trigger-channel')}/{{namespace}}",
        }

    def url_map(self) -> dict[str, Any]:
        return {"hops": {name: self.base_url(name) for name in PORT_ORDER},
                "templates": self.url_templates(), "hosts": dict(self.host_map)}

    def map_host(self, pattern: str, base_url: str) -> None:
        """Send deliveries for hosts matching `pattern` to `base_url` (path kept)."""
        self.host_map[pattern.lower()] = base_url

    def resolve(self, uri: str) -> str:
        """Where a URI an object names (a cluster DNS name, usually) is served here:

        1. a `host_map` entry (exact host, `host:port`, or an fnmatch pattern, in order);
        2. loopback addresses as they are (`127.0.0.1`, `::1`, `localhost`);
        3. the mesh's own services by their cluster names: `<broker>-broker.<ns>` -> broker
           ingress, `<broker>-kne-trigger-kn-channel.<ns>` (or `-kafkachannel`) -> trigger channel,
           `<broker>-broker-filter.<ns>` -> broker filter (path kept),
           `<app>-kn-channel.kyma-integration` (or `-kafkachannel`) -> application channel,
           `<app>-event-service.kyma-integration` -> event service (path kept);
        4. any other host -> the subscriber stand-in (`subscriber_url(host, path)`), which
           records the event and answers 202: nothing ever leaves the machine.
        """
        parts = urlsplit(uri)
        host = (parts.hostname or "").rstrip(".").lower()
        hostport = f"{host}:{parts.port}" if parts.port else host
        tail = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for key in (hostport, host):
            if key in self.host_map:
                return self.host_map[key].rstrip("/") + tail
        for pattern, base in self.host_map.items():
            if fnmatch(hostport, pattern) or fnmatch(host, pattern):
                return base.rstrip("/") + tail
        if is_loopback(host):
            return uri
        name, namespace = cluster_name(uri) or (host, None)
        system = self.routes.system_namespace
        if namespace:
            if _named(name, "-broker-filter"):
                return self.base_url("broker-filter") + tail
            # NATSS names a channel's Service `<name>-kn-channel`, knative-kafka
            # `<name>-kafkachannel`.
            for suffix in ("-kne-trigger-kn-channel", "-kne-trigger-kafkachannel"):
                if _named(name, suffix):
                    return self.trigger_channel_url(namespace, name[: -len(suffix)])
            if _named(name, "-broker"):
                return self.broker_ingress_url(namespace, name[: -len("-broker")])
            for suffix in ("-kn-channel", "-kafkachannel"):
                if namespace == system and name.endswith(suffix):
                    return self.channel_url(name[: -len(suffix)])
            if namespace == system and name.endswith("-event-service"):
                return self.base_url("event-service") + tail
        return self.subscriber_url(host, tail)

    # --- faults -----------------------------------------------------------------------------

    async def inject(self, hop: str, kind: str, **params: Any) -> Fault:
        """Add a fault (see `faults.Fault`): `await emu.inject("channel", "drop", app="x")`."""
        return await self.add_fault(Fault(hop, kind, **params))

    async def add_fault(self, fault: Fault) -> Fault:
        self.faults[fault.id] = fault
        await self._sync_listeners()
        return fault

    async def remove_fault(self, fault: Fault | str) -> None:
        self.faults.pop(fault if isinstance(fault, str) else fault.id, None)
        await self._sync_listeners()

    async def clear_faults(self, hop: str | None = None) -> None:
        """Remove every fault (of one hop): normal routing again, stopped hops listen again."""
        for fault in list(self.faults.values()):
            if hop is None or fault.hop == hop:
                del self.faults[fault.id]
        await self._sync_listeners()

    @contextlib.asynccontextmanager
    async def fault(self, hop: str, kind: str, **params: Any) -> Any:
        """`async with emu.fault("adapter", "stop"):` - in force for the block only."""
        fault = await self.inject(hop, kind, **params)
        try:
            yield fault
        finally:
            await self.remove_fault(fault)

    async def _sync_listeners(self) -> None:
        assert self._faults_lock is not None, "start() the emulator first"
        async with self._faults_lock:
            for hop in HOPS:
                stopped = any(f.hop == hop and f.kind == "stop" and not f.scoped
                              for f in self.faults.values())
                server = self.servers[hop]
                if stopped and server.listening:
                    await server.stop()
                elif not stopped and not server.listening:
                    await server.start()

    def _effect(self, hop: str, ctx: Ctx, *, edge: bool = False) -> Effect:
        return Effect.of(f for f in list(self.faults.values())
                         if f.hop == hop and f.on_edge == edge and f.applies(ctx))

    # --- counters, trace, idleness ----------------------------------------------------------

    def counters(self, hop: str | None = None, **scope: str) -> Counters:
        """The sum of the counters of `hop` (all hops if None) over the requests in `scope`
        (`app=`, `namespace=`, `trigger=`, `host=`)."""
        total = Counters()
        for (h, ctx), counters in self._counters.items():
            if (hop is None or h == hop) and all(getattr(ctx, k) == v for k, v in scope.items()):
                total += counters
        return total

    def counter_table(self) -> list[dict[str, Any]]:
        rows = []
        for (hop, ctx), counters in sorted(self._counters.items(), key=lambda kv: (
                PORT_ORDER.index(kv[0][0]), *(str(getattr(kv[0][1], f.name) or "")
                                              for f in fields(Ctx)))):
            scope = {f.name: getattr(ctx, f.name) for f in fields(Ctx)
                     if getattr(ctx, f.name) is not None}
            rows.append({"hop": hop, **scope, **counters.to_json()})
        return rows

    def reset_counters(self) -> None:
        self._counters.clear()
        self._trace.clear()
        self.delivered.clear()

    def trace(self, event_id: str | None = None) -> list[dict[str, Any]]:
        """What the hops did (newest last), for one event id or all."""
        return [t for t in self._trace if event_id is None or t["id"] == event_id]

    def _count(self, hop: str, ctx: Ctx, what: str, event_id: str | None,
               detail: str | None = None) -> None:
        counters = self._counters.setdefault((hop, ctx), Counters())
        setattr(counters, what, getattr(counters, what) + 1)
        entry = {"t": time.monotonic(), "hop": hop, "what": what, "id": event_id,
                 **{f.name: getattr(ctx, f.name) for f in fields(Ctx)
                    if getattr(ctx, f.name) is not None}}
        if detail:
            entry["detail"] = detail
        self._trace.append(entry)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, what: str, predicate: Callable[[], bool],
                         timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds, re-checked whenever a counter moves."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"emulator: timed out after {timeout}s waiting for {what}")
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until no hop is handling a request and no delivery is pending (retries and
        delays included): whatever has not arrived by then never will."""
        assert self._idle is not None, "start() the emulator first"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"emulator: still busy after {timeout}s "
                                 f"({self._inflight} in flight)") from None

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        assert self._idle is not None
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a delivery in the background; busy from now, not from when it starts."""
        busy = self._busy()
        busy.__enter__()

        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("emulator: delivery failed")
            finally:
                busy.__exit__(None, None, None)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_delivered(self, count: int = 1, timeout: float = 10.0,
                             **match: str) -> list[SubscriberDelivery]:
        """Wait for `count` events at the subscriber stand-in (`host=`, `id=`, `type=`...)."""
        def found() -> list[SubscriberDelivery]:
            return [d for d in self.delivered
                    if all((d.host if k == "host" else d.event.get(k)) == v
                           for k, v in match.items())]
        await self.wait_until(f"{count} deliveries {match}", lambda: len(found()) >= count,
                              timeout)
        return found()

    # --- sending ----------------------------------------------------------------------------

    async def _post(self, url: str, event: CloudEvent) -> Outcome:
        assert self._http is not None
        headers, body = to_binary(event)
        try:
            async with self._http.post(url, data=body, headers=headers) as answer:
                return Outcome(answer.status, await answer.read())
        except TimeoutError as err:
            return Outcome(None, error=f"timeout: {type(err).__name__}")
        except aiohttp.ClientError as err:
            return Outcome(None, error=f"{type(err).__name__}: {err}")

    async def _forward(self, hop: str, ctx: Ctx, url: str, event: CloudEvent,
                       copies: int) -> Outcome:
        """A synchronous hop's forward (each copy); the first failure, else the last answer."""
        failure: Outcome | None = None
        last = Outcome(202)
        for _ in range(copies):
            last = await self._post(url, event)
            if last.ok:
                self._count(hop, ctx, "forwarded", event.id)
            else:
                self._count(hop, ctx, "failed", event.id, last.describe())
                failure = failure or last
        return failure or last

    async def _deliver(self, hop: str, ctx: Ctx, uri: str | None, event: CloudEvent,
                       delivery: Delivery, retries: int, edge: Effect | None = None) -> bool:
        """Deliver with retries (`spec.delivery` or the default), then to the dead-letter
        sink with the `knativeerror*` extensions. True when delivered or dead-lettered."""
        if edge is not None and edge.delay:
            await asyncio.sleep(edge.delay)
        attempts = 1 + (delivery.retry if delivery.retry is not None else retries)
        last = Outcome(None, error="no subscriber URI")
        if uri:
            url = self.resolve(uri)
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(delivery.backoff(attempt, self.retry_backoff))
                if edge is not None and edge.stop:
                    last = Outcome(None, error="connection refused (fault on the channel edge)")
                elif edge is not None and edge.status:
                    last = Outcome(edge.status, b"fault on the channel edge")
                else:
                    last = await self._post(url, event)
                if last.ok:
                    self._count(hop, ctx, "forwarded", event.id)
                    return True
        self._count(hop, ctx, "failed", event.id, f"{uri}: {last.describe()}")
        if not delivery.dead_letter_uri:
            return False
        extensions = {"knativeerrordest": uri or "", "knativeerrorcode": str(last.status or 0)}
        if last.body:
            extensions["knativeerrordata"] = base64.b64encode(
                last.body[:ERROR_DATA_LIMIT]).decode()
        dead = event.copy(**extensions)
        url = self.resolve(delivery.dead_letter_uri)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(delivery.backoff(attempt, self.retry_backoff))
            outcome = await self._post(url, dead)
            if outcome.ok:
                self._count(hop, ctx, "dead_lettered", event.id, delivery.dead_letter_uri)
                return True
        log.warning("emulator %s: dead-letter sink %s failed for %s: %s", hop,
                    delivery.dead_letter_uri, event.id, outcome.describe())
        return False

    # --- the hops ---------------------------------------------------------------------------

    def _guard(self, hop: str, handler: Callable[[Request], Awaitable[Response]]
               ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            if hop == CONTROL:
                return await handler(request)
            with self._busy():
                return await handler(request)
        return guarded

    async def _admit(self, hop: str, ctx: Ctx, event: CloudEvent,
                     accepted: Response) -> tuple[Effect, Response | None]:
        """Apply the faults in force to a request entering `hop`. Returns the effect and, when
        the request stops here, the answer."""
        effect = self._effect(hop, ctx)
        if effect.stop:
            self._trace.append({"t": time.monotonic(), "hop": hop, "what": "refused",
                                "id": event.id})
            raise Abort
        self._count(hop, ctx, "received", event.id)
        if effect.delay:
            await asyncio.sleep(effect.delay)
        if effect.status:
            self._count(hop, ctx, "rejected", event.id, f"fault: HTTP {effect.status}")
            return effect, Response.text(effect.status, f"fault injected at {hop}")
        if effect.drop:
            self._count(hop, ctx, "dropped", event.id, "fault: drop")
            return effect, accepted
        return effect, None

    def _bad(self, hop: str, ctx: Ctx, status: int, message: str) -> Response:
        self._count(hop, ctx, "received", None)
        self._count(hop, ctx, "rejected", None, message)
        return Response.text(status, message)

    def _event_of(self, request: Request) -> CloudEvent:
        if request.method != "POST":
            raise ValueError("POST a CloudEvent")
        return from_http(request.headers, request.body)

    async def _event_service(self, request: Request) -> Response:
        seg = request.segments()
        if request.method == "GET" and seg[-2:] == ["v1", "health"] and len(seg) <= 3:
            return Response.json(200, {"status": "UP"})
        if len(seg) == 3 and seg[1:] == ["v1", "events"]:
            legacy = True
        elif len(seg) == 2 and seg[1] == "events":
            legacy = False
        else:
            return Response.text(404, "POST /<app>/v1/events (legacy) or /<app>/events")
        app = seg[0]
        ctx = Ctx(app=app)
        if request.method != "POST":
            return Response.text(405, "POST here")
        try:
            event = legacy_to_cloudevent(app, request.body) if legacy else self._event_of(request)
        except LegacyError as err:
            self._count("event-service", ctx, "received", None)
            self._count("event-service", ctx, "rejected", None, str(err))
            return Response.json(400, err.body)
        except ValueError as err:
            return self._bad("event-service", ctx, 400, str(err))
        published = (Response.json(200, {"event-id": event.id, "status": "published",
                                         "reason": "Message successfully published to the "
                                                   "channel"})
                     if legacy else Response(202))
        effect, answer = await self._admit("event-service", ctx, event, published)
        if answer is not None:
            return answer
        outcome = await self._forward("event-service", ctx, self.adapter_url(app), event,
                                      effect.copies)
        return published if outcome.ok else _failed("event-service", outcome)

    async def _adapter(self, request: Request) -> Response:
        seg = request.segments()
        if request.method == "GET" and len(seg) == 2 and seg[1] == "healthz":
            return Response.text(200, "ok")
        if len(seg) != 1:
            return Response.text(404, "POST CloudEvents to /<app>")
        app = seg[0]
        ctx = Ctx(app=app)
        try:
            event = self._event_of(request).copy(source=app)  # the adapter's source is <app>
        except ValueError as err:
            return self._bad("adapter", ctx, 400, str(err))
        effect, answer = await self._admit("adapter", ctx, event, Response(202))
        if answer is not None:
            return answer
        outcome = await self._forward("adapter", ctx, self.channel_url(app), event,
                                      effect.copies)
        return Response(202) if outcome.ok else _failed("adapter", outcome)

    async def _channel(self, request: Request) -> Response:
        seg = request.segments()
        if len(seg) != 1:
            return Response.text(404, "POST CloudEvents to /<app>")
        app = seg[0]
        ctx = Ctx(app=app)
        try:
            event = self._event_of(request)
        except ValueError as err:
            return self._bad("channel", ctx, 400, str(err))
        effect, answer = await self._admit("channel", ctx, event, Response(202))
        if answer is not None:
            return answer
        for route in self.routes.channel_subscriptions(app):
            edge_ctx = Ctx(app=app, namespace=route.target_namespace)
            edge = self._effect("channel", edge_ctx, edge=True)
            if edge.drop:
                self._count("channel", edge_ctx, "dropped", event.id, "fault: drop (edge)")
                continue
            for _ in range(effect.copies * edge.copies):
                self._spawn(self._deliver("channel", edge_ctx, route.uri, event, route.delivery,
                                          self.retries, edge))
        return Response(202)

    def _broker_of(self, seg: list[str]) -> tuple[str, str] | None:
        if len(seg) == 1:
            return seg[0], DEFAULT_BROKER
        if len(seg) == 2:
            return seg[0], seg[1]
        return None

    async def _broker_ingress(self, request: Request) -> Response:
        where = self._broker_of(request.segments())
        if where is None:
            return Response.text(404, "POST CloudEvents to /<namespace>[/<broker>]")
        namespace, broker = where
        try:
            event = self._event_of(request)
        except ValueError as err:
            return self._bad("broker-ingress", Ctx(namespace=namespace), 400, str(err))
        ctx = Ctx(app=event.source, namespace=namespace)
        effect, answer = await self._admit("broker-ingress", ctx, event, Response(202))
        if answer is not None:
            return answer
        outcome = await self._forward("broker-ingress", ctx,
                                      self.trigger_channel_url(namespace, broker), event,
                                      effect.copies)
        return Response(202) if outcome.ok else _failed("broker-ingress", outcome)

    async def _trigger_channel(self, request: Request) -> Response:
        where = self._broker_of(request.segments())
        if where is None:
            return Response.text(404, "POST CloudEvents to /<namespace>[/<broker>]")
        namespace, broker = where
        try:
            event = self._event_of(request)
        except ValueError as err:
            return self._bad("trigger-channel", Ctx(namespace=namespace), 400, str(err))
        ctx = Ctx(app=event.source, namespace=namespace)
        effect, answer = await self._admit("trigger-channel", ctx, event, Response(202))
        if answer is not None:
            return answer
        for route in self.routes.broker_triggers(namespace, broker):
            url = self.broker_filter_url(namespace, route.name, route.uid)
            for _ in range(effect.copies):
                # The filter retries towards the subscriber; towards the filter: no retries.
                self._spawn(self._deliver("trigger-channel", ctx, url, event, Delivery(), 0))
        return Response(202)

    async def _broker_filter(self, request: Request) -> Response:
        seg = request.segments()
        if len(seg) not in (3, 4) or seg[0] != "triggers":
            return Response.text(404, "POST CloudEvents to /triggers/<namespace>/<trigger>/<uid>")
        namespace, name = seg[1], seg[2]
        uid = seg[3] if len(seg) == 4 else ""
        try:
            event = self._event_of(request)
        except ValueError as err:
            return self._bad("broker-filter", Ctx(namespace=namespace, trigger=name), 400,
                             str(err))
        ctx = Ctx(app=event.source, namespace=namespace, trigger=name)
        route = self.routes.trigger(namespace, name)
        if route is None or (uid and route.uid and uid != route.uid):
            return self._bad("broker-filter", ctx, 404, f"no Trigger {namespace}/{name} "
                             f"with uid {uid or '(any)'}")
        effect, answer = await self._admit("broker-filter", ctx, event, Response(202))
        if answer is not None:
            return answer
        if not matches(route.obj, event):
            self._count("broker-filter", ctx, "filtered", event.id)
            return Response(202)
        results = [await self._deliver("broker-filter", ctx, route.uri, event, route.delivery,
                                       self.retries) for _ in range(effect.copies)]
        return Response(202) if all(results) else Response.text(502, "delivery failed")

    async def _subscriber(self, request: Request) -> Response:
        seg = request.segments()
        if not seg:
            return Response.text(404, "POST CloudEvents to /<host>/<path>")
        host = seg[0]
        namespace = (cluster_name(f"http://{host}/") or (host, None))[1]
        try:
            event = self._event_of(request)
        except ValueError as err:
            return self._bad("subscriber", Ctx(namespace=namespace, host=host), 400, str(err))
        ctx = Ctx(app=event.source, namespace=namespace, host=host)
        effect, answer = await self._admit("subscriber", ctx, event, Response(202))
        if answer is not None:
            return answer
        for _ in range(effect.copies):  # `duplicate` here: as if it had arrived that often
            self.delivered.append(SubscriberDelivery(
                host, "/" + "/".join(seg[1:]), event, time.monotonic()))
        self._notify()
        return Response(202)

    # --- the control API --------------------------------------------------------------------

    async def _control(self, request: Request) -> Response:
        seg, method = request.segments(), request.method
        try:
            if seg == ["healthz"]:
                return Response.text(200, "ok")
            if seg == ["_urls"] and method == "GET":
                return Response.json(200, self.url_map())
            if seg == ["_routes"] and method == "GET":
                return Response.json(200, self.routes.summary())
            if seg == ["_faults"] and method == "GET":
                return Response.json(200, [f.to_json() for f in self.faults.values()])
            if seg == ["_faults"] and method == "POST":
                fault = await self.add_fault(Fault.from_json(request.json()))
                return Response.json(201, fault.to_json())
            if seg == ["_faults"] and method == "DELETE":
                await self.clear_faults(request.query.get("hop"))
                return Response(204)
            if len(seg) == 2 and seg[0] == "_faults" and method == "DELETE":
                if seg[1] not in self.faults:
                    return Response.json(404, {"error": f"no fault {seg[1]}"})
                await self.remove_fault(seg[1])
                return Response(204)
            if seg == ["_counters"] and method == "GET":
                return Response.json(200, {
                    "hops": {hop: self.counters(hop).to_json() for hop in HOPS},
                    "scoped": self.counter_table()})
            if seg == ["_counters"] and method == "DELETE":
                self.reset_counters()
                return Response(204)
            if seg == ["_hosts"] and method == "GET":
                return Response.json(200, self.host_map)
            if seg == ["_hosts"] and method == "POST":
                doc = request.json()
                self.map_host(str(doc["pattern"]), str(doc["url"]))
                return Response.json(201, self.host_map)
            if seg == ["_delivered"] and method == "GET":
                return Response.json(200, [
                    {"host": d.host, "path": d.path, "attributes": d.event.attributes,
                     "data": d.event.data.decode("utf-8", "replace")}
                    for d in self.delivered
                    if request.query.get("host") in (None, d.host)])
            if seg == ["_trace"] and method == "GET":
                return Response.json(200, self.trace(request.query.get("id")))
            if seg == ["_idle"] and method == "POST":
                await self.idle(float(request.query.get("timeout", "10")))
                return Response(204)
        except (ValueError, KeyError, TypeError) as err:
            return Response.json(400, {"error": str(err)})
        except AssertionError as err:
            return Response.json(504, {"error": str(err)})
        return Response.json(404, {"error": f"no {method} {request.path}"})


class LegacyError(ValueError):
    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.body = {"status": 400, "type": "validation_violation", "message": message,
                     "details": details}


def legacy_to_cloudevent(app: str, body: bytes) -> CloudEvent:
    """The event service's conversion of a legacy Kyma event (`POST /<app>/v1/events`)."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise LegacyError("request body is not JSON", []) from None
    if not isinstance(doc, dict):
        raise LegacyError("request body is not a JSON object", [])
    details = [{"field": name, "type": "missing_field", "message": f"{name} is required"}
               for name in ("event-type", "event-type-version", "event-time", "data")
               if name not in doc or (name != "data" and not isinstance(doc[name], str))
               or doc[name] in ("", None)]
    if details:
        raise LegacyError("Missing field", details)
    attrs = {"specversion": "1.0", "id": str(doc.get("event-id") or uuid.uuid4()),
             "source": app, "type": doc["event-type"],
             "eventtypeversion": doc["event-type-version"], "time": doc["event-time"],
             "datacontenttype": "application/json"}
    return CloudEvent(attrs, json.dumps(doc["data"]).encode())


def _failed(hop: str, outcome: Outcome) -> Response:
    """What a synchronous hop answers when its forward failed: the downstream status, or 502
    (no answer) / 504 (timeout)."""
    if outcome.status is not None:
        status = outcome.status if outcome.status >= 400 else 502
    else:
        status = 504 if (outcome.error or "").startswith("timeout") else 502
    return Response.text(status, f"{hop}: forwarding failed: {outcome.describe()}")


def _named(name: str, suffix: str) -> bool:
    return name.endswith(suffix) and len(name) > len(suffix)


def _seg(value: str) -> str:
    return quote(value, safe="")


def _broker_path(namespace: str, broker: str) -> str:
    return _seg(namespace) if broker == DEFAULT_BROKER else f"{_seg(namespace)}/{_seg(broker)}"
