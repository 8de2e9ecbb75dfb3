"""What `eventmesh-health serve` writes into the cluster, and when.

Three outputs, all written by the elected leader only (`is_leader` is asked immediately
before every single write request; a `False` ends the round at once):

1. **EventMeshHealth objects**
   (`deploy/crds/eventmeshhealths.eventmesh-health.kyma-project.io.yaml`): one per
   Application, named after it, with an ownerReference to the Application so that the
   garbage collector deletes it with the app. The object is created (POST) with its spec
   and owner, then its `status` is written through the status subresource with a JSON merge
   patch of the whole `status` (every top-level key is always present, and the arrays are
   replaced whole, so the merge patch leaves nothing old behind). Objects of Applications
   that no longer exist are deleted by the writer itself: it does not rely on the garbage
   collector alone (it may be behind, or, as in the tests, not running at all).
   The status also carries the verdict in the form other tools read (kstatus, hence Helm 4's
   `--wait`, Flux and Argo CD): `observedGeneration` (the object's `metadata.generation`) and
   `conditions` (`health_conditions`): `Ready` True only when Healthy, its reason the first
   root cause's reason and its message naming that root cause; with kstatus' abnormal-true
   conditions beside it, `Stalled` (Unhealthy, Degraded: kstatus says Failed) or `Reconciling`
   (Progressing, Unknown: InProgress), so that no unhealthy object reads as Current.

2. **Annotations on the Application**: `eventmesh-health.kyma-project.io/health`,
   `/reason` (the first root cause's reason, or `AllHealthy`) and `/last-transition-time`.
   Annotations, because the Application CRD of Kyma 1.x has no status subresource and
   application-operator owns its `status`: keys under our own prefix can never clobber
   anything of theirs. They are written with a **JSON merge patch** naming only our three
   keys, not with server-side apply. Why: a merge patch changes exactly the keys it names and
   nothing else (other annotations, labels and `status` are untouched; no resourceVersion
   precondition, so it never conflicts with application-operator's own writes); it works on
   every API server a Kyma 1.x cluster runs (server-side apply was beta until Kubernetes 1.22
   and had bugs with CRDs on the way); and it needs no managedFields bookkeeping, which on an
   Application would only record a second manager for three string keys. What SSA would add,
   removing keys we stop setting, we do not need: the three keys are always set.

3. **Kubernetes Events** (`events.k8s.io/v1`) for every health transition of an Application,
   `regarding` the Application, with `action: HealthChanged`, `reason: Became<Health>` and a
   `note` naming the root cause. A repeat of the same (application, reason, note) within
   `series_window` updates the existing Event's `series` (count, lastObservedTime) instead of
   creating a new one, and every application may cause at most `max_events_per_minute` Event
   writes per minute: occurrences beyond that are not lost but counted, and written into the
   series' count by a later round once the application is below its limit again. A flapping
   Application can therefore never cause an Event storm.

   Events go to `events_namespace`, which must be `default` or `kube-system`: the API server
   rejects an Event about a cluster-scoped object (Applications are cluster-scoped) in any
   other namespace ("involvedObject.namespace: does not match event.namespace"), which is why
   client-go's recorder puts such Events into `default`. `kubectl describe application X`
   finds them there.

**Writes only on change.** The writer remembers what it last wrote (or saw) per object and
writes only when the content differs: a steady state makes zero write requests. For
Applications the informer's view passed to `publish` refreshes that memory, with
resourceVersions deciding whose news is newer: a view still showing a version from before our
own write is merely lagging and ignored; a view with a version we have not seen is someone
else's change (e.g. an annotation removed by hand) and is taken as the truth. EventMeshHealth
objects are not watched by serve: the writer LISTs them once when it starts (and after
failures, leadership changes and every `resync_period`, all reads) and then keeps its own
record. Finding messages that state a duration ("deletion requested 12m ago", "Unknown for
3h10m") do not count as a change when only that duration moved: the status is a picture as of
its `observedAt`, not a clock, so a stuck object does not cause one write per minute.
`write_counts` counts the write requests sent, per (resource, verb), for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from eventmesh_health.model import ApplicationReport, Finding, Health, MeshReport, ObjectRef
from eventmesh_health.serve.history import History
from eventmesh_health.serve.ratelimit import TokenBucket
from eventmesh_health.sources.cluster import resource_class
from eventmesh_health.topology import Kind
from eventmesh_health.topology.registry import DEFAULT

__all__ = [
    "ALL_HEALTHY",
    "ANNOTATIONS",
    "DEFAULT_EVENTS_NAMESPACE",
    "EVENTS_NAMESPACES",
    "EVENT_ACTION",
    "EVENT_KIND",
    "HEALTH_ANNOTATION",
    "HEALTH_KIND",
    "REASON_ANNOTATION",
    "REPORTING_CONTROLLER",
    "TRANSITION_ANNOTATION",
    "HealthWriter",
    "application_annotations",
    "event_reason",
    "health_conditions",
    "health_status",
    "looks_elsewhere",
    "root_cause_summary",
    "root_causes",
]

log = logging.getLogger(__name__)

GROUP = "eventmesh-health.kyma-project.io"
HEALTH_KIND = Kind(f"{GROUP}/v1alpha1", "EventMeshHealth", "eventmeshhealths", namespaced=False)
EVENT_KIND = Kind("events.k8s.io/v1", "Event", "events")

ANNOTATION_PREFIX = f"{GROUP}/"
HEALTH_ANNOTATION = f"{ANNOTATION_PREFIX}health"
REASON_ANNOTATION = f"{ANNOTATION_PREFIX}reason"
TRANSITION_ANNOTATION = f"{ANNOTATION_PREFIX}last-transition-time"
ANNOTATIONS = (HEALTH_ANNOTATION, REASON_ANNOTATION, TRANSITION_ANNOTATION)
ALL_HEALTHY = "AllHealthy"
MANAGED_BY = {"app.kubernetes.io/managed-by": "eventmesh-health"}

REPORTING_CONTROLLER = f"{GROUP}/serve"
EVENT_ACTION = "HealthChanged"
# The only namespaces the API server accepts for an Event about a cluster-scoped object.
EVENTS_NAMESPACES = ("default", "kube-system")
DEFAULT_EVENTS_NAMESPACE = "default"
NOTE_LIMIT = 1024  # bytes; the API server rejects longer notes
REPORTING_INSTANCE_LIMIT = 128
_WARNING = frozenset({Health.UNKNOWN, Health.DEGRADED, Health.UNHEALTHY})
# kstatus' abnormal-true conditions: Stalled (kstatus: Failed) for a health that needs someone
# to act, Reconciling (InProgress) for one that may still settle or cannot be known yet.
READY_CONDITION = "Ready"
STALLED_CONDITION = "Stalled"
RECONCILING_CONDITION = "Reconciling"
_STALLED = frozenset({Health.DEGRADED, Health.UNHEALTHY})
_RECONCILING = frozenset({Health.PROGRESSING, Health.UNKNOWN})
CONDITION_MESSAGE_LIMIT = 32768  # metav1.Condition's maxLength
# metav1.Condition's reason: CamelCase, letters first.
_CONDITION_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")

# Resource names in `write_counts` (as the API server's audit log names them).
HEALTH_RESOURCE = "eventmeshhealths"
HEALTH_STATUS_RESOURCE = "eventmeshhealths/status"
APPLICATION_RESOURCE = "applications"
EVENT_RESOURCE = "events"

# A duration as `analysis.fields.duration` writes it: 45s, 12m, 3h10m, 2d4h.
_DURATION = re.compile(r"\b\d+[smhd](?:\d+[smh])?\b")
_MAX_VERSIONS = 16
# 429 Too Many Requests (API priority and fairness, "storage is (re)initializing" right
# after a CRD was created) means the request was not processed: retried after Retry-After.
MAX_ATTEMPTS = 3
MAX_RETRY_AFTER = 2.0  # seconds

T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- what is written (pure) ---------------------------------------------------------------


def _key(ref: ObjectRef) -> tuple[str, str, str | None, str | None]:
    return (ref.api_version, ref.kind, ref.namespace, ref.name)


def root_causes(app: ApplicationReport, report: MeshReport) -> list[Finding]:
    """The root-cause findings behind an application's health, each object once: its own
    chain's first, then its namespaces', then root causes reported elsewhere (system
    components) that its symptoms name in `causedBy`."""
    result, seen, wanted = _own_root_causes(app)
    if any(key not in seen for key in wanted):
        elsewhere: dict[tuple[str, str, str | None, str | None], Finding] = {}
        for finding in _all_findings(report):
            if finding.root_cause:
                elsewhere.setdefault(_key(finding.object), finding)
        for key in wanted:
            if key not in seen and key in elsewhere:
                seen.add(key)
                result.append(elsewhere[key])
    return result


_Key = tuple[str, str, str | None, str | None]


def _own_root_causes(app: ApplicationReport) -> tuple[list[Finding], set[_Key], list[_Key]]:
    """The root causes in an application's own findings (each object once), their objects,
    and the objects its symptoms name in `causedBy`."""
    own = [*app.findings, *(f for ns in app.namespaces for f in ns.findings)]
    result: list[Finding] = []
    seen: set[_Key] = set()
    for finding in own:
        if finding.root_cause and _key(finding.object) not in seen:
            seen.add(_key(finding.object))
            result.append(finding)
    wanted = [
        _key(f.caused_by) for f in own if not f.root_cause and f.caused_by is not None
    ]
    return result, seen, wanted


def looks_elsewhere(app: ApplicationReport) -> bool:
    """Whether `root_causes(app, ...)` reads the rest of the report: its symptoms name a
    cause its own findings do not hold (a system component, another application's object)."""
    _, seen, wanted = _own_root_causes(app)
    return any(key not in seen for key in wanted)


def _all_findings(report: MeshReport) -> Iterable[Finding]:
    yield from report.system.findings
    for app in report.applications:
        yield from app.findings
        for ns in app.namespaces:
            yield from ns.findings


def root_cause_summary(finding: Finding) -> str:
    """`Kind namespace/name: Reason`, as the `check` table and the printer column show it."""
    return f"{finding.object}: {finding.reason}"


def _finding_json(finding: Finding) -> dict[str, Any]:
    """A finding as the JSON contract has it, with its null fields left out (as Kubernetes
    objects do; the API server's merge patch would drop them inside arrays anyway)."""
    return finding.model_dump(mode="json", by_alias=True, exclude_none=True)


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_time(moment: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fractional digits."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _condition_reason(reason: str) -> str:
    if _CONDITION_REASON.match(reason):
        return reason
    cleaned = re.sub(r"[^A-Za-z0-9_,:]", "", reason).lstrip("0123456789_,:").rstrip(",:")
    return cleaned or "Unknown"


def health_conditions(
    app: ApplicationReport,
    causes: list[Finding],
    *,
    last_transition: datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """`status.conditions` (metav1.Condition) of an application's EventMeshHealth object:
    `Ready` (True only when Healthy; reason: the first root cause's reason, `AllHealthy` when
    healthy; message: the health and the root cause, as "Kind namespace/name: Reason —
    message"), then `Stalled` (Unhealthy, Degraded) or `Reconciling` (Progressing, Unknown)
    with the same reason and message; those two are left out while not true, as kstatus'
    abnormal-true conditions are. `lastTransitionTime` is when the health last changed."""
    reason = _condition_reason(_reason(app, causes))
    message = f"Application {app.name} is {app.health.value}"
    if causes:
        message += f"; root cause: {root_cause_summary(causes[0])}"
        if causes[0].message:
            message += f" — {causes[0].message}"
        if len(causes) > 1:
            message += f" (and {len(causes) - 1} more)"
    message = _truncate_utf8(message, CONDITION_MESSAGE_LIMIT)
    when = _rfc3339(last_transition)

    def condition(kind: str, true: bool) -> dict[str, Any]:
        result: dict[str, Any] = {"type": kind, "status": "True" if true else "False",
                                  "reason": reason, "message": message,
                                  "lastTransitionTime": when}
        if generation is not None:
            result["observedGeneration"] = generation
        return result

    conditions = [condition(READY_CONDITION, app.health is Health.HEALTHY)]
    if app.health in _STALLED:
        conditions.append(condition(STALLED_CONDITION, True))
    elif app.health in _RECONCILING:
        conditions.append(condition(RECONCILING_CONDITION, True))
    return conditions


def health_status(
    app: ApplicationReport,
    report: MeshReport,
    *,
    last_transition: datetime,
    observed_at: datetime,
    generation: int | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The `status` of an application's EventMeshHealth object: its part of the JSON
    contract, with root causes listed and symptoms counted, and the verdict as conditions
    (`health_conditions`) with `observedGeneration` (the object's `metadata.generation`,
    when known). Null fields of findings (`causedBy` of a root cause, `namespace` of a
    cluster-scoped object, `name` of an object whose name is generated) are omitted.
    `history`: the last transitions (`serve.history`), written as `history` when given, so
    that a new leader keeps them."""
    causes = root_causes(app, report)
    symptoms = sum(1 for f in app.findings if not f.root_cause)
    namespaces = []
    for ns in app.namespaces:
        ns_symptoms = sum(1 for f in ns.findings if not f.root_cause)
        symptoms += ns_symptoms
        namespaces.append({
            "name": ns.name,
            "health": ns.health.value,
            "state": ns.state,
            "rootCauses": [_finding_json(f) for f in ns.findings if f.root_cause],
            "symptoms": ns_symptoms,
        })
    status: dict[str, Any] = {
        "health": app.health.value,
        "state": app.state,
        "rootCause": root_cause_summary(causes[0]) if causes else "",
        "rootCauses": [_finding_json(f) for f in causes],
        "symptoms": symptoms,
        "namespaces": namespaces,
        "lastTransitionTime": _rfc3339(last_transition),
        "observedAt": _rfc3339(observed_at),
        "conditions": health_conditions(app, causes, last_transition=last_transition,
                                        generation=generation),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if history is not None:
        status["history"] = [dict(entry) for entry in history]
    return status


def _reason(app: ApplicationReport, causes: list[Finding]) -> str:
    if causes:
        return causes[0].reason
    if app.health is Health.HEALTHY:
        return ALL_HEALTHY
    for finding in [*app.findings, *(f for ns in app.namespaces for f in ns.findings)]:
        return finding.reason
    return app.health.value


def application_annotations(
    app: ApplicationReport, report: MeshReport, last_transition: datetime
) -> dict[str, str]:
    """Our three annotations on the Application (compact health)."""
    return {
        HEALTH_ANNOTATION: app.health.value,
        REASON_ANNOTATION: _reason(app, root_causes(app, report)),
        TRANSITION_ANNOTATION: _rfc3339(last_transition),
    }


def event_reason(health: Health) -> str:
    """`BecameHealthy`, `BecameProgressing`, `BecameUnknown`, `BecameDegraded`,
    `BecameUnhealthy`."""
    return f"Became{health.value}"


def _event_note(
    app: ApplicationReport, report: MeshReport, previous: Health | None
) -> str:
    note = f"Application {app.name} is {app.health.value}"
    if previous is not None:
        note += f" (was {previous.value})"
    causes = root_causes(app, report)
    if causes:
        note += f"; root cause: {root_cause_summary(causes[0])}"
        if causes[0].message:
            note += f" — {causes[0].message}"
        if len(causes) > 1:
            note += f" (and {len(causes) - 1} more)"
    return _truncate_utf8(note, NOTE_LIMIT)


def _truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "..."


def _mask_durations(value: Any) -> Any:
    """A copy of a status for comparison: durations in finding messages masked."""
    if isinstance(value, dict):
        return {
            k: (_DURATION.sub("<d>", v) if k == "message" and isinstance(v, str)
                else _mask_durations(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_durations(v) for v in value]
    return value


def _comparable_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """What counts as the status' content: all of it but `observedAt`, durations masked."""
    masked: dict[str, Any] = _mask_durations({k: v for k, v in status.items()
                                               if k != "observedAt"})
    return masked


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _owner_uid(obj: Mapping[str, Any], application: Kind) -> str | None:
    for ref in _metadata(obj).get("ownerReferences") or []:
        if (
            isinstance(ref, Mapping)
            and ref.get("kind") == application.kind
            and str(ref.get("apiVersion", "")).startswith(f"{application.group}/")
        ):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


# --- memory ---------------------------------------------------------------------------------


class _NotLeader(Exception):
    """`is_leader()` said no right before a write: the round ends without writing."""


@dataclass
class _Known:
    """What an object's content is as far as we know, and the resourceVersions of the
    object that are not newer than that knowledge (a view showing one of them is stale)."""

    content: Any
    versions: deque[str] = field(default_factory=lambda: deque(maxlen=_MAX_VERSIONS))


@dataclass
class _HealthObject:
    owner_uid: str | None
    status: dict[str, Any] | None  # comparable form; None: unknown or never written
    generation: int | None = None  # metadata.generation, for status.observedGeneration


@dataclass
class _Series:
    """The occurrences of one (application, reason, note) within the aggregation window."""

    application: str
    uid: str
    reason: str
    note: str
    type: str
    related: dict[str, Any] | None
    first: datetime  # eventTime: when the first occurrence happened (its transition time)
    last: datetime  # lastObservedTime: when the latest occurrence happened
    seen: datetime  # when the writer saw the latest occurrence (its own clock: the window)
    occurred: int = 1
    written: int = 0  # occurrences the Event object records (0: not created yet)
    held: int = 0  # occurrences counted as held back by the rate limit so far
    name: str | None = None


# --- the writer -----------------------------------------------------------------------------


class HealthWriter:
    """Writes health objects, Application annotations and Events for each published report.

    `publish` must be given the complete set of Applications as the cache holds them (after
    the caches synced): an Application missing from it counts as deleted, and its
    EventMeshHealth object is deleted.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        is_leader: Callable[[], bool],
        events_namespace: str = DEFAULT_EVENTS_NAMESPACE,
        field_manager: str = "eventmesh-health",
        now: Callable[[], datetime] = _utcnow,
        reporting_instance: str | None = None,
        series_window: timedelta = timedelta(minutes=10),
        max_events_per_minute: int = 5,
        resync_period: timedelta = timedelta(minutes=10),
        application: Kind | None = DEFAULT.application,
        history: History | None = None,
        on_history: Callable[[str, list[dict[str, Any]]], None] | None = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        if events_namespace not in EVENTS_NAMESPACES:
            raise ValueError(
                f"events namespace {events_namespace!r}: Events about Applications (a "
                f"cluster-scoped kind) are accepted by the API server only in "
                f"{' or '.join(EVENTS_NAMESPACES)}"
            )
        if max_events_per_minute < 1:
            raise ValueError("max_events_per_minute must be at least 1")
        self._client = client
        self._is_leader = is_leader
        self._events_namespace = events_namespace
        self._field_manager = field_manager
        self._now = now
        self._instance = (reporting_instance or socket.gethostname() or "eventmesh-health")[
            :REPORTING_INSTANCE_LIMIT
        ]
        self._series_window = series_window
        self._max_events = max_events_per_minute
        self._resync_period = resync_period
        # status.history: what to write for an application, and where what is read goes.
        self._history = history
        self._on_history = on_history
        # Per Application, what its last round was made of, kept once every write of it
        # succeeded: the same again makes no request, so it is not worked out again either
        # (at 10,000 Applications, building and comparing every status took ~1 s a round).
        self._settled: dict[str, tuple[Any, ...]] = {}
        # Every write request takes a token first (None: unlimited).
        self._limiter = limiter

        self._health_res = resource_class(HEALTH_KIND)
        # The profile's application kind: what health objects are owned by and annotate.
        if application is None:
            raise ValueError("HealthWriter needs the kind health objects are owned by")
        self._application = application
        self._app_res = resource_class(application)
        self._event_res = resource_class(EVENT_KIND)

        self._lock = asyncio.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._errors: Counter[tuple[str, str]] = Counter()
        self._rate_limited = 0
        # EventMeshHealth objects by name; valid only while `_synced_at` is set.
        self._health: dict[str, _HealthObject] = {}
        self._synced_at: datetime | None = None
        # Our annotations per Application.
        self._annotations: dict[str, _Known] = {}
        # The health we last published per Application (to see transitions).
        self._published: dict[str, Health] = {}
        # Event series by (application, reason, note with durations masked).
        self._series: dict[tuple[str, str, str], _Series] = {}
        # Per application: when its recent Event writes were sent (rate limit).
        self._event_writes: dict[str, deque[datetime]] = {}

    # -- stats ---------------------------------------------------------------------------------

    @property
    def write_counts(self) -> Mapping[tuple[str, str], int]:
        """Write requests sent, per (resource, verb): e.g. `("eventmeshhealths/status",
        "patch")`, `("applications", "patch")`, `("events", "create")`."""
        return dict(self._counts)

    @property
    def write_errors(self) -> Mapping[tuple[str, str], int]:
        """Write requests answered with an error, per (resource, verb), including conflicts
        the writer then resolved (e.g. creating an object another replica had created)."""
        return dict(self._errors)

    @property
    def rate_limited_events(self) -> int:
        """Event occurrences held back by the per-application rate limit (written later
        into the series' count, not lost)."""
        return self._rate_limited

    # -- publishing ----------------------------------------------------------------------------

    async def publish(
        self,
        report: MeshReport,
        applications: Mapping[str, dict[str, Any]],
        transitions: Mapping[str, datetime],
    ) -> None:
        """Bring health objects, annotations and Events in line with `report`.

        `applications`: name -> the Application as the cache holds it (uid, annotations,
        resourceVersion). `transitions`: name -> when its health last changed. API errors are
        logged and counted (`write_errors`) and retried by a later call; they do not raise.
        """
        async with self._lock:
            if not self._is_leader():
                self._forget_leadership()
                return
            try:
                await self._publish(report, applications, transitions)
            except _NotLeader:
                log.info("lost leadership while publishing; stopped writing")
                self._forget_leadership()

    def _forget_leadership(self) -> None:
        """Another replica may write now: what we remember of the cluster may go stale."""
        self._synced_at = None
        self._health.clear()
        self._published.clear()
        self._series.clear()
        self._settled.clear()

    async def _publish(
        self,
        report: MeshReport,
        applications: Mapping[str, dict[str, Any]],
        transitions: Mapping[str, datetime],
    ) -> None:
        now = self._now()
        observed_at = now
        if report.source is not None:
            observed_at = _parse_time(report.source.taken_at) or now
        synced = await self._sync(now)
        for app in report.applications:
            obj = applications.get(app.name)
            last_transition = transitions.get(app.name, observed_at)
            # What this round's writes of `app` follow from, but for the report's other
            # parts (`settled` leaves out an application whose root causes are found there)
            # and `observedAt` (never a reason to write). The report object is the
            # analysis' own: a new one whenever the application's findings changed.
            inputs = (app, obj, last_transition, self._synced_at,
                      self._history.revision(app.name) if self._history else 0)
            if synced and self._settled.get(app.name) == inputs:
                continue
            self._settled.pop(app.name, None)
            uid = str(_metadata(obj).get("uid") or "") if obj is not None else ""
            if obj is None or not uid:
                continue  # not (yet) in the cache: nothing to own or annotate
            written = True
            if synced:
                written = await self._guard(
                    self._publish_health(app, report, uid, last_transition, observed_at),
                    f"EventMeshHealth {app.name}", resync=True,
                )
            self._observe_transition(app, report, obj, uid, last_transition, now)
            written = await self._guard(
                self._publish_annotations(app, report, obj, last_transition),
                f"annotations of Application {app.name}",
            ) and written
            if synced and written and self._synced_at is inputs[3] and not looks_elsewhere(app):
                self._settled[app.name] = inputs
        await self._flush_events(now)
        if synced:
            for name in [n for n in self._health if n not in applications]:
                await self._guard(self._delete_health(name), f"EventMeshHealth {name}",
                                  resync=True)
        for name in [n for n in self._annotations if n not in applications]:
            del self._annotations[name]
        for name in [n for n in self._published if n not in applications]:
            del self._published[name]
        for name in [n for n in self._settled if n not in applications]:
            del self._settled[name]

    async def _guard(self, work: Awaitable[None], what: str, *, resync: bool = False) -> bool:
        """Run one object's writes; an API failure is logged and retried by a later round.
        Whether they succeeded."""
        try:
            await work
        except (ApiError, httpx2.HTTPError) as err:
            log.warning("writing %s failed: %s", what, _describe(err))
            if resync:
                self._synced_at = None
            return False
        return True

    async def _write(
        self, resource: str, verb: str, request: Callable[[], Awaitable[T]]
    ) -> T:
        """Every write goes through here: leadership is checked right before the request
        (and before each retry of a 429)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if self._limiter is not None:
                await self._limiter.acquire()
            if not self._is_leader():  # after the wait: leadership may have gone meanwhile
                raise _NotLeader
            self._counts[(resource, verb)] += 1
            try:
                return await request()
            except ApiError as err:
                if _code(err) == 429 and attempt < MAX_ATTEMPTS:
                    await asyncio.sleep(_retry_after(err))
                    continue
                self._errors[(resource, verb)] += 1
                raise
            except httpx2.HTTPError:
                self._errors[(resource, verb)] += 1
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- EventMeshHealth objects --------------------------------------------------------------

    async def _sync(self, now: datetime) -> bool:
        """(Re)read every EventMeshHealth object when our record may be stale (a LIST)."""
        if self._synced_at is not None and now - self._synced_at < self._resync_period:
            return True
        health: dict[str, _HealthObject] = {}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async for item in self._client.list(self._health_res):
                    obj = _as_dict(item)
                    name = str(_metadata(obj).get("name") or "")
                    if name:
                        health[name] = self._record(obj)
                        self._read_history(name, obj)
            except ApiError as err:
                if _code(err) == 429 and attempt < MAX_ATTEMPTS:
                    health.clear()
                    await asyncio.sleep(_retry_after(err))
                    continue
                log.warning("listing EventMeshHealth objects failed: %s", _describe(err))
                return False
            except httpx2.HTTPError as err:
                log.warning("listing EventMeshHealth objects failed: %s", _describe(err))
                return False
            break
        self._health = health
        self._synced_at = now
        return True

    def _read_history(self, name: str, obj: Mapping[str, Any]) -> None:
        status = obj.get("status")
        persisted = status.get("history") if isinstance(status, Mapping) else None
        if self._on_history is not None and isinstance(persisted, list) and persisted:
            self._on_history(name, [e for e in persisted if isinstance(e, dict)])

    def _record(self, obj: Mapping[str, Any]) -> _HealthObject:
        status = obj.get("status")
        generation = _metadata(obj).get("generation")
        return _HealthObject(
            owner_uid=_owner_uid(obj, self._application),
            status=_comparable_status(status) if isinstance(status, Mapping) and status else None,
            generation=generation if isinstance(generation, int) else None,
        )

    def _owner(self, name: str, uid: str) -> dict[str, Any]:
        return {
            "apiVersion": self._application.api_version,
            "kind": self._application.kind,
            "name": name,
            "uid": uid,
            "controller": False,
            "blockOwnerDeletion": False,
        }

    async def _publish_health(
        self,
        app: ApplicationReport,
        report: MeshReport,
        uid: str,
        last_transition: datetime,
        observed_at: datetime,
        *,
        retry: bool = True,
    ) -> None:
        name = app.name
        record = self._health.get(name)
        if record is None:
            record = await self._create_health(name, uid)
        status = health_status(app, report, last_transition=last_transition,
                               observed_at=observed_at, generation=record.generation,
                               history=self._history.persisted(name) if self._history else None)
        wanted = _comparable_status(status)
        if record.owner_uid != uid:  # the Application was deleted and created again
            await self._write(HEALTH_RESOURCE, "patch", lambda: self._client.patch(
                self._health_res, name,
                {"metadata": {"ownerReferences": [self._owner(name, uid)]}},
                patch_type=PatchType.MERGE, field_manager=self._field_manager,
            ))
            record.owner_uid = uid
        if record.status == wanted:
            return
        record.status = None  # unknown until the patch succeeded
        try:
            await self._write(HEALTH_STATUS_RESOURCE, "patch", lambda: self._client.patch(
                self._health_res.Status, name, {"status": status},
                patch_type=PatchType.MERGE, field_manager=self._field_manager,
            ))
        except ApiError as err:
            if _code(err) != 404:
                raise
            self._health.pop(name, None)  # deleted behind our back: create it again
            if retry:
                await self._publish_health(app, report, uid, last_transition, observed_at,
                                           retry=False)
            return
        record.status = wanted

    async def _create_health(self, name: str, uid: str) -> _HealthObject:
        body = {
            "apiVersion": HEALTH_KIND.api_version,
            "kind": HEALTH_KIND.kind,
            "metadata": {
                "name": name,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [self._owner(name, uid)],
            },
            "spec": {"application": name},
        }
        try:
            created = await self._write(HEALTH_RESOURCE, "create", lambda: self._client.create(
                self._health_res(body), field_manager=self._field_manager,
            ))
            generation = _metadata(_as_dict(created) if created is not None else {}).get(
                "generation")
            record = _HealthObject(owner_uid=uid, status=None,
                                   generation=generation if isinstance(generation, int) else None)
        except ApiError as err:
            if _code(err) != 409:
                raise
            # It exists after all (written by another replica since our LIST): read it.
            record = self._record(_as_dict(await self._client.get(self._health_res, name)))
        self._health[name] = record
        return record

    async def _delete_health(self, name: str) -> None:
        try:
            await self._write(HEALTH_RESOURCE, "delete", lambda: self._client.delete(
                self._health_res, name,
            ))
        except ApiError as err:
            if _code(err) != 404:
                raise
        self._health.pop(name, None)

    # -- annotations ------------------------------------------------------------------------

    async def _publish_annotations(
        self,
        app: ApplicationReport,
        report: MeshReport,
        obj: Mapping[str, Any],
        last_transition: datetime,
    ) -> None:
        name = app.name
        wanted = application_annotations(app, report, last_transition)
        metadata = _metadata(obj)
        annotations = metadata.get("annotations") or {}
        seen = {key: annotations.get(key) for key in ANNOTATIONS}
        version = str(metadata.get("resourceVersion") or "")
        known = self._annotations.get(name)
        if known is None or version not in known.versions:
            known = _Known(seen)  # the view is news to us: it is the truth
            known.versions.append(version)
            self._annotations[name] = known
        if known.content == wanted:
            return
        patched = await self._write(APPLICATION_RESOURCE, "patch", lambda: self._client.patch(
            self._app_res, name, {"metadata": {"annotations": wanted}},
            patch_type=PatchType.MERGE, field_manager=self._field_manager,
        ))
        known.content = wanted
        new_version = str(_metadata(_as_dict(patched)).get("resourceVersion") or "")
        if new_version:
            known.versions.append(new_version)

    # -- Events -----------------------------------------------------------------------------

    def _observe_transition(
        self,
        app: ApplicationReport,
        report: MeshReport,
        obj: Mapping[str, Any],
        uid: str,
        when: datetime,
        now: datetime,
    ) -> None:
        """Record a health transition (as a new Event or one more in a series). `when`: the
        transition's time (for the Event); `now`: the writer's clock (for the window)."""
        previous = self._published.get(app.name)
        if previous is None:
            # First sight since we lead: what the last leader published, if anyone did.
            annotated = str((_metadata(obj).get("annotations") or {}).get(HEALTH_ANNOTATION))
            previous = Health(annotated) if annotated in Health._value2member_map_ else None
        self._published[app.name] = app.health
        if previous == app.health or (previous is None and app.health is Health.HEALTHY):
            return
        reason = event_reason(app.health)
        note = _event_note(app, report, previous)
        key = (app.name, reason, _DURATION.sub("<d>", note))
        series = self._series.get(key)
        if (
            series is not None
            and series.uid == uid
            and now - series.seen <= self._series_window
        ):
            series.occurred += 1
            series.last = max(series.last, when)
            series.seen = now
            series.note = note
            return
        causes = root_causes(app, report)
        related = None
        if causes and causes[0].object.name:
            ref = causes[0].object
            related = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
            if ref.namespace:
                related["namespace"] = ref.namespace
        self._series[key] = _Series(
            application=app.name, uid=uid, reason=reason, note=note,
            type="Warning" if app.health in _WARNING else "Normal",
            related=related, first=when, last=when, seen=now,
        )

    def _allowed(self, application: str, now: datetime) -> bool:
        writes = self._event_writes.setdefault(application, deque())
        while writes and now - writes[0] >= timedelta(minutes=1):
            writes.popleft()
        return len(writes) < self._max_events

    async def _flush_events(self, now: datetime) -> None:
        """Write every series with unwritten occurrences, as the rate limit allows."""
        for key, series in sorted(self._series.items(), key=lambda item: item[1].seen):
            if series.occurred > series.written:
                if not self._allowed(series.application, now):
                    self._rate_limited += series.occurred - max(series.held, series.written)
                    series.held = series.occurred
                    continue
                self._event_writes[series.application].append(now)
                await self._guard(self._write_series(series), f"Event {series.name or key}")
            elif now - series.seen > self._series_window:
                del self._series[key]
        for application in [a for a, w in self._event_writes.items() if not w]:
            del self._event_writes[application]

    async def _write_series(self, series: _Series) -> None:
        if series.name is not None:
            occurred, name = series.occurred, series.name
            try:
                await self._write(EVENT_RESOURCE, "patch", lambda: self._client.patch(
                    self._event_res, name,
                    {"series": {"count": occurred, "lastObservedTime": _micro_time(series.last)},
                     "note": series.note},
                    namespace=self._events_namespace,
                    patch_type=PatchType.MERGE, field_manager=self._field_manager,
                ))
            except ApiError as err:
                if _code(err) != 404:
                    raise
                series.name = None  # expired (Events live one hour): start a new one
                series.first = series.last
                series.occurred -= series.written
                series.written = 0
            else:
                series.written = occurred
                return
        await self._create_event(series)

    async def _create_event(self, series: _Series) -> None:
        occurred = series.occurred
        # client-go names Events <object>.<nanoseconds, hex>; the random tail keeps two
        # Events of one transition time (or two replicas) apart.
        stamp = int(series.first.timestamp() * 1_000_000_000)
        name = f"{series.application[:200]}.{stamp:x}{secrets.token_hex(3)}"
        body: dict[str, Any] = {
            "apiVersion": EVENT_KIND.api_version,
            "kind": EVENT_KIND.kind,
            "metadata": {"name": name, "namespace": self._events_namespace},
            "eventTime": _micro_time(series.first),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._instance,
            "action": EVENT_ACTION,
            "reason": series.reason,
            "regarding": {
                "apiVersion": self._application.api_version,
                "kind": self._application.kind,
                "name": series.application,
                "uid": series.uid,
            },
            "note": series.note,
            "type": series.type,
        }
        if series.related is not None:
            body["related"] = series.related
        if occurred > 1:
            body["series"] = {"count": occurred, "lastObservedTime": _micro_time(series.last)}
        for attempt in range(2):
            try:
                await self._write(EVENT_RESOURCE, "create", lambda: self._client.create(
                    self._event_res(body), field_manager=self._field_manager,
                ))
            except ApiError as err:
                if _code(err) != 409 or attempt:
                    raise
                body["metadata"]["name"] = f"{name}.{secrets.token_hex(3)}"  # taken: another
                continue
            break
        series.name = body["metadata"]["name"]
        series.written = occurred


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        result: dict[str, Any] = obj.to_dict()
        return result
    return dict(obj)


def _code(err: ApiError) -> int:
    return int(err.status.code or err.response.status_code)


def _retry_after(err: ApiError) -> float:
    try:
        seconds = float(err.response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), MAX_RETRY_AFTER)


def _describe(err: Exception) -> str:
    if isinstance(err, ApiError):
        return f"HTTP {_code(err)}: {err.status.message or err.status.reason}"
    return " ".join(str(err).split()) or type(err).__name__
