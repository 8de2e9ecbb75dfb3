"""The Prometheus metrics of `serve`, read back the way Prometheus reads them: the text
exposition parsed by prometheus-client's own parser."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from eventmesh_health.analysis import analyse
from eventmesh_health.model import (
    ApplicationReport,
    Finding,
    FlowReport,
    Health,
    MeshReport,
    NamespaceReport,
    ObjectRef,
    Severity,
    SystemReport,
)
from eventmesh_health.serve.metrics import (
    ANALYSIS_BUCKETS,
    HEALTH_VALUES,
    MAX_REASONS,
    OTHER_REASON,
    Metrics,
)
from eventmesh_health.sources.files import load_snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1

EXAMPLES = Path(__file__).parent.parent / "examples"
TAKEN_AT = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
CHANGED = datetime(2020, 6, 15, 9, 41, 9, tzinfo=UTC)

# name (as the parser names the family) -> (type, label names)
EXPECTED = {
    "eventmesh_mesh_healthy": ("gauge", set()),
    "eventmesh_system_health": ("gauge", {"health"}),
    "eventmesh_application_health": ("gauge", {"application", "health"}),
    "eventmesh_application_state": ("gauge", {"application"}),
    "eventmesh_namespace_health": ("gauge", {"application", "namespace", "health"}),
    "eventmesh_flow_health": ("gauge", {"flow", "kind", "namespace", "name", "health"}),
    "eventmesh_findings": ("gauge", {"scope", "reason", "root_cause"}),
    "eventmesh_system_root_cause": (
        "gauge", {"health", "reason", "cause_kind", "cause_namespace", "cause_name"}),
    "eventmesh_application_root_cause": (
        "gauge", {"application", "reason", "cause_kind", "cause_namespace", "cause_name"}),
    "eventmesh_flow_root_cause": (
        "gauge", {"flow", "kind", "namespace", "name", "reason", "cause_kind",
                  "cause_namespace", "cause_name"}),
    "eventmesh_application_last_transition_timestamp_seconds": ("gauge", {"application"}),
    "eventmesh_analysis_duration_seconds": ("histogram", set()),
    "eventmesh_cache_synced": ("gauge", set()),
    "eventmesh_cache_objects": ("gauge", {"kind"}),
    "eventmesh_kind_available": ("gauge", {"kind"}),
    "eventmesh_watch_restarts": ("counter", {"kind"}),
    "eventmesh_relists": ("counter", {"kind"}),
    "eventmesh_api_writes": ("counter", {"resource", "verb"}),
    "eventmesh_is_leader": ("gauge", set()),
}


def example(name: str) -> MeshReport:
    return analyse(load_snapshot(EXAMPLES / name, KYMA_1, now=TAKEN_AT), KYMA_1)


@pytest.fixture(scope="module")
def broken() -> MeshReport:
    return example("kafka-quota-reached")


def families(metrics: Metrics) -> dict[str, list[Sample]]:
    text = metrics.exposition().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def values(samples: list[Sample], **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples whose labels include `match`, keyed by their other labels."""
    return {
        tuple(sorted((k, v) for k, v in s.labels.items() if k not in match)): s.value
        for s in samples
        if all(s.labels.get(k) == v for k, v in match.items())
    }


def state_set(samples: list[Sample], **match: str) -> dict[str, float]:
    return {s.labels["health"]: s.value for s in samples
            if all(s.labels.get(k) == v for k, v in match.items())}


def finding(reason: str, *, root: bool = True) -> Finding:
    return Finding(
        severity=Severity.ERROR, health=Health.UNHEALTHY,
        object=ObjectRef(api_version="v1", kind="Pod", namespace="x", name="p"),
        reason=reason, message="free text: never a label", root_cause=root,
    )


def system_only(*findings: Finding) -> MeshReport:
    return MeshReport(
        healthy=not findings, health=Health.UNHEALTHY if findings else Health.HEALTHY,
        system=SystemReport(health=Health.UNHEALTHY if findings else Health.HEALTHY,
                            findings=list(findings)),
    )


def test_names_types_and_label_sets(broken: MeshReport) -> None:
    metrics = Metrics()
    broken = broken.model_copy(update={"flows": [FlowReport(
        flow="broker", kind="Broker", namespace="prod", name="default", health=Health.UNKNOWN)]})
    metrics.update_report(broken, {"commerce-mock": CHANGED})
    metrics.observe_analysis(0.02)
    trigger = "Trigger.eventing.knative.dev"
    metrics.set_cache(True, {trigger: 4}, {trigger: True})
    metrics.inc_watch_restart(trigger)
    metrics.inc_relist(trigger)
    metrics.inc_write("events", "create")
    metrics.set_leader(True)
    text = metrics.exposition().decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(parsed) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        family = parsed[name]
        assert family.type == kind, name
        assert family.documentation, name
        for sample in family.samples:
            own = set(sample.labels) - ({"le"} if kind == "histogram" else set())
            assert own == labels, (name, sample)
            if kind == "counter":
                assert sample.name == f"{name}_total"
    # Base units, no `_created` series, no free text in labels.
    assert "_created" not in text
    assert "free text" not in text and "quota" not in text
    assert all(line.startswith(("# HELP eventmesh_", "# TYPE eventmesh_", "eventmesh_"))
               for line in text.splitlines())


def test_state_sets_of_the_broken_example(broken: MeshReport) -> None:
    metrics = Metrics()
    metrics.update_report(broken, {"commerce-mock": CHANGED})
    got = families(metrics)

    assert values(got["eventmesh_mesh_healthy"]) == {(): 0.0}
    assert state_set(got["eventmesh_system_health"]) == {
        "Healthy": 1, "Progressing": 0, "Unknown": 0, "Degraded": 0, "Unhealthy": 0}
    apps = got["eventmesh_application_health"]
    for app, health in (("commerce-mock", "Unhealthy"), ("crm-legacy", "Healthy"),
                        ("marketing", "Healthy")):
        assert state_set(apps, application=app) == {
            value: float(value == health) for value in HEALTH_VALUES}
    assert len(apps) == 3 * 5
    assert values(got["eventmesh_application_state"]) == {
        (("application", "commerce-mock"),): 4.0,
        (("application", "crm-legacy"),): 1.0,
        (("application", "marketing"),): 4.0,
    }
    namespaces = got["eventmesh_namespace_health"]
    assert {(s.labels["application"], s.labels["namespace"]) for s in namespaces} == {
        ("commerce-mock", "prod"), ("commerce-mock", "stage"), ("marketing", "stage")}
    assert state_set(namespaces, application="commerce-mock", namespace="stage")[
        "Unhealthy"] == 1
    assert state_set(namespaces, application="marketing", namespace="stage")["Healthy"] == 1
    for app in {s.labels["application"] for s in namespaces}:
        for ns in {s.labels["namespace"] for s in namespaces
                   if s.labels["application"] == app}:
            assert sum(state_set(namespaces, application=app, namespace=ns).values()) == 1

    # One root cause (TopicFailed) on the application; its symptoms where they occur.
    assert values(got["eventmesh_findings"]) == {
        (("reason", "TopicFailed"), ("root_cause", "true"), ("scope", "application")): 1,
        (("reason", "EmptyHostname"), ("root_cause", "false"), ("scope", "application")): 1,
        (("reason", "SinkNotFound"), ("root_cause", "false"), ("scope", "application")): 1,
        (("reason", "SubscriptionNotMarkedReadyByChannel"), ("root_cause", "false"),
         ("scope", "namespace")): 2,
    }
    assert values(got["eventmesh_application_last_transition_timestamp_seconds"]) == {
        (("application", "commerce-mock"),): CHANGED.timestamp()}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir()
                                          if p.is_dir() and p.name != "knative-v1"))
def test_every_example_is_mirrored(name: str) -> None:
    report = example(name)
    metrics = Metrics()
    metrics.update_report(report, {})
    got = families(metrics)
    assert values(got["eventmesh_mesh_healthy"]) == {(): float(report.healthy)}
    assert state_set(got["eventmesh_system_health"])[report.system.health.value] == 1
    expected = Counter[tuple[str, str, str]]()
    for f in report.system.findings:
        expected["system", f.reason, str(f.root_cause).lower()] += 1
    for app in report.applications:
        assert state_set(got["eventmesh_application_health"], application=app.name) == {
            value: float(value == app.health.value) for value in HEALTH_VALUES}
        for f in app.findings:
            expected["application", f.reason, str(f.root_cause).lower()] += 1
        for ns in app.namespaces:
            assert state_set(got["eventmesh_namespace_health"], application=app.name,
                             namespace=ns.name)[ns.health.value] == 1
            for f in ns.findings:
                expected["namespace", f.reason, str(f.root_cause).lower()] += 1
    found = {(s.labels["scope"], s.labels["reason"], s.labels["root_cause"]): s.value
             for s in got["eventmesh_findings"]}
    assert found == expected
    assert got["eventmesh_application_last_transition_timestamp_seconds"] == []


def test_vanished_applications_and_namespaces_lose_their_series(broken: MeshReport) -> None:
    metrics = Metrics()
    metrics.update_report(broken, {"commerce-mock": CHANGED, "marketing": CHANGED})
    commerce = broken.applications[0]
    assert commerce.name == "commerce-mock"
    # marketing and crm-legacy are gone; commerce-mock lost its stage namespace.
    smaller = broken.model_copy(update={"applications": [
        commerce.model_copy(update={"namespaces": commerce.namespaces[:1]})]})
    metrics.update_report(smaller, {"commerce-mock": CHANGED, "marketing": CHANGED})
    got = families(metrics)
    for name in ("eventmesh_application_health", "eventmesh_application_state",
                 "eventmesh_application_last_transition_timestamp_seconds"):
        assert {s.labels["application"] for s in got[name]} == {"commerce-mock"}, name
    assert {(s.labels["application"], s.labels["namespace"])
            for s in got["eventmesh_namespace_health"]} == {("commerce-mock", "prod")}
    assert len(got["eventmesh_namespace_health"]) == 5

    metrics.update_report(system_only(), {})
    got = families(metrics)
    assert got["eventmesh_application_health"] == []
    assert got["eventmesh_namespace_health"] == []
    assert values(got["eventmesh_mesh_healthy"]) == {(): 1.0}


def test_findings_that_go_away_drop_to_zero(broken: MeshReport) -> None:
    metrics = Metrics()
    metrics.update_report(broken, {})
    metrics.update_report(example("healthy-mesh"), {})
    findings = values(families(metrics)["eventmesh_findings"])
    assert len(findings) == 4
    assert set(findings.values()) == {0.0}


def test_reasons_are_capped_codes() -> None:
    metrics = Metrics()
    odd = ["has space", "with-dash", "1Leading", "Ünicode", "", "A" * 64, 'Quote"', "x\ny"]
    metrics.update_report(system_only(finding("NotFound"), *(finding(r) for r in odd)), {})
    got = values(families(metrics)["eventmesh_findings"], scope="system", root_cause="true")
    assert got == {(("reason", "NotFound"),): 1, (("reason", OTHER_REASON),): len(odd)}

    # Only the first MAX_REASONS distinct codes get a label of their own, for good.
    codes = [f"Reason{i}" for i in range(MAX_REASONS + 50)]
    metrics.update_report(system_only(*(finding(c) for c in codes)), {})
    got = values(families(metrics)["eventmesh_findings"], scope="system", root_cause="true")
    labels = {dict(k)["reason"] for k in got}
    assert len(labels) == MAX_REASONS + 1  # NotFound, 99 codes, Other
    assert "NotFound" in labels and OTHER_REASON in labels
    assert got[(("reason", OTHER_REASON),)] == 51  # Reason99 ... Reason149
    assert got[(("reason", "NotFound"),)] == 0  # known, gone: 0
    metrics.update_report(system_only(finding("Reason0"), finding("Brandnew")), {})
    got = values(families(metrics)["eventmesh_findings"], scope="system", root_cause="true")
    assert got[(("reason", "Reason0"),)] == 1
    assert got[(("reason", OTHER_REASON),)] == 1
    assert (("reason", "Brandnew"),) not in got


def test_reason_label_count_stays_bounded_over_many_reports() -> None:
    metrics = Metrics(reason_limit=5)
    for i in range(50):
        metrics.update_report(system_only(finding(f"Churn{i}", root=i % 2 == 0)), {})
    samples = families(metrics)["eventmesh_findings"]
    assert {s.labels["reason"] for s in samples} == {
        "Churn0", "Churn1", "Churn2", "Churn3", "Churn4", OTHER_REASON}
    assert len(samples) <= 3 * 6 * 2


def test_run_metrics() -> None:
    metrics = Metrics(kinds=["Broker.eventing.knative.dev", "Pod"],
                      writes=[("events", "create"), ("eventmeshhealths", "apply")])
    got = families(metrics)
    # Before anything happened: zeros, not absent series; no report-derived series yet.
    assert values(got["eventmesh_watch_restarts"]) == {
        (("kind", "Broker.eventing.knative.dev"),): 0, (("kind", "Pod"),): 0}
    assert values(got["eventmesh_relists"]) == values(got["eventmesh_watch_restarts"])
    assert values(got["eventmesh_api_writes"]) == {
        (("resource", "events"), ("verb", "create")): 0,
        (("resource", "eventmeshhealths"), ("verb", "apply")): 0}
    assert values(got["eventmesh_cache_synced"]) == {(): 0}
    assert values(got["eventmesh_is_leader"]) == {(): 0}
    assert "eventmesh_mesh_healthy" not in got

    for seconds in (0.0005, 0.001, 0.003, 0.2, 7.0, 30.0):
        metrics.observe_analysis(seconds)
    metrics.inc_watch_restart("Pod")
    metrics.inc_watch_restart("Pod")
    metrics.inc_relist("Trigger.eventing.knative.dev")
    metrics.inc_write("events", "create")
    metrics.set_cache(True, {"Pod": 12, "Broker.eventing.knative.dev": 2},
                      {"Pod": True, "Broker.eventing.knative.dev": True,
                       "KafkaChannel.knativekafka.kyma-project.io": False})
    metrics.set_leader(True)
    got = families(metrics)
    buckets = {s.labels["le"]: s.value for s in got["eventmesh_analysis_duration_seconds"]
               if s.name.endswith("_bucket")}
    assert list(buckets) == [*(str(b) for b in ANALYSIS_BUCKETS), "+Inf"]
    assert buckets["0.001"] == 2 and buckets["0.005"] == 3 and buckets["0.25"] == 4
    assert buckets["10.0"] == 5 and buckets["+Inf"] == 6
    sums = {s.name: s.value for s in got["eventmesh_analysis_duration_seconds"]
            if not s.name.endswith("_bucket")}
    assert sums["eventmesh_analysis_duration_seconds_count"] == 6
    assert sums["eventmesh_analysis_duration_seconds_sum"] == pytest.approx(37.2045)
    assert values(got["eventmesh_watch_restarts"])[(("kind", "Pod"),)] == 2
    assert values(got["eventmesh_relists"])[(("kind", "Trigger.eventing.knative.dev"),)] == 1
    assert values(got["eventmesh_api_writes"])[(("resource", "events"), ("verb", "create"))] == 1
    assert values(got["eventmesh_cache_synced"]) == {(): 1}
    assert values(got["eventmesh_is_leader"]) == {(): 1}
    assert values(got["eventmesh_cache_objects"]) == {
        (("kind", "Pod"),): 12, (("kind", "Broker.eventing.knative.dev"),): 2}
    assert values(got["eventmesh_kind_available"])[
        (("kind", "KafkaChannel.knativekafka.kyma-project.io"),)] == 0

    # A kind no longer cached loses its series; counters keep counting.
    metrics.set_cache(False, {"Pod": 3}, {"Pod": True})
    metrics.set_leader(False)
    got = families(metrics)
    assert values(got["eventmesh_cache_objects"]) == {(("kind", "Pod"),): 3}
    assert values(got["eventmesh_kind_available"]) == {(("kind", "Pod"),): 1}
    assert values(got["eventmesh_cache_synced"]) == {(): 0}
    assert values(got["eventmesh_is_leader"]) == {(): 0}
    assert values(got["eventmesh_watch_restarts"])[(("kind", "Pod"),)] == 2


def test_exposition_is_what_prometheus_client_renders_of_the_registry(
    broken: MeshReport,
) -> None:
    """`exposition()` renders the report's series itself (fast, once per report): byte for
    byte what `generate_latest` makes of the registry, including label values that need
    escaping, an empty mesh, and before the first report."""
    metrics = Metrics(kinds=["Pod"])
    assert metrics.exposition() == generate_latest(metrics.registry)
    metrics.observe_analysis(0.5)
    metrics.update_report(broken, {"commerce-mock": CHANGED, "marketing": TAKEN_AT})
    assert metrics.exposition() == generate_latest(metrics.registry)
    assert metrics.exposition() == generate_latest(metrics.registry)  # cached
    app = broken.applications[0]
    weird = app.model_copy(update={"name": 'we"ird\\app\nx%s', "namespaces": [
        app.namespaces[0].model_copy(update={"name": "n%s\\"}), *app.namespaces[1:]]})
    metrics.update_report(broken.model_copy(update={"applications": [weird]}), {})
    text = metrics.exposition()
    assert text == generate_latest(metrics.registry)
    assert 'application="we\\"ird\\\\app\\nx%s"' in text.decode()
    metrics.update_report(system_only(), {})
    assert metrics.exposition() == generate_latest(metrics.registry)


def test_each_metrics_object_has_its_own_registry(broken: MeshReport) -> None:
    one, other = Metrics(), Metrics()
    one.update_report(broken, {})
    one.inc_relist("Pod")
    assert "eventmesh_application_health" not in families(other)
    assert values(families(other)["eventmesh_relists"]) == {}
    assert not [m for m in REGISTRY.collect() if m.name.startswith("eventmesh_")]


def test_root_causes_name_what_is_broken(broken: MeshReport) -> None:
    """One series per broken application: its first root cause (as the EventMeshHealth
    `rootCause` column), valued with how many it has; none for a Healthy one."""
    from eventmesh_health.serve.writer import root_causes
    metrics = Metrics()
    metrics.update_report(broken, {})
    got = families(metrics)["eventmesh_application_root_cause"]
    app = next(a for a in broken.applications if a.name == "commerce-mock")
    first = root_causes(app, broken)[0]
    assert [(s.labels, s.value) for s in got] == [({
        "application": "commerce-mock", "reason": first.reason,
        "cause_kind": first.object.kind, "cause_name": first.object.name or "",
        "cause_namespace": first.object.namespace or "",
    }, float(len(root_causes(app, broken))))]
    assert first.reason == "TopicFailed"
    assert families(metrics)["eventmesh_system_root_cause"] == []


def test_system_and_flow_root_causes() -> None:
    down = Finding(
        severity=Severity.ERROR, health=Health.UNHEALTHY,
        object=ObjectRef(api_version="apps/v1", kind="Deployment",
                         namespace="knative-eventing", name="imc-dispatcher"),
        reason="Unavailable", message="0 of 1 replicas", root_cause=True)
    symptom = Finding(
        severity=Severity.ERROR, health=Health.UNHEALTHY,
        object=ObjectRef(api_version="eventing.knative.dev/v1", kind="Broker",
                         namespace="prod", name="default"),
        reason="DispatcherDown", message="...", root_cause=False, caused_by=down.object)
    report = system_only(down, down).model_copy(update={"flows": [
        FlowReport(flow="broker", kind="Broker", namespace="prod", name="default",
                   health=Health.UNHEALTHY, findings=[symptom]),
        FlowReport(flow="channel", kind="InMemoryChannel", namespace="prod", name="c",
                   health=Health.HEALTHY)]})
    metrics = Metrics()
    metrics.update_report(report, {})
    got = families(metrics)
    assert [(s.labels, s.value) for s in got["eventmesh_system_root_cause"]] == [({
        "cause_kind": "Deployment", "cause_name": "imc-dispatcher",
        "cause_namespace": "knative-eventing", "health": "Unhealthy",
        "reason": "Unavailable"}, 1.0)]
    assert [(s.labels, s.value) for s in got["eventmesh_flow_root_cause"]] == [({
        "flow": "broker", "kind": "Broker", "namespace": "prod", "name": "default",
        "cause_kind": "Deployment", "cause_name": "imc-dispatcher",
        "cause_namespace": "knative-eventing", "reason": "Unavailable"}, 1.0)]
    # Mended: the series go.
    metrics.update_report(system_only(), {})
    got = families(metrics)
    assert got["eventmesh_system_root_cause"] == [] and got["eventmesh_flow_root_cause"] == []


def test_reports_sharing_application_objects_give_the_series_of_copies() -> None:
    """serve's analysis hands on the same report object for an application that did not
    change, and the metrics reuse what they made of it: each series must still be what the
    same reports give when every object is new (a copy), step after step — including an
    application whose root cause is a system component that changed meanwhile."""
    controller = ObjectRef(api_version="apps/v1", kind="Deployment",
                           namespace="kyma-system", name="controller")

    def system(reason: str) -> list[Finding]:
        return [Finding(severity=Severity.ERROR, health=Health.UNHEALTHY, object=controller,
                        reason=reason, message="m", root_cause=True)]

    def app(name: str, *, reason: str = "", caused_by: ObjectRef | None = None
            ) -> ApplicationReport:
        findings = [finding(reason, root=caused_by is None).model_copy(
            update={"caused_by": caused_by})] if reason else []
        health = Health.UNHEALTHY if reason else Health.HEALTHY
        return ApplicationReport(
            name=name, health=health, state=3 if reason else 4, findings=findings,
            namespaces=[NamespaceReport(name="prod", health=health, state=4,
                                        findings=findings)])

    def mesh(system_reason: str, *apps: ApplicationReport) -> MeshReport:
        return MeshReport(healthy=False, health=Health.UNHEALTHY,
                          system=SystemReport(health=Health.UNHEALTHY,
                                              findings=system(system_reason)),
                          applications=list(apps))

    own = app("a-own", reason="TopicFailed")
    elsewhere = app("b-elsewhere", reason="NotReady", caused_by=controller)
    healthy = app("c-healthy")
    later = datetime(2020, 6, 15, 10, 5, tzinfo=UTC)
    steps = [
        (mesh("Unavailable", own, elsewhere, healthy), {"c-healthy": CHANGED}),
        (mesh("CrashLoopBackOff", own, elsewhere, healthy), {"c-healthy": CHANGED}),
        (mesh("CrashLoopBackOff", own, elsewhere, healthy), {"c-healthy": later}),
        (mesh("CrashLoopBackOff", app("a-own", reason="QuotaExceeded"), elsewhere),
         {"c-healthy": later}),
    ]
    shared, copied = Metrics(), Metrics()
    causes = []
    for report, transitions in steps:
        shared.update_report(report, transitions)
        copied.update_report(report.model_copy(deep=True), dict(transitions))
        assert shared.exposition() == copied.exposition()
        causes.append(values(families(shared)["eventmesh_application_root_cause"],
                             application="b-elsewhere"))
    # The steps do change what the shared objects' series must say.
    assert causes[0] != causes[1]
    assert values(families(shared)["eventmesh_application_root_cause"],
                  application="a-own") == {(("cause_kind", "Pod"), ("cause_name", "p"),
                                            ("cause_namespace", "x"),
                                            ("reason", "QuotaExceeded")): 1.0}
