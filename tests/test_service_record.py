"""What `serve` records of each new report (transitions, previous health, history), driven by
the real incremental analysis of a bundled example. `Service._record` does no I/O: the client
is never used (its address is a closed loopback port)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig

from eventmesh_health.analysis.incremental import IncrementalAnalysis
from eventmesh_health.model import Health
from eventmesh_health.serve.service import Service, Settings
from eventmesh_health.sources.files import load_snapshot
from eventmesh_health.topology.kyma1 import PROFILE

EXAMPLE = Path(__file__).parent.parent / "examples" / "healthy-mesh"
T0 = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)


@pytest.fixture
async def service() -> Any:
    config = KubeConfig.from_dict({
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c"})
    client = AsyncClient(config, trust_env=False)
    service = Service(client, Settings(leader_election=False, profile=PROFILE, write=False))
    snapshot = load_snapshot(EXAMPLE, PROFILE, now=T0)
    service.analysis = IncrementalAnalysis(snapshot, PROFILE, service.settings.thresholds)
    service.objects = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
                       for o in snapshot.objects}
    yield service
    await client.close()


def _object(service: Any, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
    return copy.deepcopy(service.objects[(kind, namespace, name)])


def _healths(service: Service) -> dict[str, Health]:
    assert service.state.report is not None
    return {a.name: a.health for a in service.state.report.applications}


async def test_transitions_previous_and_history_follow_each_report(service: Any) -> None:
    analysis: IncrementalAnalysis = service.analysis
    state = service.state
    service._record(None, T0)
    apps = ["commerce-mock", "crm-legacy", "marketing"]
    assert _healths(service) == dict.fromkeys(apps, Health.HEALTHY)
    assert state.transitions == dict.fromkeys(apps, T0) and state.previous == {}
    assert [(t.health, t.previous) for t in state.history.of("marketing")] == [
        (Health.HEALTHY, None)]

    # marketing's Trigger stops being Ready: only marketing changes.
    t1 = T0 + timedelta(minutes=1)
    trigger = _object(service, "Trigger", "stage", "marketing-campaign-started")
    failing = copy.deepcopy(trigger)
    for condition in failing["status"]["conditions"]:
        if condition["type"] in ("Ready", "SubscriberResolved"):
            condition.update(status="False", reason="SubscriberResolveFailed",
                             message='services "lambda" not found')
    analysis.apply([failing], [], t1)
    service._record(None, t1)
    broken = _healths(service)["marketing"]
    assert broken is not Health.HEALTHY
    assert state.transitions == {"commerce-mock": T0, "crm-legacy": T0, "marketing": t1}
    assert state.previous == {"marketing": Health.HEALTHY}
    assert [(t.health, t.previous) for t in state.history.of("marketing")] == [
        (Health.HEALTHY, None), (broken, Health.HEALTHY)]
    assert len(state.history.of("commerce-mock")) == 1

    # A report with nothing new (a tick of the clock) records nothing.
    service._record(None, t1 + timedelta(seconds=15))
    assert state.transitions["marketing"] == t1
    assert len(state.history.of("marketing")) == 2

    # Mended; then crm-legacy's Application is deleted: it is forgotten everywhere.
    t2 = T0 + timedelta(minutes=2)
    analysis.apply([trigger], [], t2)
    service._record(None, t2)
    assert state.transitions["marketing"] == t2 and state.previous["marketing"] is broken
    analysis.apply([], [_object(service, "Application", None, "crm-legacy")], t2)
    service._record(None, t2)
    assert set(_healths(service)) == {"commerce-mock", "marketing"}
    assert set(state.transitions) == {"commerce-mock", "marketing"}
    assert "crm-legacy" not in state.previous
    assert state.history.of("crm-legacy") == []


async def test_history_seeded_for_an_application_that_is_gone_is_forgotten(
    service: Any,
) -> None:
    """A health object left by a deleted application is read back by the writer (`seed`):
    the next report forgets what is not in it."""
    service._record(None, T0)
    service.state.history.seed("long-gone", [
        {"time": "2020-06-15T09:00:00Z", "health": "Unhealthy", "previous": None,
         "rootCause": "KafkaChannel x/y: TopicFailed"}])
    assert len(service.state.history.of("long-gone")) == 1
    service._record(None, T0 + timedelta(seconds=15))
    assert service.state.history.of("long-gone") == []
    assert len(service.state.history.of("marketing")) == 1
