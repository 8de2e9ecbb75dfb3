"""Report objects: health values, object references, findings and reports.

This is the JSON contract of `check -o json` (and later of the REST API), so
field names follow Kubernetes' camelCase on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Health(StrEnum):
    """Health of one object or an aggregate; members are ordered best to worst."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    UNKNOWN = "Unknown"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"

    @property
    def rank(self) -> int:
        return _HEALTH_RANK[self]

    @staticmethod
    def worst(values: Iterable[Health], default: Health | None = None) -> Health:
        """The worst of `values`; an aggregate is never healthier than a part."""
        result = default if default is not None else Health.HEALTHY
        for value in values:
            if _HEALTH_RANK[value] > _HEALTH_RANK[result]:
                result = value
        return result


_HEALTH_RANK = {health: rank for rank, health in enumerate(Health)}


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: what could forge a
# log line or a line of the report.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, limit: int) -> str:
    """`text` from the outside (a controller's message, a dead letter's body) as it may be
    shown: at most `limit` characters (then "..."), control characters escaped."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class Severity(StrEnum):
    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"


def severity_for(health: Health) -> Severity:
    """A finding's severity follows the health of the object it is about."""
    if health in (Health.UNHEALTHY, Health.DEGRADED):
        return Severity.ERROR if health is Health.UNHEALTHY else Severity.WARNING
    if health is Health.UNKNOWN:
        return Severity.WARNING
    return Severity.INFO


class ObjectRef(BaseModel):
    """Which Kubernetes object a finding is about (it may not exist)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    api_version: str = Field(alias="apiVersion")
    kind: str
    namespace: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        if not self.kind:
            return "<unidentified object>"
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name if self.name is not None else '<unnamed>'}"


class HeartbeatTrace(BaseModel):
    """The trace of the newest failed heartbeat behind a data-plane finding, and, when
    `serve --trace-url` could look it up, where it stopped."""

    model_config = ConfigDict(populate_by_name=True)

    trace_id: str = Field(alias="traceId", description="W3C trace id the heartbeat carried.")
    outcome: str | None = Field(default=None, description="delivered, stopped or unknown; "
                                "null until the tracing backend was asked.")
    stopped_at: str | None = Field(default=None, alias="stoppedAt",
                                   description="The hop where the trace stops, e.g. "
                                   "'channel dispatcher → broker filter'.")
    detail: str | None = Field(default=None, description="Why it stopped, or why the "
                               "lookup could not tell.")


class Finding(BaseModel):
    """Something wrong (or not yet settled) about one object."""

    model_config = ConfigDict(populate_by_name=True)

    severity: Severity
    health: Health
    object: ObjectRef
    reason: str
    message: str
    root_cause: bool = Field(alias="rootCause")
    caused_by: ObjectRef | None = Field(default=None, alias="causedBy")
    # Added with heartbeat traces: only data-plane findings have one, and only they show it
    # (the JSON of every other finding is as it was; `exclude_if` needs pydantic >= 2.11).
    trace: HeartbeatTrace | None = Field(default=None, exclude_if=lambda value: value is None)


class NamespaceReport(BaseModel):
    name: str
    health: Health
    state: int = Field(ge=1, le=4)
    findings: list[Finding] = Field(default_factory=list)


class ApplicationReport(BaseModel):
    name: str
    health: Health
    state: int = Field(ge=1, le=4)
    findings: list[Finding] = Field(default_factory=list)
    namespaces: list[NamespaceReport] = Field(default_factory=list)


class FlowReport(BaseModel):
    """A flow: a root object (a Broker, a Channel, a source) with what it delivers to, in
    one namespace: the unit of health where the mesh has no Application (Knative v1)."""

    flow: str = Field(description="What kind of flow: broker, channel, source.")
    kind: str = Field(description="The root object's kind (Broker, Channel, PingSource, ...).")
    namespace: str
    name: str
    health: Health
    findings: list[Finding] = Field(default_factory=list)


class SystemReport(BaseModel):
    health: Health
    findings: list[Finding] = Field(default_factory=list)


class SourceInfo(BaseModel):
    """Where the objects came from; not part of the health verdict."""

    model_config = ConfigDict(populate_by_name=True)

    taken_at: str = Field(alias="takenAt")
    objects: int
    skipped_kinds: dict[str, int] = Field(default_factory=dict, alias="skippedKinds")
    # The topology profile the objects were judged by (`--profile`, or detected).
    profile: str = Field(default="", description="The topology profile the objects were "
                         "judged by (e.g. kyma-1): given with --profile, or detected.")


class MeshReport(BaseModel):
    healthy: bool
    health: Health
    system: SystemReport
    applications: list[ApplicationReport] = Field(default_factory=list)
    flows: list[FlowReport] = Field(default_factory=list)
    source: SourceInfo | None = None

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)
