"""The web page of `serve` over real HTTP (uvicorn on loopback, httpx): what it shows, that it
shows only what the REST API does, its security headers, pages and filters, the history
(in memory, and as persisted in the EventMeshHealth status). The browser tests are in
tests/test_web_browser.py."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventmesh_health.analysis import Analysis, analyse_graph
from eventmesh_health.model import (
    ApplicationReport,
    Finding,
    Health,
    MeshReport,
    NamespaceReport,
    ObjectRef,
    Severity,
    SourceInfo,
    SystemReport,
)
from eventmesh_health.serve.history import PERSISTED, History
from eventmesh_health.serve.state import HealthState
from eventmesh_health.serve.views import flow_tree
from eventmesh_health.serve.writer import health_status
from eventmesh_health.sources.files import load_snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.test_api import CHANGED, EXAMPLE, TAKEN_AT, ready_state, serving

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return analyse_graph(load_snapshot(EXAMPLE, KYMA_1, now=TAKEN_AT), KYMA_1)


@pytest.fixture(scope="module")
def report(analysis: Analysis) -> MeshReport:
    return analysis.report


class _Scan(HTMLParser):
    """Everything a CSP without 'unsafe-inline' would refuse, and every URL the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.loads: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and not found.get("src"):
            self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"{tag} {name}=")
        for name in ("src", "href"):
            value = found.get(name)
            if value and tag in ("script", "link", "img", "iframe"):
                self.loads.append(value)
        if found.get("id"):
            self.ids.append(str(found["id"]))


def scan(html: str) -> _Scan:
    parser = _Scan()
    parser.feed(html)
    return parser


async def test_pages_have_no_inline_code_load_only_their_own_files_and_send_a_csp(
    report: MeshReport, analysis: Analysis
) -> None:
    async with serving(ready_state(report, analysis)) as url, httpx.AsyncClient() as http:
        for path in ("/", "/applications/commerce-mock", "/applications/crm-legacy",
                     "/?health=problem", "/applications/no-such-app"):
            answer = await http.get(url + path)
            assert answer.status_code == (404 if "no-such" in path else 200), path
            assert answer.headers["content-type"].startswith("text/html")
            csp = answer.headers["content-security-policy"]
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert answer.headers["x-content-type-options"] == "nosniff"
            found = scan(answer.text)
            assert found.inline == [], (path, found.inline)
            assert all(u.startswith("/static/") for u in found.loads), found.loads
            assert len(found.ids) == len(set(found.ids)), "duplicate ids"
        for name, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
            answer = await http.get(f"{url}/static/{name}")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith(media)
            assert "http://" not in answer.text and "https://" not in answer.text
            assert "innerHTML" not in answer.text and "eval(" not in answer.text
        assert (await http.get(url + "/static/../api.py")).status_code == 404
        assert (await http.post(url + "/")).status_code == 405


async def test_the_grid_shows_what_the_api_says(report: MeshReport, analysis: Analysis) -> None:
    async with serving(ready_state(report, analysis)) as url, httpx.AsyncClient() as http:
        summary = (await http.get(url + "/api/v1/summary")).json()
        html = (await http.get(url + "/")).text
    apps = summary["applications"]
    assert [a["name"] for a in apps["items"]] == ["commerce-mock", "crm-legacy", "marketing"]
    broken = apps["items"][0]
    assert broken["health"] == "Unhealthy"
    assert broken["rootCause"] == "KafkaChannel kyma-integration/commerce-mock: TopicFailed"
    assert broken["lastTransitionTime"] == CHANGED.isoformat().replace("+00:00", "Z")
    assert summary["counts"] == {"Healthy": 2, "Progressing": 0, "Unknown": 0,
                                 "Degraded": 0, "Unhealthy": 1}
    for app in apps["items"]:  # every row, with its health as a word (not colour alone)
        row = re.search(rf'<tr data-key="{app["name"]}"[^>]*>(.*?)</tr>', html, re.S)
        assert row is not None
        assert f'class="cell h-{app["health"]}"' in row.group(1)
        assert f"</span> {app['health']}</td>" in row.group(1)
        for ns in app["namespaces"]:
            assert f'data-ns="{ns["name"]}"' in row.group(1)
    assert broken["rootCause"] in html


async def test_filter_pages_and_etag(report: MeshReport, analysis: Analysis) -> None:
    async with serving(ready_state(report, analysis)) as url, httpx.AsyncClient() as http:
        one = await http.get(url + "/api/v1/summary", params={"pageSize": 1, "page": 2})
        body = one.json()["applications"]
        assert (body["total"], body["pages"], body["page"]) == (3, 3, 2)
        assert [a["name"] for a in body["items"]] == ["crm-legacy"]
        again = await http.get(url + "/api/v1/summary", params={"pageSize": 1, "page": 2},
                               headers={"If-None-Match": one.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        problems = (await http.get(url + "/api/v1/summary", params={"health": "problem"})
                    ).json()["applications"]["items"]
        assert [a["name"] for a in problems] == ["commerce-mock"]
        named = (await http.get(url + "/api/v1/summary", params={"q": "MARK"})).json()
        assert [a["name"] for a in named["applications"]["items"]] == ["marketing"]
        assert (await http.get(url + "/api/v1/summary", params={"health": "Bad"})
                ).status_code == 422
        assert (await http.get(url + "/api/v1/summary", params={"pageSize": 501})
                ).status_code == 422
        # Without JavaScript: the same filter as a GET form, pages as links.
        html = (await http.get(url + "/", params={"q": "mark", "health": "Healthy"})).text
        assert 'data-key="marketing"' in html and 'data-key="commerce-mock"' not in html


async def test_application_page_has_the_tree_root_cause_and_history(
    report: MeshReport, analysis: Analysis
) -> None:
    async with serving(ready_state(report, analysis)) as url, httpx.AsyncClient() as http:
        tree = (await http.get(url + "/api/v1/applications/commerce-mock/tree")).json()
        history = (await http.get(url + "/api/v1/applications/commerce-mock/history")).json()
        html = (await http.get(url + "/applications/commerce-mock")).text
    roots = [n for ns in tree["namespaces"] for n in _walk(ns["links"]) if n["rootCause"]]
    roots += [n for n in _walk(tree["links"]) if n["rootCause"]]
    assert {(n["object"]["kind"], n["reason"]) for n in roots} == {
        ("KafkaChannel", "TopicFailed")}
    assert any(c["type"] == "TopicReady" for n in roots for c in n["conditions"])
    assert history["transitions"] == [{
        "time": "2020-06-15T09:41:09Z", "health": "Unhealthy", "previous": "Healthy",
        "rootCause": "KafkaChannel kyma-integration/commerce-mock: TopicFailed"}]
    # The root cause is highlighted once, with an anchor; its symptoms link to it.
    anchor = "rc-kafkachannel-kyma-integration-commerce-mock"
    assert html.count(f'id="{anchor}"') == 1
    assert f'href="#{anchor}"' in html
    assert 'class="tag-root">Root cause<' in html
    assert "TopicReady" in html  # the link's conditions
    assert '<ol class="timeline"' in html and "TopicFailed" in html


def _walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for node in nodes:
        found.append(node)
        found += _walk(node["children"])
    return found


async def test_not_ready_page_says_so() -> None:
    async with serving(HealthState()) as url, httpx.AsyncClient() as http:
        answer = await http.get(url + "/")
    assert answer.status_code == 503
    assert "caches not yet synced" in answer.text
    assert "unsafe-inline" not in answer.headers["content-security-policy"]


def test_history_keeps_a_bounded_window_and_merges_what_a_leader_persisted() -> None:
    history = History(per_key=5, window=timedelta(hours=1))
    for i in range(8):
        history.record("a", T0 + timedelta(minutes=i), Health.HEALTHY if i % 2 else
                       Health.UNHEALTHY, None if i == 0 else Health.HEALTHY, "")
    assert len(history.of("a")) == 5
    history.record("a", T0 + timedelta(hours=3), Health.HEALTHY, Health.UNHEALTHY, "")
    assert len(history.of("a")) == 1  # the older ones are out of the window

    # A new leader: it saw the application first (Unhealthy) at its start, T0 + 10 min;
    # the old leader persisted the real transitions.
    fresh = History()
    fresh.record("a", T0 + timedelta(minutes=10), Health.UNHEALTHY, None, "Trigger x: Y")
    persisted = [
        {"time": "2024-05-01T11:00:00Z", "health": "Healthy", "previous": None,
         "rootCause": ""},
        {"time": "2024-05-01T12:01:00Z", "health": "Unhealthy", "previous": "Healthy",
         "rootCause": "Trigger x: Y"},
        {"time": "nonsense", "health": "Healthy"},  # ignored
    ]
    older = fresh.seed("a", persisted)
    assert older is not None and older.at == T0 + timedelta(minutes=1)
    assert [(t.health, t.previous) for t in fresh.of("a")] == [
        (Health.HEALTHY, None), (Health.UNHEALTHY, Health.HEALTHY)]
    assert len(fresh.persisted("a")) == 2


def test_health_status_persists_the_last_transitions() -> None:
    history = History()
    for i in range(15):
        history.record("x", T0 + timedelta(minutes=i),
                       Health.UNHEALTHY if i % 2 else Health.HEALTHY, None, "")
    report = _mesh(1)
    status = health_status(report.applications[0], report, last_transition=T0,
                           observed_at=T0, history=history.persisted("x"))
    assert len(status["history"]) == PERSISTED
    assert status["history"][-1]["time"] == "2024-05-01T12:14:00Z"


# --- 10,000 applications --------------------------------------------------------------------


def _mesh(apps: int, namespaces: int = 3, broken_every: int = 97) -> MeshReport:
    """A report of `apps` applications, each in `namespaces` namespaces; every
    `broken_every`-th has a broken Trigger (root cause) in its first namespace."""
    applications = []
    for i in range(apps):
        name = f"app-{i:05d}"
        nss = []
        broken = i % broken_every == 0
        for n in range(namespaces):
            findings = []
            health = Health.HEALTHY
            if broken and n == 0:
                health = Health.UNHEALTHY
                findings = [Finding.model_construct(
                    severity=Severity.ERROR, health=health,
                    object=ObjectRef(api_version="eventing.knative.dev/v1alpha1",
                                     kind="Trigger", namespace=f"ns-{n}", name=f"{name}-t"),
                    reason="SubscriberResolveFailed", message='services "lambda" not found',
                    root_cause=True, caused_by=None)]
            nss.append(NamespaceReport.model_construct(name=f"ns-{n}", health=health, state=4,
                                                       findings=findings))
        applications.append(ApplicationReport.model_construct(
            name=name, health=Health.UNHEALTHY if broken else Health.HEALTHY, state=4,
            findings=[], namespaces=nss))
    return MeshReport.model_construct(
        healthy=False, health=Health.UNHEALTHY,
        system=SystemReport.model_construct(health=Health.HEALTHY, findings=[]),
        applications=applications, flows=[],
        source=SourceInfo(taken_at="2024-05-01T12:00:00Z", objects=apps * 12,
                          profile="kyma-1"))


def big_state(apps: int = 10_000) -> HealthState:
    report = _mesh(apps)
    state = HealthState(report=report, caches_synced=True, leader_election_running=True)
    for app in report.applications:
        state.transitions[app.name] = T0
        state.history.record(app.name, T0, app.health, None, "")
    return state


async def test_ten_thousand_applications_first_render_and_payload(tmp_path: Path) -> None:
    """The first page of 10,000 applications x 3 namespaces: server time (the first request
    also indexes the report) and bytes; the browser's figure is in test_web_browser.py."""
    async with serving(big_state()) as url, httpx.AsyncClient(timeout=30) as http:
        started = time.perf_counter()
        first = await http.get(url + "/")
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = await http.get(url + "/?page=50")
        again_seconds = time.perf_counter() - started
        summary = await http.get(url + "/api/v1/summary")
        everything = await http.get(url + "/api/v1/applications")
    assert first.status_code == again.status_code == 200
    assert 'data-key="app-00000"' in first.text  # broken ones first
    assert "Page 1 of 100" in first.text
    print(f"\n10,000 applications: first / {first_seconds * 1000:.0f} ms, "
          f"{len(first.content) / 1024:.0f} KiB; page 50 {again_seconds * 1000:.0f} ms; "
          f"/api/v1/summary {len(summary.content) / 1024:.0f} KiB; "
          f"/api/v1/applications {len(everything.content) / 1024:.0f} KiB")
    assert len(first.content) < 150 * 1024
    assert first_seconds < 3.0, first_seconds


async def test_flow_page_of_a_knative_v1_mesh() -> None:
    """flows[] (Knative v1): the grid lists them, the flow's page shows its chain, the
    system components it needs and the root cause (the recorded dispatcher-down example)."""
    from eventmesh_health.topology.knative1 import PROFILE as KNATIVE_1

    example = Path(__file__).parent.parent / "examples" / "knative-v1" / "dispatcher-down"
    analysis = analyse_graph(load_snapshot(example, KNATIVE_1, now=T0), KNATIVE_1)
    report = analysis.report
    units = {unit.key: unit for unit in analysis.graph.flows}
    state = HealthState(report=report, caches_synced=True, leader_election_running=True)
    state.explain_flow = lambda flow: flow_tree(units.get((flow.kind, flow.namespace,
                                                           flow.name)), flow)
    broken = next(f for f in report.flows if f.health is not Health.HEALTHY)
    path = f"{broken.namespace}/{broken.kind}/{broken.name}"
    async with serving(state) as url, httpx.AsyncClient() as http:
        summary = (await http.get(url + "/api/v1/summary")).json()
        grid = (await http.get(url + "/")).text
        tree = (await http.get(f"{url}/api/v1/flows/{path}/tree")).json()
        page = await http.get(f"{url}/flows/{path}")
    assert summary["flows"]["total"] == len(report.flows) > 0
    first = summary["flows"]["items"][0]
    assert (first["namespace"], first["kind"], first["name"]) == (
        broken.namespace, broken.kind, broken.name)
    assert first["rootCause"]
    assert f'href="/flows/{path}"' in grid
    assert page.status_code == 200 and scan(page.text).inline == []
    assert first["rootCause"] in page.text
    roots = [n for n in _walk(tree["links"] + tree["system"]) if n["rootCause"]]
    assert roots and 'class="tag-root">Root cause<' in page.text
