"""Property tests: arbitrary damage to valid objects never crashes the analysis, and the
report's invariants hold whatever the input."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmesh_health.analysis import analyse
from eventmesh_health.analysis.index import basic_problem
from eventmesh_health.analysis.rules import (
    DEPLOYMENT_RULES,
    HEALTHY,
    KNATIVE_RULES,
    SERVICE_INSTANCE_RULES,
    Context,
    decide,
    plainly_available,
    plainly_provisioned,
    plainly_ready,
)
from eventmesh_health.model import Health, MeshReport
from eventmesh_health.snapshot import Snapshot
from tests.rulecases import BASE, TAKEN_AT

BASE_OBJECTS: list[dict[str, Any]] = list(yaml.safe_load_all(BASE.read_text()))
NOW = datetime.fromisoformat(TAKEN_AT)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8)
    | st.sampled_from(["True", "False", "Unknown", "Ready", "DEPLOYED", "2020-06-15T09:00:00Z"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["type", "status", "reason", "name", "ready"]), children,
                      max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths.extend(_paths(child, (*prefix, index)))
    return paths


@st.composite
def damaged_mesh(draw: st.DrawFn) -> list[Any]:
    objects: list[Any] = copy.deepcopy(BASE_OBJECTS)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(objects) - 1))
        path = draw(st.sampled_from(_paths(objects[position])))
        replacement = draw(json_values)
        if not path:
            objects[position] = replacement
            continue
        parent = objects[position]
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = replacement
    return objects


def check_invariants(report: MeshReport) -> None:
    rank = Health.rank.fget  # type: ignore[attr-defined]
    located = list(report.system.findings)
    for finding in report.system.findings:
        assert rank(report.system.health) >= rank(finding.health)
    for app in report.applications:
        assert 1 <= app.state <= 4
        assert app.state == max((ns.state for ns in app.namespaces), default=1)
        located.extend(app.findings)
        for finding in app.findings:
            assert rank(app.health) >= rank(finding.health)
        for ns in app.namespaces:
            assert rank(app.health) >= rank(ns.health)
            located.extend(ns.findings)
            for finding in ns.findings:
                assert rank(ns.health) >= rank(finding.health)
        assert rank(report.health) >= rank(app.health)
    assert rank(report.health) >= rank(report.system.health)
    assert report.healthy is (report.health is Health.HEALTHY)
    if report.healthy:
        assert not located
    roots = {finding.object for finding in located if finding.root_cause}
    for finding in located:
        assert finding.health is not Health.HEALTHY
        if finding.root_cause:
            assert finding.caused_by is None
        else:
            # every symptom's causedBy names a root-cause finding that exists
            assert finding.caused_by in roots, finding


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_mesh())
def test_damage_never_raises_and_invariants_hold(objects: list[Any]) -> None:
    report = analyse(Snapshot(objects, NOW))
    check_invariants(report)
    # The JSON contract can always be produced.
    assert report.to_json_dict()["health"] == report.health.value


# What exists only because Events are enabled in `stage`: without an Events ServiceInstance
# (and without a Trigger, which would demand one) none of it is expected any more (state 2).
EVENTS_ENABLED = {
    ("ServiceInstance", "commerce-events"),
    ("EventActivation", "4f1b4d8e-5f2a-4c8b-9b1e-events000001"),
    ("Namespace", "stage"), ("Subscription", "brokersub-stage"), ("Broker", "default"),
    ("Deployment", "default-broker-ingress"), ("Deployment", "default-broker-filter"),
    ("KafkaChannel", "default-kne-trigger"),
}


def _optional(obj: dict[str, Any], remaining: list[dict[str, Any]]) -> bool:
    """Pods (a Deployment's status is what counts), Triggers (zero or more, the user's), the
    Subscriptions Triggers own (the Trigger's own status says whether it is subscribed),
    webhook configurations (judged when present; eventing-webhook re-creates its own), and
    what Events being enabled brings once neither the ServiceInstance nor a Trigger is left."""
    owners = {ref["kind"] for ref in obj["metadata"].get("ownerReferences", [])}
    if obj["kind"] in ("Pod", "Trigger", "ValidatingWebhookConfiguration") or "Trigger" in owners:
        return True
    events_gone = not any(o["kind"] in ("ServiceInstance", "Trigger") for o in remaining)
    return events_gone and (obj["kind"], obj["metadata"]["name"]) in EVENTS_ENABLED


@settings(max_examples=100, deadline=None)
@given(st.lists(
    st.sampled_from([i for i, o in enumerate(BASE_OBJECTS) if o["kind"] != "Application"]),
    unique=True, max_size=12,
))
def test_any_missing_objects_are_judged_never_crash(removed: list[int]) -> None:
    objects = [o for i, o in enumerate(BASE_OBJECTS) if i not in set(removed)]
    report = analyse(Snapshot(objects, NOW))
    check_invariants(report)
    if removed:
        # Every object the chain needs is missed when it goes, except the optional ones.
        needed = [i for i in removed if not _optional(BASE_OBJECTS[i], objects)]
        assert report.healthy is (not needed)


def test_base_mesh_is_healthy() -> None:
    report = analyse(Snapshot(BASE_OBJECTS, NOW))
    check_invariants(report)
    assert report.healthy


# Values that change a judgement.
TELLING: list[Any] = [
    None, 0, 1, 2, 5, -1, True, "", "x", [], {}, "Failed", "Running", "CrashLoopBackOff",
    "ImagePullBackOff", "ProgressDeadlineExceeded", "NewReplicaSetAvailable", "Progressing",
    "Available", "Ready", "True", "False", "2020-06-15T09:59:00Z", {"phase": "Failed"},
    {"waiting": {"reason": "CrashLoopBackOff"}}, {"reason": "ErrImagePull"}, {"waiting": {}},
    [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
    [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "True"}],
    [{"type": "Ready", "status": "True"}, "Ready"], [{"status": "True"}],
    [{"name": "main", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}], ["main"],
]


def _damaged(obj: Any) -> list[Any]:
    """`obj` with one field (or itself) replaced by each telling value, or removed."""
    found = []
    for path in _paths(obj):
        for replacement in [*TELLING, _REMOVE]:
            if not path:
                if replacement is not _REMOVE:
                    found.append(copy.deepcopy(replacement))
                continue
            damaged = copy.deepcopy(obj)
            parent = damaged
            for step in path[:-1]:
                parent = parent[step]
            if replacement is not _REMOVE:
                parent[path[-1]] = copy.deepcopy(replacement)
            elif isinstance(parent, dict):
                del parent[path[-1]]
            else:
                continue
            found.append(damaged)
    for (*where, key), value in ADDED:
        added = copy.deepcopy(obj)
        parent = added
        for step in where:
            parent = parent.setdefault(step, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent[key] = value
            found.append(added)
    return found


_REMOVE = object()
# Fields the base objects lack, added.
ADDED: list[tuple[tuple[str, ...], Any]] = [
    (("metadata", "deletionTimestamp"), "2020-06-15T09:59:00Z"), (("spec", "replicas"), 0),
    (("status", "observedGeneration"), 0), (("metadata", "generation"), 7),
    (("status", "reconciledGeneration"), 0), (("status", "reconciledGeneration"), "1"),
    (("status", "conditions"), [{"type": "Failed", "status": "True"}]),
]
DEPLOYMENTS = [o for o in BASE_OBJECTS if o["kind"] == "Deployment"]
KNATIVE = [o for o in BASE_OBJECTS if "knative.dev" in o["apiVersion"]]


def _pods_of(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    selector = deployment["spec"]["selector"]["matchLabels"].items()
    return [o for o in BASE_OBJECTS if o["kind"] == "Pod" and o["metadata"]["namespace"]
            == deployment["metadata"]["namespace"]
            and selector <= o["metadata"].get("labels", {}).items()]


def _plainly_available_only_if_healthy(deployment: Any, pods: list[Any]) -> int:
    # the index hands a judge only objects whose metadata it checked
    pods = [pod for pod in pods if basic_problem(pod) is None]
    if not isinstance(deployment, dict) or basic_problem(deployment) is not None:
        return 0
    context = Context(now=NOW, pods=pods)
    healthy = decide(DEPLOYMENT_RULES, deployment, context) == HEALTHY
    assert healthy or not plainly_available(deployment, pods), (deployment, pods)
    return int(healthy)


def test_a_deployment_plainly_available_is_healthy_by_the_rules() -> None:
    """The analysis' shortcut for the common case (`plainly_available`) says Healthy only
    where the Deployment rules do, whatever one field of the Deployment or of one of its
    Pods says."""
    checked = healthy = with_pods = 0
    for deployment in DEPLOYMENTS:
        pods = _pods_of(deployment)
        with_pods += bool(pods)
        for damaged in _damaged(deployment):
            healthy += _plainly_available_only_if_healthy(damaged, pods)
            checked += 1
        for at, pod in enumerate(pods):
            for damaged in _damaged(pod):
                healthy += _plainly_available_only_if_healthy(
                    deployment, [*pods[:at], damaged, *pods[at + 1:]])
                checked += 1
    assert 0 < healthy < checked and with_pods  # both sides were seen, and Pods


def test_an_object_plainly_ready_is_healthy_by_the_rules() -> None:
    """The same for Knative objects and `plainly_ready`, with and without generations."""
    checked = healthy = 0
    for obj in KNATIVE:
        for damaged in _damaged(obj):
            if not isinstance(damaged, dict) or basic_problem(damaged) is not None:
                continue
            for observes in (True, False):
                context = Context(now=NOW, observes_generation=observes)
                verdict = decide(KNATIVE_RULES, damaged, context)
                assert verdict == HEALTHY or not plainly_ready(damaged, observes), damaged
                healthy += verdict == HEALTHY
                checked += 1
    assert 0 < healthy < checked


ORDER_SCRIPT = """
import copy, yaml
from eventmesh_health.analysis import analyse
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology.registry import lookup
from tests.test_properties import BASE_OBJECTS, NOW
objects = copy.deepcopy(BASE_OBJECTS)
triggers = [o for o in objects if o["kind"] == "Trigger"]
triggers[0]["spec"] = "broken"
triggers[1]["spec"]["filter"]["attributes"]["source"] = 7
report = analyse(Snapshot(objects, NOW), lookup("kyma-1+knative-v1"))
print([(f.object.name, f.message) for f in report.system.findings])
"""


def test_malformed_objects_are_reported_in_one_order_whatever_the_string_hashing() -> None:
    """The findings on objects the field indexes could not read come in the profile's
    order, not in the order of a set of strings (which changes from process to process)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    outputs = {
        subprocess.run(
            [sys.executable, "-c", ORDER_SCRIPT], check=True, capture_output=True, text=True,
            cwd=Path(__file__).parent.parent, timeout=60,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in range(8)
    }
    assert len(outputs) == 1, outputs
    assert "cannot tell which application it belongs to" in outputs.pop()


def test_a_service_instance_plainly_provisioned_is_healthy_by_the_rules() -> None:
    """The same for ServiceInstances and `plainly_provisioned`."""
    checked = healthy = 0
    for obj in [o for o in BASE_OBJECTS if o["kind"] == "ServiceInstance"]:
        for damaged in _damaged(obj):
            if not isinstance(damaged, dict) or basic_problem(damaged) is not None:
                continue
            verdict = decide(SERVICE_INSTANCE_RULES, damaged, Context(now=NOW))
            assert verdict == HEALTHY or not plainly_provisioned(damaged), damaged
            healthy += verdict == HEALTHY
            checked += 1
    assert 0 < healthy < checked
