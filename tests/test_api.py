"""The REST API of `serve`, over real HTTP: uvicorn on a loopback port, httpx as the client.

The state holds the report the real analysis makes of a bundled example, so each answer
is compared with the corresponding part of `report.to_json_dict()` (= `check -o json`).
Schemathesis then checks every answer against the API's own OpenAPI document.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventmesh_health.analysis import Analysis, analyse_graph
from eventmesh_health.model import FlowReport, Health, MeshReport
from eventmesh_health.serve.api import create_app, embedded_server
from eventmesh_health.serve.metrics import Metrics
from eventmesh_health.serve.state import HealthState
from eventmesh_health.serve.views import application_tree
from eventmesh_health.sources.files import load_snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1

EXAMPLE = Path(__file__).parent.parent / "examples" / "kafka-quota-reached"
TAKEN_AT = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
CHANGED = datetime(2020, 6, 15, 9, 41, 9, tzinfo=UTC)
API_PATHS = [
    "/api/v1/health",
    "/api/v1/applications",
    "/api/v1/applications/commerce-mock",
    "/api/v1/applications/commerce-mock/namespaces/prod",
]
ALL_PATHS = [*API_PATHS, "/healthz", "/readyz", "/metrics", "/openapi.json"]


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return analyse_graph(load_snapshot(EXAMPLE, KYMA_1, now=TAKEN_AT), KYMA_1)


@pytest.fixture(scope="module")
def report(analysis: Analysis) -> MeshReport:
    return analysis.report


def ready_state(report: MeshReport, analysis: Analysis | None = None) -> HealthState:
    state = HealthState(
        report=report,
        transitions={"commerce-mock": CHANGED},  # the others: not recorded
        caches_synced=True,
        leader_election_running=True,
    )
    state.history.record("commerce-mock", CHANGED, Health.UNHEALTHY, Health.HEALTHY,
                         "KafkaChannel kyma-integration/commerce-mock: TopicFailed")
    if analysis is not None:
        units = {unit.name: unit for unit in analysis.graph.apps}
        state.explain = lambda app: application_tree(units.get(app.name), app)
        # A flow of its own (no unit): an empty chain.
        state.explain_flow = lambda flow: {
            "flow": flow.flow, "kind": flow.kind, "namespace": flow.namespace,
            "name": flow.name, "health": flow.health.value, "links": [], "system": []}
    return state


@asynccontextmanager
async def serving(state: HealthState, metrics: Metrics | None = None) -> AsyncIterator[str]:
    """The app under uvicorn in this event loop, as `serve` runs it; yields its base URL."""
    server = embedded_server(
        create_app(state, metrics or Metrics()), host="127.0.0.1", port=0, log_level="warning"
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
                raise AssertionError("server stopped before it started")
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def client(state: HealthState, metrics: Metrics | None = None,
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(state, metrics) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


def assert_error(response: httpx.Response, status: int, error: str, *mentions: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == error
    for text in mentions:
        assert text in body["detail"]
    assert "Traceback" not in response.text


async def test_each_endpoint_is_its_part_of_the_check_json(report: MeshReport) -> None:
    expected: dict[str, Any] = report.to_json_dict()
    async with client(ready_state(report)) as http:
        mesh = await http.get("/api/v1/health")
        assert mesh.status_code == 200
        assert mesh.headers["content-type"] == "application/json"
        assert mesh.json() == expected

        listing = await http.get("/api/v1/applications")
        assert listing.json() == {"applications": expected["applications"]}

        assert len(expected["applications"]) == 3
        for app in expected["applications"]:
            one = (await http.get(f"/api/v1/applications/{app['name']}")).json()
            when = "2020-06-15T09:41:09Z" if app["name"] == "commerce-mock" else None
            assert one == {**app, "lastTransitionTime": when}
            for ns in app["namespaces"]:
                got = await http.get(f"/api/v1/applications/{app['name']}/namespaces/{ns['name']}")
                assert got.status_code == 200
                assert got.json() == ns


async def test_the_mesh_answer_equals_check_output_json(report: MeshReport) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventmesh_health", "check", "-o", "json", "--snapshot",
        str(EXAMPLE), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err  # the example is broken
    async with client(ready_state(report)) as http:
        assert (await http.get("/api/v1/health")).json() == json.loads(out)


async def test_json_field_names_are_the_camel_case_aliases(report: MeshReport) -> None:
    async with client(ready_state(report)) as http:
        mesh = (await http.get("/api/v1/health")).json()
        app = (await http.get("/api/v1/applications/commerce-mock")).json()
    assert set(mesh["source"]) == {"takenAt", "objects", "skippedKinds", "profile"}
    assert mesh["source"]["profile"] == "kyma-1"
    assert mesh["source"]["takenAt"] == "2020-06-15T10:00:00Z"
    finding = app["findings"][1]
    assert set(finding) == {
        "severity", "health", "object", "reason", "message", "rootCause", "causedBy"}
    assert finding["rootCause"] is False
    assert finding["causedBy"]["apiVersion"] == "knativekafka.kyma-project.io/v1alpha1"
    assert set(finding["object"]) == {"apiVersion", "kind", "namespace", "name"}
    assert "lastTransitionTime" in app
    healths = {mesh["health"], *(a["health"] for a in mesh["applications"])}
    assert healths == {"Unhealthy", "Healthy"}


async def test_unknown_names_are_404_naming_them(report: MeshReport) -> None:
    async with client(ready_state(report)) as http:
        assert_error(await http.get("/api/v1/applications/no-such-app"), 404, "NotFound",
                     '"no-such-app"')
        assert_error(await http.get("/api/v1/applications/no-such-app/namespaces/prod"),
                     404, "NotFound", '"no-such-app"')
        # crm-legacy exists but is bound to no namespace; marketing has stage, not prod.
        assert_error(await http.get("/api/v1/applications/crm-legacy/namespaces/prod"),
                     404, "NotFound", '"crm-legacy"', '"prod"')
        assert_error(await http.get("/api/v1/applications/marketing/namespaces/prod"),
                     404, "NotFound", '"prod"')
        assert_error(await http.get("/api/v1/nothing-here"), 404, "NotFound", "/api/v1/nothing")
        assert_error(await http.get("/docs"), 404, "NotFound")
        assert_error(await http.get("/redoc"), 404, "NotFound")


async def test_503_until_the_first_report_and_readyz_follows_the_state(
    report: MeshReport,
) -> None:
    state = HealthState()
    metrics = Metrics()
    async with client(state, metrics) as http:
        for path in API_PATHS:
            response = await http.get(path)
            assert_error(response, 503, "NotReady", "caches not yet synced")
            assert response.headers["retry-after"] == "5"
        # Before any report an invalid name is still 422, an unknown path still 404.
        assert_error(await http.get("/api/v1/applications/NO"), 422, "InvalidName")
        assert (await http.get("/healthz")).text == "ok"
        not_ready = await http.get("/readyz")
        assert (not_ready.status_code, not_ready.text) == (503, "caches not yet synced")
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/openapi.json")).status_code == 200

        state.caches_synced = True
        not_ready = await http.get("/readyz")
        assert (not_ready.status_code, not_ready.text) == (503, "leader election not running")
        assert_error(await http.get("/api/v1/health"), 503, "NotReady",
                     "first analysis not yet done")

        state.leader_election_running = True
        state.report = report
        metrics.update_report(report, state.transitions)
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.text) == (200, "ok")
        for path in API_PATHS:
            assert (await http.get(path)).status_code == 200

        state.caches_synced = False  # watches lost: not ready, the last report still served
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/api/v1/health")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


async def test_a_new_report_replaces_the_served_one(report: MeshReport) -> None:
    state = ready_state(report)
    async with client(state) as http:
        assert len((await http.get("/api/v1/applications")).json()["applications"]) == 3
        assert (await http.get("/api/v1/applications/marketing")).status_code == 200
        fewer = report.model_copy(update={"applications": report.applications[:1]})
        state.report = fewer
        assert (await http.get("/api/v1/health")).json() == fewer.to_json_dict()
        assert len((await http.get("/api/v1/applications")).json()["applications"]) == 1
        assert (await http.get("/api/v1/applications/marketing")).status_code == 404


async def test_read_only_get_and_head(report: MeshReport) -> None:
    async with client(ready_state(report)) as http:
        for path in ALL_PATHS:
            for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
                response = await http.request(method, path, json={"x": 1})
                assert_error(response, 405, "MethodNotAllowed", method)
                assert response.headers["allow"] == "GET, HEAD"
            get = await http.get(path)
            head = await http.head(path)
            assert head.status_code == get.status_code == 200
            assert head.content == b""
            if path != "/metrics":  # the exposition's histogram sum may differ between scrapes
                assert head.headers["content-length"] == get.headers["content-length"]
            assert head.headers["content-type"] == get.headers["content-type"]
        # No endpoint takes a body: a GET carrying one is refused before routing.
        response = await http.request("GET", "/api/v1/health", content=b'{"a": 1}',
                                      headers={"content-type": "application/json"})
        assert_error(response, 400, "BodyNotAccepted")
        head = await http.request("HEAD", "/api/v1/health", content=b"abc")
        assert head.status_code == 400
        assert head.headers["content-type"] == "application/json"


FORGED = [
    ("/api/v1/applications/%2e%2e", 422),
    ("/api/v1/applications/%2e", 422),
    ("/api/v1/applications/..%2f..%2fetc%2fpasswd", 404),  # decoded slashes: no such route
    ("/api/v1/applications/commerce-mock%2fnamespaces%2fprod", 200),  # = the namespace URL
    ("/api/v1/applications/" + "a" * 300, 422),
    ("/api/v1/applications/" + "a" * 254, 422),
    ("/api/v1/applications/commerce-mock/namespaces/" + "b" * 64, 422),
    ("/api/v1/applications/commerce-mock/namespaces/a.b", 422),  # a label has no dots
    ("/api/v1/applications/Commerce-Mock", 422),
    ("/api/v1/applications/-leading-dash", 422),
    ("/api/v1/applications/%C3%BCmlaut", 422),
    ("/api/v1/applications/%F0%9F%92%A5", 422),
    ("/api/v1/applications/%FF%FE", 422),  # not UTF-8
    ("/api/v1/applications/%00", 422),
    ("/api/v1/applications/a%20b", 422),
    ("/api/v1/applications/a%0d%0aX-Injected:%201", 422),
    ("/api/v1/applications/commerce-mock?name=../../x", 200),  # query strings are ignored
    ("/api/v1/applications/commerce-mock/namespaces/prod/extra", 404),
    ("/api/v1//applications", 404),
    ("/api/v2/health", 404),
    ("/api/v1/health/", 404),  # no redirect (its Location would echo the Host header)
    ("/api/v1/applications/", 404),
]


@pytest.mark.parametrize(("path", "status"), FORGED, ids=[p[:60] for p, _ in FORGED])
async def test_forged_and_oversized_paths_get_a_json_4xx(
    report: MeshReport, path: str, status: int
) -> None:
    async with client(ready_state(report)) as http:
        # The raw path goes out as written: no client-side normalisation of `..` or `%2f`.
        request = http.build_request("GET", "/")
        request.url = request.url.copy_with(raw_path=path.encode("ascii"))
        response = await http.send(request)
    if status == 200:
        assert response.status_code == 200
        return
    assert_error(response, status, "InvalidName" if status == 422 else "NotFound")
    assert "x-injected" not in response.headers
    assert len(response.json()["detail"]) < 400  # a long name is cut short in the message


async def test_an_unexpected_failure_is_a_json_500_without_traceback(
    report: MeshReport,
) -> None:
    state = ready_state(report)
    state.transitions = {"commerce-mock": "not a time"}  # type: ignore[dict-item]
    async with client(state) as http:
        response = await http.get("/api/v1/applications/commerce-mock")
        assert_error(response, 500, "InternalError")
        assert "ValidationError" not in response.text
        assert (await http.get("/healthz")).status_code == 200  # still serving


async def test_the_embedded_server_leaves_signals_to_the_caller(report: MeshReport) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with client(ready_state(report)) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_valid_name_that_is_253_characters_long_is_just_not_found(
    report: MeshReport,
) -> None:
    name = ".".join(["a" * 63] * 4)[:253]
    assert len(name) == 253
    async with client(ready_state(report)) as http:
        assert_error(await http.get(f"/api/v1/applications/{name}"), 404, "NotFound")


async def test_metrics_endpoint_serves_the_registry(report: MeshReport) -> None:
    metrics = Metrics()
    state = ready_state(report)
    metrics.update_report(report, state.transitions)
    async with client(state, metrics) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.content == metrics.exposition()
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    unhealthy = [s for s in families["eventmesh_application_health"].samples
                 if s.labels["health"] == "Unhealthy" and s.value == 1]
    assert [s.labels["application"] for s in unhealthy] == ["commerce-mock"]


async def test_openapi_documents_the_report_models(report: MeshReport) -> None:
    async with client(ready_state(report)) as http:
        doc = (await http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert {"rootCause", "causedBy", "reason", "object"} <= set(schemas["Finding"]["properties"])
    assert "apiVersion" in schemas["ObjectRef"]["properties"]
    assert {"takenAt", "skippedKinds", "profile"} <= set(schemas["SourceInfo"]["properties"])
    assert "lastTransitionTime" in schemas["ApplicationDetail"]["properties"]
    assert schemas["Health"]["enum"] == [
        "Healthy", "Progressing", "Unknown", "Degraded", "Unhealthy"]
    assert set(schemas["ErrorBody"]["properties"]) == {"error", "detail"}
    for path, operations in doc["paths"].items():
        assert set(operations) == {"get"}, path
    one = doc["paths"]["/api/v1/applications/{name}"]["get"]
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApplicationDetail"}
    assert one["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}
    assert one["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}
    mesh = doc["paths"]["/api/v1/health"]["get"]["responses"]
    assert mesh["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MeshReport"}
    assert set(mesh) == {"200", "503"}


SCHEMATHESIS_CONFIG = """\
[dictionaries.applications]
values = {applications}

[dictionaries.namespaces]
values = {namespaces}

[dictionaries.kinds]
values = ["Broker", "Channel"]

# Half of the generated names are real ones, so the 200 answers are checked too.
[parameters]
"path.name" = {{ dictionary = "applications", probability = 0.5 }}
"path.namespace" = {{ dictionary = "namespaces", probability = 0.5 }}
"path.kind" = {{ dictionary = "kinds", probability = 0.5 }}
"""


async def schemathesis(url: str, workdir: Path, examples: int, *extra: str) -> tuple[int, str]:
    workdir.mkdir()
    (workdir / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG.format(
        applications=json.dumps(["commerce-mock", "crm-legacy", "marketing", "default"]),
        namespaces=json.dumps(["prod", "stage"]),
    ))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(workdir / "schemathesis.toml"),
        "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(examples),
        "--seed", "20200615", "--workers", "4", "--request-timeout", "10",
        "--max-failures", "5", *extra,
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(workdir)},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_every_answer_conforms_to_the_openapi_document(
    report: MeshReport, analysis: Analysis, tmp_path: Path
) -> None:
    """Schemathesis (coverage, fuzzing and stateful phases, every check) against the live
    server, once with a report (no 5xx at all) and once before the first report (the
    documented 503s; every other check still applies). About 20-40 s (CPU bound)."""
    # With a flow too (knative-v1's unit), so /api/v1/flows/... answers 200 as well.
    report = report.model_copy(update={"flows": [FlowReport(
        flow="broker", kind="Broker", namespace="prod", name="default", health=Health.HEALTHY)]})
    metrics = Metrics()
    metrics.update_report(report, {"commerce-mock": CHANGED})
    async with serving(ready_state(report, analysis), metrics) as ready_url, \
            serving(HealthState()) as waiting_url:
        (ready_rc, ready_out), (waiting_rc, waiting_out) = await asyncio.gather(
            schemathesis(ready_url, tmp_path / "ready", 15),
            # Every operation answers 503 here: nothing for the stateful phase to follow.
            schemathesis(waiting_url, tmp_path / "waiting", 5, "--phases", "coverage,fuzzing",
                         "--exclude-checks", "not_a_server_error"),
        )
    assert ready_rc == 0, ready_out
    assert "No issues found" in ready_out, ready_out
    assert waiting_rc == 0, waiting_out
