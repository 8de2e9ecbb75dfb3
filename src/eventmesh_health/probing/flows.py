"""Probing flows (a mesh without Applications, Knative v1): which flows, and their heartbeat
objects.

Everything Knative-specific comes from the profile's `DataPlane.flows` (`FlowProbe`): which
flow ids and root kinds are probed, at which hop, and the heartbeat object put on the root
(`HeartbeatSubscriber`: a Trigger on a Broker, a Subscription on a Channel).

- `flow_targets(report, index, data_plane)`: one `FlowTarget` per flow of the report whose
  root is of a probed kind, Ready, of a probed class (a Broker's class annotation), and
  not annotated `eventmesh-health.kyma-project.io/probe: "false"`. Its `key` (`<flow>.<name>`,
  e.g. `broker.default`) is what an application is for Kyma: the heartbeats' `source`, the
  tracker's series (with the namespace), the receiver URL's `{application}`;
- `desired_subscriber`: the heartbeat object of one flow target: `spec.subscriber.uri` the
  receiver URL of (namespace, key) with its pair token, `spec.delivery.deadLetterSink.uri`
  the dead-letter URL (subscriber errors arrive as dead letters), the root named where the
  kind names it, and the heartbeat attributes as exact-match filter where it can filter;
- `FlowSubscribers.reconcile(targets)`: makes the labelled heartbeat objects (label
  `eventmesh-health.kyma-project.io/heartbeat: "true"` plus `.../flow: <flow id>`) match the
  targets, as `triggers.TriggerManager` does for Kyma's pairs: deterministic names, adopted
  after a crash, patched on drift, deleted when the flow no longer qualifies, the pair
  token kept for the object's life. Objects without both labels are never touched, and
  `TriggerManager` leaves objects with the flow label alone.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube.generic_resource import create_namespaced_resource

from eventmesh_health.model import FlowReport, MeshReport
from eventmesh_health.probing.heartbeat import EVENT_TYPE_VERSION, Hop
from eventmesh_health.probing.triggers import (
    FLOW_LABEL,
    HEARTBEAT_LABEL,
    TriggerConfig,
    _label_value,
    _matches,
    _merge_patch,
    _with_token,
    new_pair_token,
    pair_token_of,
    trigger_name,
)
from eventmesh_health.topology import DataPlane, FlowProbe, Kind

__all__ = ["ROOT_LABEL", "FlowSubscribers", "FlowTarget", "desired_subscriber", "flow_key",
           "flow_targets"]

log = logging.getLogger("eventmesh_health.probing")

ROOT_LABEL = "eventmesh-health.kyma-project.io/root"
PROBE_ANNOTATION = "eventmesh-health.kyma-project.io/probe"
_MAX_KEY = 253


@dataclass(frozen=True, slots=True)
class FlowTarget:
    """One probed flow: its root, the hop its heartbeats are injected at, and where."""

    probe: FlowProbe
    root: Kind
    namespace: str
    name: str
    key: str  # the heartbeats' source and the tracker's "application"
    url: str | None  # the root's address (status.address.url), None while it has none

    @property
    def hop(self) -> Hop:
        return Hop(self.probe.hop)

    @property
    def flow(self) -> str:
        return self.probe.flow

    def text(self, template: str) -> str:
        return template.format(kind=self.root.kind, namespace=self.namespace, name=self.name)


def flow_key(flow: str, namespace: str, name: str) -> str:
    """`<flow>.<namespace>.<name>`: unique across namespaces (a namespace has no dot), a DNS
    subdomain as the receiver's `{application}` must be; cut and suffixed with a hash when
    too long."""
    key = f"{flow}.{namespace}.{name}"
    if len(key) <= _MAX_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{key[: _MAX_KEY - 11].rstrip('-.')}-{digest}"


def _ready(obj: Mapping[str, Any] | None) -> bool:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _address(obj: Mapping[str, Any]) -> str | None:
    address = (obj.get("status") or {}).get("address") or {}
    url = address.get("url")
    return str(url) if url else None


def flow_targets(report: MeshReport, index: Any, data_plane: DataPlane,
                 url_templates: Mapping[str, str] | None = None) -> dict[str, FlowTarget]:
    """The flows to probe, by key; see the module docstring. `url_templates`: per hop id,
    a template (`{namespace}`, `{name}`, `{kind}`) used instead of the root's address
    (tests, a checker outside the cluster)."""
    out: dict[str, FlowTarget] = {}
    for flow in report.flows:
        probe = data_plane.flow(flow.flow)
        if probe is None:
            continue
        target = _target(flow, probe, index, url_templates or {})
        if target is not None:
            out[target.key] = target
    return out


def _target(flow: FlowReport, probe: FlowProbe, index: Any,
            url_templates: Mapping[str, str]) -> FlowTarget | None:
    kind = probe.root_kind(flow.kind)
    if kind is None:
        return None
    obj = index.get(kind.key, flow.namespace, flow.name)
    if obj is None or not _ready(obj):
        return None
    annotations = _annotations(obj)
    if str(annotations.get(PROBE_ANNOTATION, "")).strip().lower() == "false":
        return None
    if probe.classes is not None:
        annotation, values = probe.classes
        if annotations.get(annotation) not in values:
            return None
    template = url_templates.get(probe.hop)
    url = (template.format(namespace=flow.namespace, name=flow.name, kind=kind.kind)
           if template else _address(obj))
    return FlowTarget(probe, kind, flow.namespace, flow.name,
                      flow_key(probe.flow, flow.namespace, flow.name), url)


def _put(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set `value` at `path` (which starts with "spec") in `spec`."""
    keys = path[1:] if path and path[0] == "spec" else path
    node = spec
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def subscriber_name(target: FlowTarget) -> str:
    return trigger_name(target.key)


def desired_subscriber(config: TriggerConfig, target: FlowTarget,
                       token: str | None = None) -> dict[str, Any]:
    """The heartbeat object of one flow target (`token`: its pair token, `?pair=` in its
    URLs)."""
    sub = target.probe.subscriber
    fmt = {"app": target.key, "application": target.key, "namespace": target.namespace,
           "replica": config.replica or ""}
    spec: dict[str, Any] = {}
    _put(spec, sub.root, {"apiVersion": target.root.api_version, "kind": target.root.kind,
                          "name": target.name} if sub.root_as_ref else target.name)
    if sub.filter is not None:
        _put(spec, sub.filter, {"source": target.key, "type": config.heartbeat_type,
                                "eventtypeversion": EVENT_TYPE_VERSION})
    spec["subscriber"] = {"uri": _with_token(config.receiver_url_template.format(**fmt), token)}
    if config.dead_letter_url_template:
        spec["delivery"] = {"deadLetterSink": {
            "uri": _with_token(config.dead_letter_url_template.format(**fmt), token)}}
    return {
        "apiVersion": sub.kind.api_version,
        "kind": sub.kind.kind,
        "metadata": {
            "name": subscriber_name(target),
            "namespace": target.namespace,
            "labels": {
                HEARTBEAT_LABEL: "true",
                FLOW_LABEL: target.flow,
                ROOT_LABEL: _label_value(target.name),
                "app.kubernetes.io/managed-by": "eventmesh-health",
            },
        },
        "spec": spec,
    }


def _resource(kind: Kind) -> Any:
    return create_namespaced_resource(kind.group, kind.version, kind.kind, kind.plural)


@dataclass
class FlowSubscribers:
    """Makes the labelled heartbeat objects of flows match the probed flows."""

    client: Any  # lightkube.AsyncClient
    config: TriggerConfig
    kinds: tuple[Kind, ...]
    writes: dict[str, int] = field(default_factory=lambda: {"create": 0, "patch": 0,
                                                            "delete": 0})
    errors: int = 0
    # (namespace, key) -> the pair token of its heartbeat object (what the receiver accepts)
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    async def owned(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """The labelled heartbeat objects of flows, by (kind key, namespace, name)."""
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        for kind in self.kinds:
            async for obj in self.client.list(_resource(kind), namespace="*",
                                              labels={HEARTBEAT_LABEL: "true"}):
                raw = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
                meta = raw.get("metadata") or {}
                if not (meta.get("labels") or {}).get(FLOW_LABEL):
                    continue  # an application's heartbeat Trigger: TriggerManager's
                out[(kind.key, str(meta.get("namespace")), str(meta.get("name")))] = raw
        return out

    async def reconcile(self, targets: Iterable[FlowTarget]) -> bool:
        """Create, patch and delete so that exactly `targets` have their heartbeat object.
        Whether everything succeeded (failures are logged, counted and retried later)."""
        try:
            have = await self.owned()
        except Exception as exc:
            self.errors += 1
            log.warning("heartbeat objects of flows could not be listed: %s", exc)
            return False
        want: dict[tuple[str, str, str], tuple[Kind, dict[str, Any]]] = {}
        tokens: dict[tuple[str, str], str] = {}
        for target in targets:
            kind = target.probe.subscriber.kind
            key = (kind.key, target.namespace, subscriber_name(target))
            token = pair_token_of(have.get(key)) or new_pair_token()
            want[key] = (kind, desired_subscriber(self.config, target, token))
            tokens[(target.namespace, target.key)] = token
        self.tokens = tokens  # accepted before the writes: an object may deliver at once
        ok = True
        for key, (kind, body) in want.items():
            current = have.get(key)
            res = _resource(kind)
            try:
                if current is None:
                    await self.client.create(res.from_dict(body))
                    self.writes["create"] += 1
                    log.info("heartbeat %s %s/%s created", kind.kind, key[1], key[2])
                elif not _matches(current, body):
                    spec = dict(body["spec"])
                    spec.setdefault("delivery", None)
                    await self.client.patch(
                        res, key[2], {"metadata": {"labels": body["metadata"]["labels"]},
                                      "spec": spec},
                        namespace=key[1], patch_type=_merge_patch())
                    self.writes["patch"] += 1
                    log.info("heartbeat %s %s/%s adopted (spec updated)", kind.kind, key[1],
                             key[2])
            except Exception as exc:
                ok = False
                self.errors += 1
                log.warning("heartbeat %s %s/%s could not be written: %s", kind.kind, key[1],
                            key[2], exc)
        by_key = {k.key: k for k in self.kinds}
        for key, current in have.items():
            if key in want or (current.get("metadata") or {}).get("deletionTimestamp"):
                continue
            kind = by_key[key[0]]
            try:
                await self.client.delete(_resource(kind), key[2], namespace=key[1])
                self.writes["delete"] += 1
                log.info("heartbeat %s %s/%s deleted", kind.kind, key[1], key[2])
            except Exception as exc:
                if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                    continue
                ok = False
                self.errors += 1
                log.warning("heartbeat %s %s/%s could not be deleted: %s", kind.kind, key[1],
                            key[2], exc)
        return ok
