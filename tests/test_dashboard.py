"""deploy/grafana/eventmesh-health.json is what deploy/grafana/dashboard.py generates
(grafana-foundation-sdk), and every query reads metrics that `serve` exposes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.served_metrics import promql_metric_names, served_metric_names
from tests.tools import tool

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "deploy" / "grafana" / "dashboard.py"
COMMITTED = ROOT / "deploy" / "grafana" / "eventmesh-health.json"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eventmesh_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def test_the_committed_json_is_what_the_generator_writes(generator: ModuleType) -> None:
    assert COMMITTED.read_text() == generator.render(), (
        "deploy/grafana/eventmesh-health.json is stale: run "
        ".venv/bin/python deploy/grafana/dashboard.py")
    assert generator.main(["--check"]) == 0


def test_a_current_schema_and_the_sections(generator: ModuleType) -> None:
    board = json.loads(COMMITTED.read_text())
    assert board["schemaVersion"] >= 39  # Grafana 11 (the SDK's default build is 10.1: 36)
    assert board["uid"] == "eventmesh-health"
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Mesh overview", "Health over time", "Root causes now", "Heartbeats",
                    "Checker"]
    kinds = {p["type"] for p in board["panels"]}
    assert {"stat", "state-timeline", "table", "timeseries"} <= kinds
    # No two panels overlap on the grid.
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        assert pos["x"] + pos["w"] <= 24
        cells |= mine


def test_every_query_reads_metrics_serve_exposes() -> None:
    board = json.loads(COMMITTED.read_text())
    served = served_metric_names()
    used: set[str] = set()
    for title, target in targets(board):
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        names = promql_metric_names(target["expr"])
        assert names, (title, target["expr"])
        assert names <= served, (title, names - served)
        used |= names
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert promql_metric_names(variable["query"]) <= served
    # The sections the dashboard is for: health, root causes, heartbeats, the checker.
    assert {"eventmesh_application_health", "eventmesh_flow_health",
            "eventmesh_application_root_cause", "eventmesh_system_root_cause",
            "eventmesh_heartbeat_latency_seconds_bucket", "eventmesh_heartbeats_lost_total",
            "eventmesh_is_leader", "eventmesh_watch_restarts_total"} <= used


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query (its Grafana variables replaced by values) as a recording rule that
    `promtool check rules` parses: a typo in PromQL fails here, not on a user's screen."""
    board = json.loads(COMMITTED.read_text())
    rules = []
    for n, (_, target) in enumerate(targets(board)):
        expr = (target["expr"].replace("$application", ".*")
                .replace("$__rate_interval", "2m"))
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([str(tool("promtool")), "check", "rules", str(path)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
