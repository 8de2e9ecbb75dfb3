"""The metric names `serve --probe --notify-url ...` exposes on `/metrics`: what the alert
rules and the dashboard may use. A `Service` as `serve` builds it (its API app, its metrics
with the probing and notification collectors), a report of a bundled example
(applications, namespaces, findings) recorded, `/metrics` read through the real app, and
every sample name a family can have collected from the `# TYPE` lines (a family without
samples still counts)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from lightkube import AsyncClient, KubeConfig

from eventmesh_health.analysis import analyse
from eventmesh_health.probing.runner import ProbeSettings
from eventmesh_health.serve.notify import NotifySettings
from eventmesh_health.serve.service import Service, Settings
from eventmesh_health.sources.files import load_snapshot
from eventmesh_health.topology.registry import PROFILES

ROOT = Path(__file__).resolve().parent.parent
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", ""),
             "counter": ("_total",), "gauge": ("",), "untyped": ("",)}


@functools.cache
def served_metric_names() -> frozenset[str]:
    profile = PROFILES["kyma-1+knative-v1"] if "kyma-1+knative-v1" in PROFILES \
        else PROFILES["knative-v1"]
    # Nothing is sent: only the API app is asked, in process.
    config = KubeConfig.from_dict({
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x"})
    service = Service(AsyncClient(config, trust_env=False), Settings(
        host="127.0.0.1", leader_election=False, write=False, profile=profile,
        probe=ProbeSettings(interval=timedelta(seconds=30)),
        notify=NotifySettings(urls=("http://127.0.0.1:9/hook",))))
    now = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
    report = analyse(load_snapshot(ROOT / "examples" / "kafka-quota-reached",
                                   PROFILES["kyma-1"], now=now), PROFILES["kyma-1"])
    service.metrics.update_report(report, {})
    text = TestClient(service.app).get("/metrics").text
    names: set[str] = set()
    for name, kind in _TYPE.findall(text):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in _SUFFIXES[kind])
    return frozenset(names)


def promql_metric_names(expr: str) -> set[str]:
    """The names of eventmesh metrics a PromQL expression (or a Go template holding
    queries) selects."""
    return set(re.findall(r"\beventmesh_[a-z0-9_]+", expr))
