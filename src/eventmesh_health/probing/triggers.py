"""The checker's own heartbeat Triggers: one per probed (application, namespace).

`desired_trigger` is what a pair's Trigger must look like; `TriggerManager.reconcile`
makes the cluster match a set of pairs (the leader calls it each probing round):

- only Triggers with the label `eventmesh-health.kyma-project.io/heartbeat: "true"` are
  ever listed, patched or deleted: user Triggers are never touched;
- names are deterministic (`eventmesh-health-<application>`, cut to fit, plus a hash of
  the full name), so a Trigger left over from a crashed run is adopted (patched if its
  spec differs), never duplicated; labelled Triggers that no probed pair wants (another
  name, an unbound pair, a deleted application) are deleted;
- writes only on change: a Trigger whose spec (and labels) already match is left alone.

The subscriber is the checker's receiver (`receiver_url_template`, encoding namespace and
application). With several replicas only the leader sends and judges, so its heartbeats
must come back to it, not to whichever replica a Service picks: the template's
`{replica}` placeholder is this replica's own reachable `host:port` (`TriggerConfig.replica`,
serve's `--advertise-address`, by default `$POD_IP:<port>`), so the leader's reconciliation
writes its own address into every subscriber URI, and after a leader change the new
leader patches every heartbeat Trigger to itself (same names: a patch, not a new Trigger).
`spec.delivery.deadLetterSink` is set only when `dead_letter_url_template`
is given and the Trigger API version supports it: `eventing.knative.dev/v1alpha1` as
served by Knative v0.12 (Kyma 1.x) has no `spec.delivery` on Triggers (it came with
v0.14's v1beta1), so for v1alpha1 it is left out and failed deliveries are only seen as
loss.

**The pair token.** One heartbeat of the ingress or channel hop fans out to every namespace
of its application, so its signature cannot name a namespace. Each Trigger's URLs carry a
random token of their own (`?pair=`, 18 random bytes), which the receiver requires for that
(namespace, application): a heartbeat captured on its way to one namespace cannot be posted
to another's URL by someone who cannot read that namespace's Triggers. The token lives in
the Trigger and is kept by every later reconciliation (a new leader, a restart), so it never
depends on the signing keys: rotating them rewrites no Trigger. `TriggerManager.tokens` is
what the receiver accepts.

When probing is off, `LeftoverTriggers` removes heartbeat Triggers left from an earlier
run (serve's leader calls it with the Triggers of its watch cache): without probe RBAC
the API server forbids the delete, which is logged once with the kubectl command that
removes them, and never retried for the same Trigger.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lightkube.generic_resource import create_namespaced_resource

from eventmesh_health.probing.heartbeat import DEFAULT_TYPE, EVENT_TYPE_VERSION
from eventmesh_health.topology import Kind

__all__ = [
    "DELETE_COMMAND",
    "FLOW_LABEL",
    "HEARTBEAT_LABEL",
    "PAIR_PARAMETER",
    "REPLICA_PLACEHOLDER",
    "TRIGGER_API_VERSION",
    "LeftoverTriggers",
    "TriggerConfig",
    "TriggerManager",
    "desired_trigger",
    "heartbeat_triggers",
    "new_pair_token",
    "pair_token_of",
    "trigger_name",
]

log = logging.getLogger("eventmesh_health.probing")

HEARTBEAT_LABEL = "eventmesh-health.kyma-project.io/heartbeat"
DELETE_COMMAND = f"kubectl delete triggers -A -l {HEARTBEAT_LABEL}=true"
REPLICA_PLACEHOLDER = "{replica}"
APPLICATION_LABEL = "eventmesh-health.kyma-project.io/application"
# On the heartbeat objects of flows (`flows.FlowSubscribers`): this manager leaves them alone.
FLOW_LABEL = "eventmesh-health.kyma-project.io/flow"
TRIGGER_API_VERSION = "eventing.knative.dev/v1alpha1"
# API versions whose Trigger has spec.delivery (deadLetterSink): not v1alpha1 of v0.12.
_DELIVERY_VERSIONS = frozenset({"eventing.knative.dev/v1beta1", "eventing.knative.dev/v1"})
PAIR_PARAMETER = "pair"  # the query parameter of the pair token in the receiver URLs
TOKEN_BYTES = 18
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_NAME_PREFIX = "eventmesh-health-"
_MAX_NAME = 63

Trigger = create_namespaced_resource("eventing.knative.dev", "v1alpha1", "Trigger", "triggers")


@dataclass(frozen=True, slots=True)
class TriggerConfig:
    receiver_url_template: str
    dead_letter_url_template: str | None = None
    heartbeat_type: str = DEFAULT_TYPE
    api_version: str = TRIGGER_API_VERSION
    broker: str = "default"
    # This replica's reachable host:port, for `{replica}` in the templates.
    replica: str | None = None

    def __post_init__(self) -> None:
        templates = (self.receiver_url_template, self.dead_letter_url_template or "")
        if not self.replica and any(REPLICA_PLACEHOLDER in t for t in templates):
            raise ValueError(f"the receiver URL template has {REPLICA_PLACEHOLDER}: this "
                             "replica's address (host:port) is needed")


def trigger_name(application: str) -> str:
    """`eventmesh-health-<application>`, or cut and suffixed with a hash to fit 63."""
    name = _NAME_PREFIX + application.replace(".", "-")
    if len(name) <= _MAX_NAME and "." not in application:
        return name
    digest = hashlib.sha256(application.encode()).hexdigest()[:10]
    head = name[: _MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


def _label_value(application: str) -> str:
    if len(application) <= 63:
        return application
    digest = hashlib.sha256(application.encode()).hexdigest()[:10]
    return application[:52].rstrip("-.") + "-" + digest


def desired_trigger(config: TriggerConfig, application: str, namespace: str,
                    token: str | None = None) -> dict[str, Any]:
    """The heartbeat Trigger of one (application, namespace); `token`, the pair token, is
    added to its URLs as `?pair=`."""
    fmt = {"app": application, "application": application, "namespace": namespace,
           "replica": config.replica or ""}
    spec: dict[str, Any] = {
        "broker": config.broker,
        "filter": {"attributes": {
            "source": application, "type": config.heartbeat_type,
            "eventtypeversion": EVENT_TYPE_VERSION,
        }},
        "subscriber": {"uri": _with_token(config.receiver_url_template.format(**fmt), token)},
    }
    if config.dead_letter_url_template and config.api_version in _DELIVERY_VERSIONS:
        spec["delivery"] = {"deadLetterSink": {
            "uri": _with_token(config.dead_letter_url_template.format(**fmt), token)}}
    return {
        "apiVersion": config.api_version,
        "kind": "Trigger",
        "metadata": {
            "name": trigger_name(application),
            "namespace": namespace,
            "labels": {
                HEARTBEAT_LABEL: "true",
                APPLICATION_LABEL: _label_value(application),
                "app.kubernetes.io/managed-by": "eventmesh-health",
            },
        },
        "spec": spec,
    }


def _with_token(url: str, token: str | None) -> str:
    if token is None:
        return url
    return f"{url}{'&' if '?' in url else '?'}{PAIR_PARAMETER}={token}"


def pair_token_of(trigger: Mapping[str, Any] | None) -> str | None:
    """The pair token in a heartbeat Trigger's subscriber URL, if it has a well-formed one."""
    uri = ((trigger or {}).get("spec") or {}).get("subscriber", {}).get("uri")
    if not isinstance(uri, str):
        return None
    values = parse_qs(urlsplit(uri).query).get(PAIR_PARAMETER, [])
    return values[0] if len(values) == 1 and _TOKEN.fullmatch(values[0]) else None


def new_pair_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass
class TriggerManager:
    """Makes the labelled Triggers in the cluster match the probed pairs."""

    client: Any  # lightkube.AsyncClient
    config: TriggerConfig
    writes: dict[str, int] = field(default_factory=lambda: {"create": 0, "patch": 0,
                                                            "delete": 0})
    errors: int = 0
    # (namespace, application) -> the pair token of its heartbeat Trigger, for the pairs of
    # the last reconcile (what the receiver accepts)
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    async def owned(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The labelled Triggers, by (namespace, name)."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        async for obj in self.client.list(Trigger, namespace="*",
                                          labels={HEARTBEAT_LABEL: "true"}):
            raw = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
            meta = raw.get("metadata") or {}
            if (meta.get("labels") or {}).get(FLOW_LABEL):
                continue  # a flow's heartbeat Trigger (flows.FlowSubscribers)
            out[(str(meta.get("namespace")), str(meta.get("name")))] = raw
        return out

    async def reconcile(self, pairs: Iterable[tuple[str, str]]) -> bool:
        """Create, patch and delete so that exactly `pairs` (application, namespace) have
        their Trigger. Returns whether everything succeeded (failures are logged and
        counted, and retried on the next call)."""
        try:
            have = await self.owned()
        except Exception as exc:
            self.errors += 1
            log.warning("heartbeat Triggers could not be listed: %s", exc)
            return False
        want = {}
        tokens: dict[tuple[str, str], str] = {}
        for application, namespace in pairs:
            key = (namespace, trigger_name(application))
            # a Trigger keeps its token (a new leader, a restart): only a new one gets one
            token = pair_token_of(have.get(key)) or new_pair_token()
            want[key] = desired_trigger(self.config, application, namespace, token)
            tokens[(namespace, application)] = token
        # accepted from now on, before the writes: a Trigger may deliver as soon as written
        self.tokens = tokens
        ok = True
        for key, body in want.items():
            current = have.get(key)
            try:
                if current is None:
                    await self.client.create(Trigger.from_dict(body))
                    self.writes["create"] += 1
                    log.info("heartbeat Trigger %s/%s created", *key)
                elif not _matches(current, body):
                    spec = dict(body["spec"])
                    spec.setdefault("delivery", None)  # a merge patch removes it
                    await self.client.patch(
                        Trigger, key[1], {"metadata": {"labels": body["metadata"]["labels"]},
                                          "spec": spec},
                        namespace=key[0], patch_type=_merge_patch())
                    self.writes["patch"] += 1
                    log.info("heartbeat Trigger %s/%s adopted (spec updated)", *key)
            except Exception as exc:
                ok = False
                self.errors += 1
                log.warning("heartbeat Trigger %s/%s could not be written: %s", *key, exc)
        for key, current in have.items():
            if key in want:
                continue
            if (current.get("metadata") or {}).get("deletionTimestamp"):
                continue
            try:
                await self.client.delete(Trigger, key[1], namespace=key[0])
                self.writes["delete"] += 1
                log.info("heartbeat Trigger %s/%s deleted", *key)
            except Exception as exc:
                if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                    continue
                ok = False
                self.errors += 1
                log.warning("heartbeat Trigger %s/%s could not be deleted: %s", *key, exc)
        return ok


def _matches(current: dict[str, Any], body: dict[str, Any]) -> bool:
    spec = current.get("spec") or {}
    want = body["spec"]
    if any(spec.get(k) != v for k, v in want.items()):
        return False
    if "delivery" not in want and spec.get("delivery"):
        return False
    labels = (current.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in body["metadata"]["labels"].items())


def _merge_patch() -> Any:
    from lightkube.types import PatchType

    return PatchType.MERGE


def heartbeat_triggers(objects: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The labelled heartbeat Triggers among `objects` (e.g. the Triggers of serve's watch
    cache) that are not being deleted already."""
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        if ((meta.get("labels") or {}).get(HEARTBEAT_LABEL) == "true"
                and not meta.get("deletionTimestamp")):
            out.append(obj)
    return out


@dataclass
class LeftoverTriggers:
    """Deletes heartbeat Triggers while probing is off (serve's leader calls `remove`).

    A delete the API server forbids (403: the probe RBAC is not bound) is not retried for
    that Trigger (by uid), and the first such refusal logs one warning that names the
    kubectl command to remove them by hand; so does `remove(..., hold=why)`, which deletes
    nothing (serve `--no-write`, or without leader election: such a serve may run beside
    the deployment whose probing owns them). Nothing raises but cancellation.
    """

    client: Any  # lightkube.AsyncClient
    # The heartbeat objects' kinds (an object is deleted as the kind of this name and API
    # group it has; default: a Trigger of v1alpha1).
    kinds: tuple[Kind, ...] = ()
    deleted: int = 0
    errors: int = 0
    warned: bool = False
    _skipped: set[str] = field(default_factory=set)  # uids not to try again

    async def remove(self, triggers: Iterable[Mapping[str, Any]], *,
                     hold: str | None = None) -> bool:
        """Delete every heartbeat Trigger among `triggers` (none if `hold` says why not).
        False when a delete failed in a way worth retrying (neither 403 nor 404)."""
        left = [t for t in heartbeat_triggers(triggers) if _uid(t) not in self._skipped]
        if not left:
            return True
        if hold is not None:
            self._skipped.update(_uid(t) for t in left)
            self._warn(left, hold)
            return True
        ok = True
        refused: list[Mapping[str, Any]] = []
        for obj in left:
            meta = obj.get("metadata") or {}
            namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            try:
                await self.client.delete(self._resource(obj), name, namespace=namespace)
            except Exception as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status == 404:
                    continue
                if status == 403:
                    self._skipped.add(_uid(obj))
                    refused.append(obj)
                    continue
                ok = False
                self.errors += 1
                log.warning("heartbeat Trigger %s/%s (probing is off) could not be deleted: %s",
                            namespace, name, exc)
                continue
            self.deleted += 1
            log.info("heartbeat Trigger %s/%s deleted: probing is off", namespace, name)
        if refused:
            self.errors += len(refused)
            self._warn(refused, "serve may not delete them (403 Forbidden: the probe RBAC, "
                       "deploy/rbac/clusterrole-serve-probe.yaml, is not bound)")
        return ok

    def _resource(self, obj: Mapping[str, Any]) -> Any:
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        for kind in self.kinds:
            if kind.kind == obj.get("kind") and kind.group == group:
                return create_namespaced_resource(kind.group, kind.version, kind.kind,
                                                  kind.plural)
        return Trigger

    def _warn(self, triggers: list[Mapping[str, Any]], why: str) -> None:
        if self.warned:
            return
        self.warned = True
        names = ", ".join(f"{(t.get('metadata') or {}).get('namespace')}/"
                          f"{(t.get('metadata') or {}).get('name')}" for t in triggers[:3])
        more = f" and {len(triggers) - 3} more" if len(triggers) > 3 else ""
        command = "; ".join([DELETE_COMMAND, *(
            f"kubectl delete {kind.resource} -A -l {HEARTBEAT_LABEL}=true"
            for kind in dict.fromkeys(self.kinds) if kind.kind != "Trigger")])
        log.warning("probing is off, but heartbeat Triggers of an earlier run are left "
                    "(%s%s) and %s: remove them with `%s`", names, more, why, command)


def _uid(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
