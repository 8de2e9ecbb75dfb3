"""Argo CD-style fixtures: one folder per rule, input and expected findings side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventmesh_health.analysis import Thresholds, analyse
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.rulecases import cases, described_findings, load_case, states


@pytest.mark.parametrize("path", cases(), ids=lambda p: p.parent.name)
def test_rule_fixture(path: Path) -> None:
    case = load_case(path)
    thresholds = Thresholds(
        **{
            {"stuckDeletion": "stuck_deletion", "progressDeadline": "progress_deadline"}[k]: v
            for k, v in case.thresholds.items()
        }
    )
    collected = frozenset(k.key for k in KYMA_1.kinds) if case.collected_all else None
    report = analyse(Snapshot(case.objects, case.now, collected), thresholds=thresholds)
    assert described_findings(report) == sorted(case.expect["findings"] or []), case.why
    assert report.health.value == case.expect["health"], case.why
    assert report.healthy is (case.expect["health"] == "Healthy")
    if "states" in case.expect:
        assert states(report) == case.expect["states"], case.why


def test_there_are_fixtures_for_every_field_failure() -> None:
    names = {p.parent.name for p in cases()}
    # WIRING.md's "Failures seen in the field" and the seed's control-plane errors.
    for required in (
        "kafka-quota-topic-failed",
        "adapter-revision-missing",
        "trigger-subscription-stuck-in-deletion",
        "brokersub-not-ready",
        "controller-crashloop",
        "webhook-no-endpoints",
        "service-instance-provision-failed",
        "application-install-failed",
        "missing-brokersub",
        "missing-injection-label",
    ):
        assert required in names
