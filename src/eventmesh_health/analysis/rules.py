"""One judgement per kind of object, each a short ordered list of small rules.

Like kstatus: the first rule that has something to say decides. Every rule is
pure (the clock comes in as `Context.now`) and has a table test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from eventmesh_health import reasons
from eventmesh_health.analysis.fields import (
    Malformed,
    Obj,
    condition,
    conditions,
    duration,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
    get_time,
    labels,
)
from eventmesh_health.model import Health, printable
from eventmesh_health.topology import Judge


@dataclass(frozen=True, slots=True)
class Thresholds:
    # Finalizers that outlive this after deletion was requested are stuck.
    stuck_deletion: timedelta = timedelta(minutes=5)
    # A controller that has not reported within this is not coming back by itself.
    progress_deadline: timedelta = timedelta(minutes=10)


# What of an object's own text (a controller's reason and message) a report repeats.
MAX_REASON, MAX_MESSAGE = 100, 2000


@dataclass(frozen=True, slots=True)
class Verdict:
    health: Health
    reason: str
    message: str

    def __post_init__(self) -> None:
        # Reasons and messages echo what objects say: bounded and without control
        # characters, whatever a hostile dump holds.
        object.__setattr__(self, "reason", printable(self.reason, MAX_REASON))
        object.__setattr__(self, "message", printable(self.message, MAX_MESSAGE))


HEALTHY = Verdict(Health.HEALTHY, reasons.READY, "")


@dataclass(frozen=True, slots=True)
class Context:
    now: datetime
    thresholds: Thresholds = Thresholds()
    # Related objects a judge may need: the Pods of a Deployment, the Endpoints of a Service.
    pods: Sequence[Obj] = ()
    endpoints: Sequence[Obj] = ()
    label: tuple[str, str] | None = None
    # Whether the object's controller writes status.observedGeneration (the profile's
    # `Kind.observed_generation`): without it, generations are not compared.
    observes_generation: bool = True
    # For a kind judged per class (`Kind.classes`): the annotation and the known classes.
    classes: tuple[str, tuple[str, ...]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def age(self, since: datetime) -> timedelta:
        return self.now - since


Rule = Callable[[Obj, Context], Verdict | None]


def decide(rules: Sequence[Rule], obj: Obj, ctx: Context) -> Verdict:
    """Run `rules` in order; a malformed field is itself the verdict: Unknown."""
    try:
        for rule in rules:
            verdict = rule(obj, ctx)
            if verdict is not None:
                return verdict
    except Malformed as err:
        return Verdict(Health.UNKNOWN, reasons.MALFORMED_OBJECT, str(err))
    return HEALTHY


# --- shared rules -------------------------------------------------------------------------


def being_deleted(obj: Obj, ctx: Context) -> Verdict | None:
    """deletionTimestamp set: Terminating, then StuckInDeletion once finalizers outlive the
    threshold (the classic 'Subscriptions hung on finalizers after an upgrade')."""
    meta = obj.get("metadata")
    if type(meta) is dict and meta.get("deletionTimestamp") is None:
        return None  # the common case, without the typed walk
    since = get_time(obj, "metadata", "deletionTimestamp")
    if since is None:
        return None
    finalizers = [str(f) for f in get_list(obj, "metadata", "finalizers") or []]
    age = ctx.age(since)
    held = f" held by finalizers {', '.join(finalizers)}" if finalizers else ""
    if finalizers and age > ctx.thresholds.stuck_deletion:
        return Verdict(
            Health.UNHEALTHY,
            reasons.STUCK_IN_DELETION,
            f"deletion requested {duration(age.total_seconds())} ago,{held}",
        )
    return Verdict(Health.PROGRESSING, reasons.TERMINATING, f"being deleted{held}")


def _young(obj: Obj, ctx: Context) -> bool:
    created = get_time(obj, "metadata", "creationTimestamp")
    return created is not None and ctx.age(created) < ctx.thresholds.progress_deadline


def _no_status(obj: Obj, ctx: Context, what: str) -> Verdict:
    if _young(obj, ctx):
        return Verdict(Health.PROGRESSING, reasons.NOT_YET_RECONCILED, f"no {what} reported yet")
    return Verdict(
        Health.UNKNOWN,
        reasons.NO_STATUS,
        f"no {what} reported: its controller has never reconciled it",
    )


# --- Knative-style readiness --------------------------------------------------------------


def ready_false(obj: Obj, ctx: Context) -> Verdict | None:
    """A real `Ready=False` shows with its reason, whatever the generations say: "not yet
    observed" must never hide a failure the controller did report."""
    ready = condition(obj, "Ready")
    if ready is not None and ready.get("status") == "False":
        return ready_condition(obj, ctx)
    return None


def generation_observed(obj: Obj, ctx: Context) -> Verdict | None:
    if not ctx.observes_generation:
        return None  # this kind's controller never writes observedGeneration
    generation = get_int(obj, "metadata", "generation")
    observed = get_int(obj, "status", "observedGeneration")
    if generation is None or (observed is not None and observed >= generation):
        return None
    if not conditions(obj) and observed is None:
        return _no_status(obj, ctx, "status")
    return Verdict(
        Health.PROGRESSING,
        reasons.GENERATION_NOT_OBSERVED,
        f"generation {generation} not yet observed by its controller "
        f"(observedGeneration {observed if observed is not None else 'unset'})",
    )


def _first_false_subcondition(obj: Obj) -> dict[str, Any] | None:
    for cond in conditions(obj):
        if cond.get("type") == "Ready" or cond.get("status") != "False":
            continue
        # Knative marks informational conditions with a severity; they never block Ready.
        if cond.get("severity") in ("Warning", "Info"):
            continue
        return cond
    return None


def ready_condition(obj: Obj, ctx: Context) -> Verdict | None:
    conds = conditions(obj)
    if not conds:
        return _no_status(obj, ctx, "conditions")
    ready = next((c for c in conds if c.get("type") == "Ready"), None)
    if ready is None:
        return Verdict(Health.UNKNOWN, reasons.READY_CONDITION_MISSING,
                       "status has no Ready condition")
    status = ready.get("status")
    if status == "True":
        return None
    sub = _first_false_subcondition(obj)
    cause = sub if sub is not None else ready
    reason = str(cause.get("reason") or f"{cause.get('type')}{cause.get('status')}")
    message = str(cause.get("message") or ready.get("message") or "")
    if sub is not None:
        message = f"{sub.get('type')} is False: {message}".rstrip(": ")
    if status == "False":
        return Verdict(Health.UNHEALTHY, reason, message or "Ready is False")
    # Ready=Unknown means "still working on it", which is not a failure, until it lasts.
    since = get_time(ready, "lastTransitionTime")
    if since is not None and ctx.age(since) > ctx.thresholds.progress_deadline:
        return Verdict(
            Health.DEGRADED,
            reason,
            f"Ready has been Unknown for {duration(ctx.age(since).total_seconds())}: {message}",
        )
    return Verdict(Health.PROGRESSING, reason, message or "Ready is Unknown")


def known_class(obj: Obj, ctx: Context) -> Verdict | None:
    """A Ready object of a class this profile cannot judge further (a Broker whose class
    is neither channel-based nor Kafka): its own Ready says little about its data plane."""
    if ctx.classes is None:
        return None
    annotation, known = ctx.classes
    value = get_str(obj, "metadata", "annotations", annotation)
    if value is None or value in known:  # unset: the webhook defaults it to the first
        return None
    return Verdict(
        Health.UNKNOWN, reasons.CLASS_NOT_JUDGED,
        f"{annotation}={value!r}: only {', '.join(known)} can be judged; its own Ready is "
        "True, but what serves it (ingress, dispatch) is not known to this profile",
    )


KNATIVE_RULES: tuple[Rule, ...] = (
    being_deleted, ready_false, generation_observed, ready_condition, known_class,
)


# --- Application (application-operator) ---------------------------------------------------

# application-operator writes the Helm release status: Helm 2's upper-case names in Kyma
# 1.11-1.13, Helm 3's lower-case ones from 1.14 (docs/reference/kyma1-kyma-shapes.md §1).
_HELM_DEPLOYED = {"DEPLOYED", "deployed"}
_HELM_FAILED = {"FAILED", "failed"}
_HELM_PENDING = {
    "PENDING_INSTALL", "PENDING_UPGRADE", "PENDING_ROLLBACK", "DELETING",
    "pending-install", "pending-upgrade", "pending-rollback", "uninstalling",
}
# spec.skipInstallation: no release, by design (event-service, HTTPSource, ... never made).
INSTALLATION_SKIPPED = "INSTALLATION_SKIPPED"


def installation_status(obj: Obj, ctx: Context) -> Verdict | None:
    status = get_str(obj, "status", "installationStatus", "status")
    description = get_str(obj, "status", "installationStatus", "description") or ""
    if status in _HELM_DEPLOYED:
        return None
    if status == INSTALLATION_SKIPPED:
        return Verdict(Health.HEALTHY, reasons.INSTALLATION_SKIPPED,
                       "spec.skipInstallation: application-operator installs no release")
    if status is None:
        return _no_status(obj, ctx, "installationStatus")
    detail = f"installationStatus.status is {status}" + (f": {description}" if description else "")
    if status in _HELM_PENDING:
        return Verdict(Health.PROGRESSING, reasons.INSTALLATION_PENDING, detail)
    reason = reasons.INSTALLATION_FAILED if status in _HELM_FAILED else reasons.NOT_DEPLOYED
    return Verdict(Health.UNHEALTHY, reason, detail)


APPLICATION_RULES: tuple[Rule, ...] = (being_deleted, installation_status)


# --- ServiceInstance (service catalog) ----------------------------------------------------


def _catalog_condition(obj: Obj, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions(obj) if c.get("type") == type_), None)


def provision_status(obj: Obj, ctx: Context) -> Verdict | None:
    provision = get_str(obj, "status", "provisionStatus")
    # Set at the *start* of processing (service-catalog v0.3 prepareObservedGeneration): read
    # (so a malformed one is seen) but only reconciledGeneration means "done".
    get_int(obj, "status", "observedGeneration")
    failed = _catalog_condition(obj, "Failed")
    ready = _catalog_condition(obj, "Ready")
    if provision == "Provisioned" and not (failed and failed.get("status") == "True"):
        generation = get_int(obj, "metadata", "generation")
        reconciled = get_int(obj, "status", "reconciledGeneration")
        if generation is not None and reconciled is not None and reconciled < generation:
            return Verdict(
                Health.PROGRESSING,
                reasons.UPDATE_IN_PROGRESS,
                f"generation {generation} not yet reconciled (reconciledGeneration {reconciled})",
            )
        return None
    if failed is not None and failed.get("status") == "True":
        return Verdict(
            Health.UNHEALTHY,
            str(failed.get("reason") or reasons.PROVISION_FAILED),
            str(failed.get("message") or "provisioning failed"),
        )
    if get_bool(obj, "status", "asyncOpInProgress") or get_str(
        obj, "status", "currentOperation"
    ) in ("Provision", "Update"):
        return Verdict(Health.PROGRESSING, reasons.PROVISIONING, "provisioning in progress")
    if ready is not None and ready.get("status") == "False":
        return Verdict(
            Health.UNHEALTHY,
            str(ready.get("reason") or reasons.NOT_PROVISIONED),
            str(ready.get("message") or f"provisionStatus is {provision}"),
        )
    if provision in (None, "") and ready is None:
        # Never processed: no status at all, or the first pass's `provisionStatus: ""` with
        # `conditions: []` (service-catalog v0.3 initializeServiceInstanceStatus).
        return _no_status(obj, ctx, "provisioning")
    return Verdict(
        Health.UNHEALTHY, reasons.NOT_PROVISIONED, f"provisionStatus is {provision or 'unset'}"
    )


SERVICE_INSTANCE_RULES: tuple[Rule, ...] = (being_deleted, provision_status)


# --- Deployment, judged with its Pods ------------------------------------------------------

_POD_FAILURES = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
}


def _pod_problem(pods: Sequence[Obj]) -> tuple[str, str] | None:
    """The first failing container among `pods`: (reason, message)."""
    for pod in pods:
        name = get_str(pod, "metadata", "name") or "<unnamed>"
        if get_str(pod, "status", "phase") == "Failed":
            message = get_str(pod, "status", "message") or ""
            return reasons.POD_FAILED, f"pod {name} failed: {message}"
        for status in get_list(pod, "status", "containerStatuses") or []:
            if not isinstance(status, dict):
                raise Malformed(("status", "containerStatuses"), "a list of maps", status)
            waiting = get_map(status, "state", "waiting")
            reason = get_str(waiting, "reason") if waiting else None
            if reason in _POD_FAILURES:
                restarts = get_int(status, "restartCount") or 0
                last = get_map(status, "lastState", "terminated") or {}
                exit_info = ""
                if last:
                    exit_info = f", last exit code {last.get('exitCode')}"
                    if last.get("reason"):
                        exit_info += f" ({last['reason']})"
                detail = get_str(waiting, "message") if waiting else None
                return str(reason), (
                    f"pod {name} container {status.get('name')}: {reason}, "
                    f"{restarts} restarts{exit_info}" + (f": {detail}" if detail else "")
                )
    return None


_ROLLOUT_COMPLETE = "NewReplicaSetAvailable"


def deployment_available(obj: Obj, ctx: Context) -> Verdict | None:
    replicas = get_int(obj, "spec", "replicas")
    if replicas == 0:
        return Verdict(Health.UNHEALTHY, reasons.SCALED_TO_ZERO, "spec.replicas is 0")
    generation = get_int(obj, "metadata", "generation")
    observed = get_int(obj, "status", "observedGeneration")
    if get_map(obj, "status") is None:
        return _no_status(obj, ctx, "status")
    available = get_int(obj, "status", "availableReplicas") or 0
    desired = replicas if replicas is not None else 1
    problem = _pod_problem(ctx.pods)
    progressing = next(
        (c for c in conditions(obj) if c.get("type") == "Progressing"), None
    )
    if available < 1:
        if problem:
            return Verdict(Health.UNHEALTHY, problem[0], f"no replica available; {problem[1]}")
        if generation is not None and observed is not None and observed < generation:
            return Verdict(Health.PROGRESSING, reasons.GENERATION_NOT_OBSERVED,
                           "rollout not yet observed")
        avail = next((c for c in conditions(obj) if c.get("type") == "Available"), None)
        message = str((avail or {}).get("message") or f"0 of {desired} replicas available")
        # A young Deployment whose rollout is under way is starting up; one whose rollout
        # completed (NewReplicaSetAvailable, kube-controller-manager's deploymentutil) has
        # lost its replicas since, however young it is.
        settled = (reasons.PROGRESS_DEADLINE_EXCEEDED, _ROLLOUT_COMPLETE)
        if progressing is not None and progressing.get("reason") not in settled and (
            _young(obj, ctx)
        ):
            return Verdict(Health.PROGRESSING, reasons.ROLLOUT_IN_PROGRESS, message)
        return Verdict(Health.UNHEALTHY, reasons.DEPLOYMENT_UNAVAILABLE, message)
    if progressing is not None and progressing.get("reason") == reasons.PROGRESS_DEADLINE_EXCEEDED:
        return Verdict(
            Health.DEGRADED, reasons.PROGRESS_DEADLINE_EXCEEDED,
            str(progressing.get("message") or ""),
        )
    if available < desired:
        detail = f"; {problem[1]}" if problem else ""
        return Verdict(
            Health.DEGRADED,
            problem[0] if problem else reasons.REPLICAS_UNAVAILABLE,
            f"{available} of {desired} replicas available{detail}",
        )
    if problem:
        return Verdict(Health.DEGRADED, problem[0], problem[1])
    return None


DEPLOYMENT_RULES: tuple[Rule, ...] = (being_deleted, deployment_available)


def statefulset_ready(obj: Obj, ctx: Context) -> Verdict | None:
    """A StatefulSet (apps/v1 of Kubernetes 1.16-1.19 has no availableReplicas): its ready
    replicas against spec.replicas, with the state of its Pods."""
    replicas = get_int(obj, "spec", "replicas")
    if replicas == 0:
        return Verdict(Health.UNHEALTHY, reasons.SCALED_TO_ZERO, "spec.replicas is 0")
    if get_map(obj, "status") is None:
        return _no_status(obj, ctx, "status")
    generation = get_int(obj, "metadata", "generation")
    observed = get_int(obj, "status", "observedGeneration")
    ready = get_int(obj, "status", "readyReplicas") or 0
    desired = replicas if replicas is not None else 1
    problem = _pod_problem(ctx.pods)
    if ready < 1:
        if problem:
            return Verdict(Health.UNHEALTHY, problem[0], f"no replica ready; {problem[1]}")
        if generation is not None and observed is not None and observed < generation:
            return Verdict(Health.PROGRESSING, reasons.GENERATION_NOT_OBSERVED,
                           "rollout not yet observed")
        if _young(obj, ctx):
            return Verdict(Health.PROGRESSING, reasons.ROLLOUT_IN_PROGRESS,
                           f"0 of {desired} replicas ready")
        return Verdict(Health.UNHEALTHY, reasons.REPLICAS_UNAVAILABLE,
                       f"0 of {desired} replicas ready")
    if ready < desired:
        detail = f"; {problem[1]}" if problem else ""
        return Verdict(Health.DEGRADED, problem[0] if problem else reasons.REPLICAS_UNAVAILABLE,
                       f"{ready} of {desired} replicas ready{detail}")
    if problem:
        return Verdict(Health.DEGRADED, problem[0], problem[1])
    return None


STATEFULSET_RULES: tuple[Rule, ...] = (being_deleted, statefulset_ready)


# --- Service with ready endpoints (admission webhooks) ------------------------------------


def _ready_addresses(endpoints: Obj) -> int:
    count = 0
    if get_str(endpoints, "kind") == "EndpointSlice":
        for endpoint in get_list(endpoints, "endpoints") or []:
            ready = get_bool(endpoint, "conditions", "ready")
            if ready is None or ready:  # unset means ready (discovery.k8s.io/v1)
                count += 1
        return count
    for subset in get_list(endpoints, "subsets") or []:
        count += len(get_list(subset, "addresses") or [])
    return count


def service_endpoints(obj: Obj, ctx: Context) -> Verdict | None:
    if not ctx.endpoints:
        return Verdict(
            Health.UNHEALTHY, reasons.NO_READY_ENDPOINTS,
            "no Endpoints or EndpointSlices for the Service",
        )
    if sum(_ready_addresses(e) for e in ctx.endpoints) == 0:
        return Verdict(
            Health.UNHEALTHY,
            reasons.NO_READY_ENDPOINTS,
            "the Service has no ready endpoint: nothing sent to it (an admission call, an "
            "event) arrives",
        )
    return None


SERVICE_RULES: tuple[Rule, ...] = (being_deleted, service_endpoints)


# --- objects without status ---------------------------------------------------------------

EXISTS_RULES: tuple[Rule, ...] = (being_deleted,)


def namespace_label(obj: Obj, ctx: Context) -> Verdict | None:
    assert ctx.label is not None, "the profile gives a label to every namespace-label link"
    key, value = ctx.label
    actual = labels(obj).get(key)
    if actual == value:
        return None
    shown = "absent" if actual is None else f"{actual!r}"
    return Verdict(
        Health.UNHEALTHY,
        reasons.INJECTION_LABEL_MISSING,
        f"label {key}={value} is {shown}, so Knative creates no Broker in the namespace",
    )


NAMESPACE_LABEL_RULES: tuple[Rule, ...] = (being_deleted, namespace_label)


RULES: dict[Judge, tuple[Rule, ...]] = {
    Judge.KNATIVE: KNATIVE_RULES,
    Judge.DEPLOYMENT: DEPLOYMENT_RULES,
    Judge.STATEFULSET: STATEFULSET_RULES,
    Judge.APPLICATION: APPLICATION_RULES,
    Judge.SERVICE_INSTANCE: SERVICE_INSTANCE_RULES,
    Judge.EXISTS: EXISTS_RULES,
    Judge.NAMESPACE_LABEL: NAMESPACE_LABEL_RULES,
    Judge.SERVICE: SERVICE_RULES,
}


def plainly_ready(obj: Obj, observes_generation: bool) -> bool:
    """The common case, decided without the full rule list: not being deleted, latest
    generation observed, every condition well-formed and Ready True. Anything else (or
    anything odd) goes through the rules, which say exactly what is wrong."""
    meta = obj.get("metadata")
    status = obj.get("status")
    if type(meta) is not dict or type(status) is not dict:
        return False
    if meta.get("deletionTimestamp") is not None:
        return False
    generation = meta.get("generation")
    if observes_generation and generation is not None:
        observed = status.get("observedGeneration")
        if type(generation) is not int or type(observed) is not int or observed < generation:
            return False
    by_type = _plain_conditions(status.get("conditions"))
    return by_type is not None and by_type.get("Ready", {}).get("status") == "True"


def _plain_conditions(items: Any) -> dict[str, dict[str, Any]] | None:
    """`status.conditions` by type when the rules would read it without a finding (a list of
    maps, each of a string type seen once); None otherwise, and for no list at all: the rules
    say exactly what is wrong (a duplicate: MalformedObject)."""
    if type(items) is not list:
        return None
    by_type: dict[str, dict[str, Any]] = {}
    for item in items:
        if type(item) is not dict:
            return None
        type_ = item.get("type")
        if type(type_) is not str or type_ in by_type:
            return None
        by_type[type_] = item
    return by_type


def plainly_available(obj: Obj, pods: Sequence[Obj]) -> bool:
    """DEPLOYMENT_RULES' common case, decided without them: not being deleted, well-formed,
    every desired replica available, no Progressing deadline exceeded and no Pod failing.
    True only when the rules would find nothing wrong; anything else (or odd) goes through
    them."""
    meta = obj.get("metadata")
    status = obj.get("status")
    spec = obj.get("spec")
    if type(meta) is not dict or type(status) is not dict or (
            spec is not None and type(spec) is not dict):
        return False
    if meta.get("deletionTimestamp") is not None:
        return False
    replicas = spec.get("replicas") if spec is not None else None
    if replicas is not None and (type(replicas) is not int or replicas < 1):
        return False
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    available = status.get("availableReplicas")
    if ((generation is not None and type(generation) is not int)
            or (observed is not None and type(observed) is not int)
            or type(available) is not int or available < (replicas or 1)):
        return False
    items = status.get("conditions")
    if items is not None:
        by_type = _plain_conditions(items)
        if by_type is None or (by_type.get("Progressing", {}).get("reason")
                               == reasons.PROGRESS_DEADLINE_EXCEEDED):
            return False
    return all(_plainly_running(pod) for pod in pods)


def _plainly_running(pod: Obj) -> bool:
    """`_pod_problem` finds nothing in `pod`, and nothing malformed on its way."""
    status = pod.get("status")
    if status is None:
        return True
    if type(status) is not dict:
        return False
    phase = status.get("phase")
    if phase == "Failed" or (phase is not None and type(phase) is not str):
        return False
    containers = status.get("containerStatuses")
    if containers is None:
        return True
    if type(containers) is not list:
        return False
    for container in containers:
        if type(container) is not dict:
            return False
        state = container.get("state")
        if state is None:
            continue
        if type(state) is not dict:
            return False
        waiting = state.get("waiting")
        if waiting is None:
            continue
        if type(waiting) is not dict:
            return False
        reason = waiting.get("reason") if waiting else None
        if reason is not None and (type(reason) is not str or reason in _POD_FAILURES):
            return False
    return True


def plainly_provisioned(obj: Obj) -> bool:
    """SERVICE_INSTANCE_RULES' common case, decided without them: not being deleted,
    Provisioned, not Failed, its generation reconciled, every field they read well-formed."""
    meta = obj.get("metadata")
    status = obj.get("status")
    if type(meta) is not dict or type(status) is not dict:
        return False
    if meta.get("deletionTimestamp") is not None or status.get("provisionStatus") != "Provisioned":
        return False
    generation, reconciled = meta.get("generation"), status.get("reconciledGeneration")
    observed = status.get("observedGeneration")
    if any(value is not None and type(value) is not int
           for value in (generation, reconciled, observed)):
        return False
    if generation is not None and reconciled is not None and reconciled < generation:
        return False
    items = status.get("conditions")
    if items is None:
        return True
    by_type = _plain_conditions(items)
    return by_type is not None and by_type.get("Failed", {}).get("status") != "True"


def judge(kind: Judge, obj: Obj, ctx: Context) -> Verdict:
    if (kind is Judge.KNATIVE and ctx.classes is None
            and plainly_ready(obj, ctx.observes_generation)):
        return HEALTHY
    return decide(RULES[kind], obj, ctx)
