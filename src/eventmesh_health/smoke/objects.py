"""The objects one smoke run creates, and how a later run recognises them (pure, no I/O).

A run creates exactly one object: the receiving end of its event on the target's root — a
Trigger on a Broker (filtered on the run's own event type and the source) or a Subscription
on a Channel — built by probing's own builders (`flows.desired_subscriber` for a Knative
flow, `triggers.desired_trigger` for a Kyma application), then renamed and relabelled so
that nothing of probing's (serve's `TriggerManager`, `FlowSubscribers`, `LeftoverTriggers`)
ever sees it as one of its heartbeat objects:

- label `eventmesh-health.kyma-project.io/smoke: <run id>` (what the sweep selects on);
- annotation `eventmesh-health.kyma-project.io/smoke-expires: <RFC 3339 UTC>`: the run's
  deadline plus its cleanup grace. It does not depend on an owner (a killed CLI owns
  nothing in the cluster) nor on the run's process: any later run, from anywhere, may
  delete a labelled object once it has expired, and leaves younger ones to the run that
  still uses them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventmesh_health.probing.heartbeat import parse_time
from eventmesh_health.probing.triggers import HEARTBEAT_LABEL

__all__ = [
    "EXPIRES_ANNOTATION",
    "SMOKE_EVENT_TYPE",
    "SMOKE_LABEL",
    "Leftover",
    "expired",
    "expires_at",
    "new_run_id",
    "object_name",
    "relabel",
]

SMOKE_LABEL = "eventmesh-health.kyma-project.io/smoke"
EXPIRES_ANNOTATION = "eventmesh-health.kyma-project.io/smoke-expires"
# Its own type: serve's heartbeat Triggers filter on the heartbeat type, so they never
# receive a smoke event, and the smoke Trigger never receives a heartbeat.
SMOKE_EVENT_TYPE = "eventmesh-health.smoke"
CLEANUP_GRACE = timedelta(seconds=5)
_RUN = re.compile(r"[a-z0-9]{10}")
_PREFIX = "eventmesh-health-smoke-"


def new_run_id() -> str:
    """Ten lower-case alphanumerics: a label value and a DNS-1123 name part."""
    return secrets.token_hex(5)


def object_name(run: str) -> str:
    return _PREFIX + run


def expires_at(started: datetime, timeout: timedelta) -> datetime:
    return started + timeout + CLEANUP_GRACE


def _rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def relabel(body: Mapping[str, Any], run: str, expires: datetime) -> dict[str, Any]:
    """A probing heartbeat object made a smoke object of run `run`: its own name, the smoke
    label instead of the heartbeat labels, the expiry annotation."""
    meta = dict(body.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if not k.startswith("eventmesh-health.kyma-project.io/")}
    labels[SMOKE_LABEL] = run
    meta.update(name=object_name(run), labels=labels,
                annotations={EXPIRES_ANNOTATION: _rfc3339(expires)})
    assert HEARTBEAT_LABEL not in labels
    return {**body, "metadata": meta}


@dataclass(frozen=True, slots=True)
class Leftover:
    """A labelled object found at the start of a run."""

    api_version: str
    kind: str
    namespace: str
    name: str
    run: str
    expires: datetime | None  # None: the annotation is missing or unreadable
    uid: str = ""  # what its dependents' ownerReferences name

    def text(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} (run {self.run})"


def leftover(obj: Mapping[str, Any]) -> Leftover | None:
    """The labelled object as a `Leftover`, or None when it is not one of ours."""
    meta = obj.get("metadata") or {}
    run = (meta.get("labels") or {}).get(SMOKE_LABEL)
    if not isinstance(run, str) or meta.get("deletionTimestamp"):
        return None
    raw = (meta.get("annotations") or {}).get(EXPIRES_ANNOTATION)
    try:
        expires = parse_time(raw) if isinstance(raw, str) else None
    except ValueError:
        expires = None
    return Leftover(str(obj.get("apiVersion")), str(obj.get("kind")),
                    str(meta.get("namespace")), str(meta.get("name")), run, expires,
                    str(meta.get("uid") or ""))


def expired(item: Leftover, now: datetime) -> bool:
    """Whether a later run may remove it: past its expiry, or without a readable one (no
    run of ours writes an object without it, so nothing may be relying on it)."""
    return item.expires is None or item.expires <= now
