"""Incremental analysis gives exactly the report a full analysis gives, after any changes."""

from __future__ import annotations

import copy
import gc
import sys
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmesh_health.analysis import analyse
from eventmesh_health.analysis.incremental import IncrementalAnalysis
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.rulecases import BASE, TAKEN_AT, cases, load_case

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import synthetic

NOW = datetime.fromisoformat(TAKEN_AT)
BASE_OBJECTS: list[dict[str, Any]] = list(yaml.safe_load_all(BASE.read_text()))
# Every object any rule fixture adds or changes: the pool of realistic edits.
EDITS: list[Any] = []
for _path in cases():
    _case = load_case(_path)
    EDITS.extend(o for o in _case.objects if isinstance(o, dict) and o not in BASE_OBJECTS)


def identity(obj: dict[str, Any]) -> tuple[str, str | None, str]:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), meta.get("namespace"), str(meta.get("name")))


def full(objects: list[Any], now: datetime = NOW) -> dict[str, Any]:
    return analyse(Snapshot(objects, now)).to_json_dict()


def test_no_change_same_report() -> None:
    incremental = IncrementalAnalysis(Snapshot(BASE_OBJECTS, NOW), KYMA_1)
    assert incremental.report().to_json_dict() == full(BASE_OBJECTS)
    assert incremental.apply([], [], NOW) == set()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.sampled_from(range(len(EDITS))) if EDITS else st.nothing()),
        st.tuples(st.just("delete"), st.sampled_from(range(len(BASE_OBJECTS)))),
        st.tuples(st.just("restore"), st.sampled_from(range(len(BASE_OBJECTS)))),
    ),
    min_size=1, max_size=8,
))
def test_any_change_sequence_matches_a_full_analysis(steps: list[tuple[str, int]]) -> None:
    current = {identity(o): o for o in copy.deepcopy(BASE_OBJECTS)}
    incremental = IncrementalAnalysis(Snapshot(list(current.values()), NOW), KYMA_1)
    for action, position in steps:
        if action == "upsert":
            obj = copy.deepcopy(EDITS[position])
            if not isinstance(obj.get("metadata"), dict) or "name" not in obj["metadata"]:
                continue  # nameless objects never come from a watch
            current[identity(obj)] = obj
            incremental.apply([obj], [], NOW)
        elif action == "delete":
            gone = current.pop(identity(BASE_OBJECTS[position]), None)
            if gone is not None:
                incremental.apply([], [gone], NOW)
        else:
            obj = copy.deepcopy(BASE_OBJECTS[position])
            current[identity(obj)] = obj
            incremental.apply([obj], [], NOW)
        assert incremental.report().to_json_dict() == full(list(current.values())), steps


def _trigger_and_broken(objects: list[Any], namespace: str) -> tuple[Any, Any]:
    """The Trigger of `namespace`, and a copy of it whose Broker does not exist."""
    trigger = next(o for o in objects if o["kind"] == "Trigger"
                   and o["metadata"]["namespace"] == namespace)
    broken = copy.deepcopy(trigger)
    broken["status"]["conditions"][-1] = {"type": "Ready", "status": "False",
                                          "reason": "BrokerDoesNotExist"}
    return trigger, broken


def test_changes_touch_only_the_applications_they_belong_to() -> None:
    objects = synthetic.mesh(20, 2)
    taken_at = datetime.fromisoformat(synthetic.TAKEN_AT)
    incremental = IncrementalAnalysis(Snapshot(objects, taken_at), KYMA_1)
    trigger, broken = _trigger_and_broken(objects, "app-00007-ns1")
    assert incremental.apply([broken], [], taken_at) == {"app-00007"}
    report = incremental.report()
    assert [a.name for a in report.applications if a.health.value != "Healthy"] == ["app-00007"]
    # A system component failing reaches every application only through causes.
    controller = next(o for o in objects if o["metadata"]["name"] == "eventing-controller"
                      and o["kind"] == "Deployment")
    down = copy.deepcopy(controller)
    down["status"]["availableReplicas"] = 0
    changed = incremental.apply([down], [], taken_at)
    assert changed == {"app-00007"}  # the only application with a failing link
    finding = incremental.report().applications[7].namespaces[1].findings[0]
    assert finding.caused_by is not None and finding.caused_by.name == "eventing-controller"
    assert incremental.report().to_json_dict() == analyse(Snapshot(
        [o for o in objects if o is not trigger and o is not controller] + [broken, down],
        taken_at,
    )).to_json_dict()


def test_tick_reevaluates_what_depends_on_time() -> None:
    deleting = copy.deepcopy(next(o for o in BASE_OBJECTS if o["kind"] == "Subscription"
                                  and o["metadata"]["namespace"] == "stage"))
    deleting["metadata"]["deletionTimestamp"] = TAKEN_AT
    deleting["metadata"]["finalizers"] = ["subscriptions.messaging.knative.dev"]
    incremental = IncrementalAnalysis(Snapshot(BASE_OBJECTS, NOW), KYMA_1)
    incremental.apply([deleting], [], NOW)
    assert incremental.report().health.value == "Progressing"
    later = NOW + timedelta(minutes=6)
    assert incremental.tick(later) == {"commerce"}
    assert incremental.report().health.value == "Unhealthy"


def test_the_last_object_of_a_kind_going_reaches_every_application() -> None:
    """Found by hypothesis in CI: without a list of collected kinds, deleting the only
    HTTPSource makes the kind 'not collected', which changes another application's missing
    HTTPSource from NotFound to NotCollected: every application must be judged again."""
    broken = next(o for o in EDITS if identity(o) == ("Application", None, "broken"))
    source = next(o for o in BASE_OBJECTS if o["kind"] == "HTTPSource")
    assert sum(o["kind"] == "HTTPSource" for o in BASE_OBJECTS) == 1
    current = {identity(o): o for o in copy.deepcopy(BASE_OBJECTS)}
    incremental = IncrementalAnalysis(Snapshot(list(current.values()), NOW), KYMA_1)
    current[identity(broken)] = copy.deepcopy(broken)
    incremental.apply([copy.deepcopy(broken)], [], NOW)
    incremental.apply([], [current.pop(identity(source))], NOW)
    assert incremental.report().to_json_dict() == full(list(current.values()))
    current[identity(source)] = copy.deepcopy(source)  # and back
    incremental.apply([copy.deepcopy(source)], [], NOW)
    assert incremental.report().to_json_dict() == full(list(current.values()))


def test_what_a_change_replaces_is_freed_without_the_cyclic_gc() -> None:
    """serve freezes what its first sync built (`gc.freeze`): the nodes of an application
    the analysis forgets must go by reference counting alone, or each change of it would
    leak its whole chain."""
    objects = synthetic.mesh(20, 2)
    taken_at = datetime.fromisoformat(synthetic.TAKEN_AT)
    incremental = IncrementalAnalysis(Snapshot(objects, taken_at), KYMA_1)
    trigger, broken = _trigger_and_broken(objects, "app-00007-ns1")
    states = [broken, trigger]
    node = incremental.units["app-00007"].nodes[0]
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        def changes(n: int) -> int:
            for i in range(n):
                assert incremental.apply([states[i % 2]], [], taken_at) == {"app-00007"}
            return tracemalloc.get_traced_memory()[0]

        changes(4)  # caches warm
        first = changes(10)
        grown = changes(40) - first
        assert node.parent is None and not node.needs and not node.children
    finally:
        tracemalloc.stop()
        if collecting:
            gc.enable()
    # one application's chain is ~20 nodes of a few hundred bytes: 40 leaked chains would
    # be hundreds of KiB
    assert grown < 20_000, f"{grown} bytes more after 40 more changes"
