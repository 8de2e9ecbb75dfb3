"""What the emulated data plane routes by: Subscriptions and Triggers, as the API server has them.

`Routes` holds the objects (plain dicts, keyed by kind and (namespace, name)) and answers the
routing questions of the hops; `KubeWatcher` keeps it current from a real API server (LIST,
then WATCH from the list's resourceVersion; on any error, or a 410, LIST again); tests without
an API server can fill it from objects (`Routes.from_objects`).

Routing rules (Knative Eventing v0.12 as Kyma 1.x ran it):

- The application channel `<app>` delivers to every Subscription in the system namespace
  (`kyma-integration`) whose `spec.channel` names the Channel `<app>`; the subscriber is
  `spec.subscriber.uri`, else `status.physicalSubscription.subscriberURI`.
- A broker's trigger channel delivers to every Trigger of its namespace whose `spec.broker`
  is the broker (`default` when empty); the broker filter then matches the Trigger's filter
  (`matches`) and delivers to its subscriber (`subscriber_uri`).
- Objects being deleted (`metadata.deletionTimestamp` set) are not routed to, as if their
  controller had already unsubscribed them. Conditions (`Ready`, ...) are not looked at: the
  data plane routes by spec, whatever the control plane reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lightkube import ALL_NS, AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource

from .ce import CloudEvent

log = logging.getLogger(__name__)

SYSTEM_NAMESPACE = "kyma-integration"
DEFAULT_BROKER = "default"
SUBSCRIPTION = "Subscription"
TRIGGER = "Trigger"
KINDS = {
    SUBSCRIPTION: ("messaging.knative.dev", "v1alpha1", "subscriptions"),
    TRIGGER: ("eventing.knative.dev", "v1alpha1", "triggers"),
}

Key = tuple[str, str]  # (namespace, name)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """`spec.delivery` (Knative DeliverySpec): retries, backoff and the dead-letter sink."""

    retry: int | None = None
    backoff_delay: float | None = None  # seconds
    backoff_policy: str = "exponential"
    dead_letter_uri: str | None = None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Delivery:
        spec = _get(obj, "spec", "delivery")
        if not isinstance(spec, Mapping):
            return cls()
        retry = spec.get("retry")
        policy = spec.get("backoffPolicy")
        return cls(
            retry=retry if isinstance(retry, int) and retry >= 0 else None,
            backoff_delay=_iso_duration(spec.get("backoffDelay")),
            backoff_policy=policy if policy in ("linear", "exponential") else "exponential",
            dead_letter_uri=destination_uri(spec.get("deadLetterSink"),
                                            _get(obj, "metadata", "namespace")),
        )

    def backoff(self, attempt: int, default: float) -> float:
        """Seconds to wait before retry number `attempt` (1, 2, ...)."""
        delay = default if self.backoff_delay is None else self.backoff_delay
        return delay * attempt if self.backoff_policy == "linear" else delay * 2 ** (attempt - 1)


_DURATION = re.compile(r"^P(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                       r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def _iso_duration(value: Any) -> float | None:
    """`PT0.2S`, `PT1M30S`, ... in seconds (None when absent or not understood)."""
    if not isinstance(value, str) or not (m := _DURATION.match(value)) or value in ("P", "PT"):
        return None
    return sum(float(m.group(g) or 0) * f for g, f in (("h", 3600), ("m", 60), ("s", 1)))


def destination_uri(dest: Any, namespace: str | None) -> str | None:
    """A Knative Destination (`uri`, or `ref` resolved to the cluster DNS name of the object,
    `uri` then being a path relative to it)."""
    if not isinstance(dest, Mapping):
        return None
    uri = _str(dest.get("uri"))
    ref = dest.get("ref")
    if isinstance(ref, Mapping) and _str(ref.get("name")):
        ns = _str(ref.get("namespace")) or namespace or "default"
        base = f"http://{ref['name']}.{ns}.svc.cluster.local"
        if uri and "://" not in uri:
            return base + "/" + uri.lstrip("/")
        return uri if uri else base + "/"
    return uri


# --- the filter -----------------------------------------------------------------------------

ANY = ""


def matches(trigger: Mapping[str, Any], event: CloudEvent) -> bool:
    """Knative Eventing v0.12's broker filter (`filterEventByAttributes`, `sourceAndType`).

    No filter, or an empty one, matches everything. With `spec.filter.attributes`, every key
    must be an attribute of the event (the standard context attributes always exist, possibly
    empty; an extension must be present) and every non-empty value must equal the event's
    exactly; an empty value matches any value of a present attribute - so `{foo: ""}` does
    *not* match an event without the extension `foo`, as in v0.12. The deprecated
    `sourceAndType` compares `source` and `type`, an empty one matching anything.
    """
    flt = _get(trigger, "spec", "filter")
    if not isinstance(flt, Mapping):
        return True
    attributes = flt.get("attributes")
    if isinstance(attributes, Mapping):
        context = {name: event.attributes.get(name, "") for name in (
            "specversion", "type", "source", "subject", "id", "time", "schemaurl",
            "datacontenttype", "datamediatype", "datacontentencoding")}
        context["schemaurl"] = event.attributes.get("dataschema", "")
        context["datamediatype"] = context["datacontenttype"].split(";", 1)[0].strip()
        context.update(event.attributes)
        for key, wanted in attributes.items():
            if key not in context:
                return False
            if wanted != ANY and str(wanted) != context[key]:
                return False
        return True
    source_and_type = flt.get("sourceAndType")
    if isinstance(source_and_type, Mapping):
        for key in ("source", "type"):
            wanted = source_and_type.get(key) or ANY
            if wanted != ANY and wanted != event.attributes.get(key):
                return False
    return True


def subscriber_uri(trigger: Mapping[str, Any]) -> str | None:
    """Where the broker filter delivers: an absolute `spec.subscriber.uri`, else what the
    controller resolved (`status.subscriberURI`), else the `ref`'s cluster DNS name."""
    subscriber = _get(trigger, "spec", "subscriber")
    uri = _str(_get(subscriber, "uri"))
    if uri and "://" in uri and not _get(subscriber, "ref"):
        return uri
    status = _get(trigger, "status")
    resolved = _str(_get(status, "subscriberURI")) or _str(_get(status, "subscriberUri"))
    if resolved:
        return resolved
    return destination_uri(subscriber, _get(trigger, "metadata", "namespace"))


# --- the objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One destination of a fan-out: a Subscription of a channel, or a Trigger of a broker."""

    kind: str
    namespace: str  # of the object
    name: str
    uid: str
    uri: str | None  # the subscriber as the object names it (cluster DNS)
    delivery: Delivery
    target_namespace: str | None  # Subscription: the broker's namespace; Trigger: its own
    obj: Mapping[str, Any]


class Routes:
    """The routing objects, and an `asyncio` notification on every change."""

    def __init__(self, system_namespace: str = SYSTEM_NAMESPACE) -> None:
        self.system_namespace = system_namespace
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self._version = 0
        self._changed: asyncio.Event | None = None

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]],
                     system_namespace: str = SYSTEM_NAMESPACE) -> Routes:
        routes = cls(system_namespace)
        for obj in objects:
            routes.put(dict(obj))
        return routes

    # changes

    def put(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind")
        if kind in self._objects:
            self._objects[kind][_key(obj)] = obj
            self._bump()

    def delete(self, obj: Mapping[str, Any]) -> None:
        kind = obj.get("kind")
        if kind in self._objects and self._objects[kind].pop(_key(obj), None) is not None:
            self._bump()

    def replace(self, kind: str, objects: Iterable[dict[str, Any]]) -> None:
        self._objects[kind] = {_key(o): o for o in objects}
        self._bump()

    def _bump(self) -> None:
        self._version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, what: str, predicate: Callable[[], bool],
                         timeout: float = 10.0) -> None:
        """Wait until `predicate()` holds, re-evaluated on every change (AssertionError on
        timeout)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"routes: timed out after {timeout}s waiting for {what}")
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # queries

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [self._objects[kind][k] for k in sorted(self._objects[kind])]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects[kind].get((namespace, name))

    def channel_subscriptions(self, app: str) -> list[Route]:
        """The Subscriptions of the application Channel `<app>`."""
        routes = []
        for (namespace, name), obj in sorted(self._objects[SUBSCRIPTION].items()):
            channel = _get(obj, "spec", "channel")
            if (namespace != self.system_namespace or _deleting(obj)
                    or _get(channel, "name") != app
                    or _get(channel, "kind") not in (None, "Channel")):
                continue
            uri = (_str(_get(obj, "spec", "subscriber", "uri"))
                   or _str(_get(obj, "status", "physicalSubscription", "subscriberURI"))
                   or destination_uri(_get(obj, "spec", "subscriber"), namespace))
            target = (_str(_get(obj, "metadata", "labels", "broker-namespace"))
                      or _uri_namespace(uri))
            routes.append(Route(SUBSCRIPTION, namespace, name, _uid(obj), uri, Delivery.of(obj),
                                target, obj))
        return routes

    def broker_triggers(self, namespace: str, broker: str = DEFAULT_BROKER) -> list[Route]:
        """The Triggers of broker `broker` in `namespace`."""
        return [t for t in (self.trigger(namespace, name)
                            for (ns, name) in sorted(self._objects[TRIGGER]) if ns == namespace)
                if t is not None and (_str(_get(t.obj, "spec", "broker")) or DEFAULT_BROKER)
                == broker]

    def trigger(self, namespace: str, name: str) -> Route | None:
        obj = self._objects[TRIGGER].get((namespace, name))
        if obj is None or _deleting(obj):
            return None
        return Route(TRIGGER, namespace, name, _uid(obj), subscriber_uri(obj), Delivery.of(obj),
                     namespace, obj)

    def summary(self) -> dict[str, Any]:
        """The routing table, for humans and the control API."""
        channels: dict[str, list[dict[str, Any]]] = {}
        for obj in self.objects(SUBSCRIPTION):
            app = _get(obj, "spec", "channel", "name")
            if isinstance(app, str):
                for r in self.channel_subscriptions(app):
                    if r.name == _get(obj, "metadata", "name"):
                        channels.setdefault(app, []).append(
                            {"subscription": r.name, "namespace": r.target_namespace,
                             "subscriber": r.uri, "deadLetterSink": r.delivery.dead_letter_uri})
        brokers: dict[str, list[dict[str, Any]]] = {}
        for obj in self.objects(TRIGGER):
            t = self.trigger(_get(obj, "metadata", "namespace"), _get(obj, "metadata", "name"))
            if t is not None:
                broker = _str(_get(obj, "spec", "broker")) or DEFAULT_BROKER
                brokers.setdefault(f"{t.namespace}/{broker}", []).append(
                    {"trigger": t.name, "uid": t.uid,
                     "filter": _get(obj, "spec", "filter", "attributes")
                     or _get(obj, "spec", "filter", "sourceAndType") or {},
                     "subscriber": t.uri, "deadLetterSink": t.delivery.dead_letter_uri})
        return {"version": self._version, "channels": channels, "brokers": brokers}


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _uid(obj: Mapping[str, Any]) -> str:
    return str(_get(obj, "metadata", "uid") or "")


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool(_get(obj, "metadata", "deletionTimestamp"))


def _uri_namespace(uri: str | None) -> str | None:
    """`http://default-broker.stage[.svc.cluster.local]` -> `stage`."""
    parsed = cluster_name(uri) if uri else None
    return parsed[1] if parsed else None


CLUSTER_SUFFIXES = (".svc.cluster.local", ".cluster.local", ".svc")


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster_name(uri: str) -> tuple[str, str | None] | None:
    """(service name, namespace) of a URI's host in cluster DNS (`name.ns.svc.cluster.local`,
    `name.ns.svc`, `name.ns`, or a bare `name`); None for loopback addresses and IP literals.
    """
    host = (urlsplit(uri).hostname or "").rstrip(".").lower()
    if not host or is_loopback(host):
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    for suffix in CLUSTER_SUFFIXES:
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    parts = host.split(".")
    return parts[0], (parts[1] if len(parts) > 1 else None)


# --- the API server -------------------------------------------------------------------------


class KubeWatcher:
    """Keeps `routes` current from the API server: per kind, LIST then WATCH, all namespaces."""

    def __init__(self, client: AsyncClient, routes: Routes, retry_max: float = 5.0) -> None:
        self.client = client
        self.routes = routes
        self.retry_max = retry_max
        self.synced = {kind: asyncio.Event() for kind in KINDS}
        self.errors: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(kind), name=f"emulator-watch-{kind}")
                       for kind in KINDS]

    async def wait_synced(self, timeout: float = 30.0) -> None:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in self.synced.values())), timeout)
        except TimeoutError:
            raise TimeoutError(f"emulator: routes not listed after {timeout}s: "
                               f"{self.errors}") from None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self, kind: str) -> None:
        group, version, plural = KINDS[kind]
        res = create_namespaced_resource(group, version, kind, plural)
        api_version = f"{group}/{version}"
        delay = 0.2

        def plain(obj: Any) -> dict[str, Any]:
            d: dict[str, Any] = obj.to_dict()
            d.setdefault("apiVersion", api_version)
            d.setdefault("kind", kind)
            return d

        while True:
            try:
                listing = self.client.list(res, namespace=ALL_NS, chunk_size=500)
                self.routes.replace(kind, [plain(o) async for o in listing])
                self.synced[kind].set()
                self.errors.pop(kind, None)
                version_seen = listing.resourceVersion
                async for type_, obj in self.client.watch(res, namespace=ALL_NS,
                                                          resource_version=version_seen,
                                                          server_timeout=300):
                    delay = 0.2
                    if type_ == "DELETED":
                        self.routes.delete(plain(obj))
                    elif type_ in ("ADDED", "MODIFIED"):
                        self.routes.put(plain(obj))
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                self.errors[kind] = f"HTTP {err.status.code}: {err.status.message}"
                if err.status.code == 404:  # CRD not installed: nothing to route by
                    self.routes.replace(kind, [])
                    self.synced[kind].set()
                    delay = self.retry_max
            except Exception as err:
                self.errors[kind] = repr(err)
                log.debug("emulator: %s watch failed: %r", kind, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
