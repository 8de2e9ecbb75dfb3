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
