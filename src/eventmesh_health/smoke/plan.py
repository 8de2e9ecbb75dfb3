"""What to smoke-test, from the profile's data plane: the root, the object to put on it, and
the injection points, upstream first (pure: the caller reads the objects).

A Knative v1 flow (`DataPlane.flows`): a Broker gets a Trigger, a Channel a Subscription,
as probing's heartbeat objects (`flows.desired_subscriber`); the event goes into the root's
address, and for a Broker a second injection point is its trigger channel
(`FlowProbe.inner_address`). A Kyma 1.x application (`DataPlane.hops`): a Trigger on the
namespace's Broker filtered on the application's source (`triggers.desired_trigger`); the
event goes into the application's event-service (the legacy `POST /<app>/v1/events`, which
the HTTP adapter turns into a CloudEvent), then, to localise a failure, into the application
Channel's address and the namespace's broker ingress — the hops heartbeats use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventmesh_health.probing.flows import FlowTarget, desired_subscriber, flow_key
from eventmesh_health.probing.heartbeat import Hop
from eventmesh_health.probing.sender import (
    DEFAULT_BROKER_URL_TEMPLATE,
    DEFAULT_EVENT_SERVICE_URL_TEMPLATE,
)
from eventmesh_health.probing.triggers import TriggerConfig, desired_trigger
from eventmesh_health.smoke.objects import SMOKE_EVENT_TYPE
from eventmesh_health.topology import FlowProbe, Kind, Profile

__all__ = ["Injection", "Plan", "PlanError", "application_plan", "flow_plan", "flow_probe_of"]

Getter = Callable[[Kind, str, str], Mapping[str, Any] | None]


class PlanError(ValueError):
    """The target cannot be smoke-tested as named (bad usage or input: exit 2)."""


@dataclass(frozen=True, slots=True)
class Injection:
    """One place the run can post its event: hop id, URL (None: unknown), what it is and
    what lies behind it (named when injections from here on fail)."""

    hop: str
    url: str | None
    entry_text: str
    segment_text: str
    legacy: bool = False  # Kyma's legacy event-service body instead of a binary CloudEvent

    @property
    def heartbeat_hop(self) -> Hop:
        return {"ingress": Hop.INGRESS, "broker": Hop.BROKER}.get(self.hop, Hop.CHANNEL)


@dataclass(frozen=True, slots=True)
class Plan:
    root: Kind
    namespace: str
    name: str
    source: str  # the event's source, which the object filters on
    subscriber_kind: Kind
    body: dict[str, Any]  # the object to create, before `objects.relabel`
    injections: tuple[Injection, ...]  # upstream first; the first is the real entry point

    @property
    def what(self) -> str:
        if not self.namespace:
            return f"{self.root.kind} {self.name} (namespace {self.object_namespace})"
        return f"{self.root.kind} {self.namespace}/{self.name}"

    @property
    def object_namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])


def _address(obj: Mapping[str, Any] | None) -> str | None:
    address = ((obj or {}).get("status") or {}).get("address") or {}
    if address.get("url"):
        return str(address["url"])
    return f"http://{address['hostname']}" if address.get("hostname") else None


def _at(obj: Mapping[str, Any] | None, path: tuple[str, ...]) -> str | None:
    node: Any = obj or {}
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return str(node) if node else None


def flow_probe_of(profile: Profile, target: str) -> tuple[FlowProbe, Kind, str] | None:
    """`broker/NAME`, `channel/NAME`, `KIND/NAME` → (probe, root kind, name)."""
    kind_text, sep, name = target.partition("/")
    if not sep or profile.data_plane is None:
        return None
    for probe in profile.data_plane.flows:
        for kind in probe.roots:
            if kind_text.lower() in (probe.flow, kind.kind.lower(), kind.plural):
                return probe, kind, name
    return None


# Knative retries 404 (and 5xx, 408, 409, 429, no answer) "because a 404 can be returned when
# a pod is in the process of becoming ready" (knative/eventing@v0.48.0
# pkg/kncloudevents/retries.go SelectiveRetry): the broker filter answers 404 for a Trigger
# its informer has not seen yet, after the Trigger is Ready and its subscription
# acknowledged — seen on the real mesh as a lost first event. A few quick retries (3 s in
# all) cover that, and a broken hop still ends in the dead letter that names it.
SMOKE_RETRY = {"retry": 5, "backoffPolicy": "linear", "backoffDelay": "PT0.2S"}


def _with_retry(body: dict[str, Any]) -> dict[str, Any]:
    delivery = body["spec"].get("delivery")
    if isinstance(delivery, dict):  # not on v1alpha1 (Knative v0.12): no spec.delivery there
        delivery.update(SMOKE_RETRY)
    return body


def _templated(url: str) -> str:
    return url.replace("{", "{{").replace("}", "}}")


def flow_plan(probe: FlowProbe, root: Kind, namespace: str, name: str,
              obj: Mapping[str, Any], receiver_url: str, dead_letter_url: str,
              hop_urls: Mapping[str, str]) -> Plan:
    """A Knative flow's plan; `hop_urls`: per hop id a template ({namespace}, {name}) that
    replaces the address the root's status gives (a CLI outside the cluster)."""
    fmt = {"namespace": namespace, "name": name, "kind": root.kind}
    entry = hop_urls.get(probe.hop, "").format(**fmt) or _address(obj)
    target = FlowTarget(probe, root, namespace, name, flow_key(probe.flow, namespace, name),
                        entry)
    config = TriggerConfig(receiver_url_template=_templated(receiver_url),
                           dead_letter_url_template=_templated(dead_letter_url),
                           heartbeat_type=SMOKE_EVENT_TYPE,
                           api_version=probe.subscriber.kind.api_version)
    injections = [Injection(probe.hop, entry, probe.entry_text.format(**fmt),
                            probe.segment_text.format(**fmt))]
    if probe.inner_address is not None:
        inner = (hop_urls.get("trigger-channel", "").format(**fmt)
                 or _at(obj, probe.inner_address))
        injections.append(Injection("trigger-channel", inner,
                                    probe.inner_entry_text.format(**fmt),
                                    probe.inner_segment_text.format(**fmt)))
    return Plan(root, namespace, name, target.key, probe.subscriber.kind,
                _with_retry(desired_subscriber(config, target)), tuple(injections))


def application_plan(profile: Profile, application: str, namespace: str,
                     get: Getter, receiver_url: str, dead_letter_url: str,
                     hop_urls: Mapping[str, str]) -> Plan:
    """A Kyma application's plan in one bound namespace (`get` reads an object or None)."""
    plane = profile.data_plane
    if plane is None or plane.trigger is None or plane.broker is None or not plane.hops:
        raise PlanError(f"profile {profile.name} has no application data plane to smoke-test")
    fmt = {"app": application, "application": application, "namespace": namespace}
    defaults = {"ingress": DEFAULT_EVENT_SERVICE_URL_TEMPLATE,
                "broker": DEFAULT_BROKER_URL_TEMPLATE}
    injections = []
    for hop in plane.hops:
        template = hop_urls.get(hop.id)
        url = template.format(**fmt) if template else None
        if url is None and hop.id != "ingress":
            url = _address(get(hop.entry.kind, *hop.entry.place(application, namespace)))
        if url is None and hop.id in defaults:
            url = defaults[hop.id].format(**fmt)
        injections.append(Injection(hop.id, url, hop.entry_text, hop.segment_text,
                                    legacy=hop.id == "ingress"))
    broker_ns, broker = plane.broker.place(application, namespace)
    config = TriggerConfig(receiver_url_template=_templated(receiver_url),
                           dead_letter_url_template=_templated(dead_letter_url),
                           heartbeat_type=SMOKE_EVENT_TYPE,
                           api_version=plane.trigger.api_version, broker=broker)
    root = profile.application
    assert root is not None
    return Plan(root, "", application, application, plane.trigger,
                _with_retry(desired_trigger(config, application, broker_ns)),
                tuple(injections))
