"""Heartbeats that carry a trace, on the REAL Knative v1 mesh exporting to a REAL Jaeger:
`serve --probe --trace-url` names the trace of a failed heartbeat in the NoHeartbeat finding
and the hop where Jaeger's trace of it stops. Run under ``flock /tmp/knative-mesh.lock``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
from click.testing import CliRunner

from eventmesh_health.cli import main
from eventmesh_health.model import Finding
from eventmesh_health.probing import Hop
from eventmesh_health.probing.runner import flow_findings
from tests.envtest.controlplane import free_port
from tests.knative.mesh import KnativeMesh
from tests.test_knative_probe import (
    BROKER,
    CHANNEL,
    INTERVAL,
    Probed,
    ensure_key_secret,
    make_flows,
    probe_settings,
    remove_heartbeat_objects,
    start_probed,
    wait_until,
)
from tests.tracing.jaeger import Jaeger

pytestmark = pytest.mark.knative


@pytest.fixture(scope="module")
def traced_mesh(knative_mesh: KnativeMesh, jaeger: Jaeger) -> Iterator[KnativeMesh]:
    knative_mesh.set_tracing(jaeger.otlp_url)
    try:
        yield knative_mesh
    finally:
        knative_mesh.set_tracing(None)


@pytest.fixture
async def traced_probe(traced_mesh: KnativeMesh, knative_namespace: str,
                       jaeger: Jaeger) -> AsyncIterator[Probed]:
    mesh, ns = traced_mesh, knative_namespace
    ensure_key_secret(mesh)
    make_flows(mesh, ns)
    port = free_port()
    settings = replace(probe_settings(mesh, port), trace_url=jaeger.query_url)
    service, task, port = await start_probed(mesh, ns, settings, port)
    probed = Probed(service, mesh, ns, port)
    try:
        await wait_until("heartbeats of the Broker flow", lambda: (
            service.state.report is not None
            and probed.received("broker", BROKER, Hop.BROKER) >= 2), 30)
        await wait_until("both flows Healthy", probed.healthy, 30)
        yield probed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await service.client.close()
        await remove_heartbeat_objects(mesh, ns)


def broker_finding(probed: Probed) -> Finding | None:
    return next((f for fl, ns, name, f in flow_findings(probed.report)
                 if fl == "broker" and ns == probed.ns and name == BROKER
                 and f.reason == "NoHeartbeat"), None)


async def test_filter_killed_finding_names_the_trace_and_where_it_stops(
        traced_probe: Probed, jaeger: Jaeger) -> None:
    mesh = traced_probe.mesh
    mesh.stop_component("filter")
    started = time.monotonic()
    try:
        def traced() -> Finding | None:
            finding = broker_finding(traced_probe)
            if finding is None or finding.trace is None or finding.trace.stopped_at is None:
                return None
            return finding

        finding = await wait_until("NoHeartbeat with the hop where its trace stops", traced,
                                   8 * INTERVAL)
        print(f"filter killed: trace attached after {time.monotonic() - started:.2f}s")
    finally:
        mesh.start_component("filter")
    assert finding.trace is not None
    assert finding.trace.outcome == "stopped"
    assert finding.trace.stopped_at == "channel dispatcher → broker filter"
    assert "HTTP 502" in (finding.trace.detail or "")  # the proxy standing in for kube-proxy
    assert f"Trace of the newest failed heartbeat: {finding.trace.trace_id}, stops at " \
        "channel dispatcher → broker filter" in finding.message
    # The REST API carries it (an additive field of the finding).
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        body = (await http.get(f"http://127.0.0.1:{traced_probe.port}/api/v1/health")).json()
    flows = [f for f in body["flows"] if f["namespace"] == traced_probe.ns
             and f["name"] == BROKER]
    assert flows, body["flows"]
    traces = [f["trace"] for f in flows[0]["findings"] if "trace" in f]
    assert traces and traces[0]["traceId"] == finding.trace.trace_id
    # and the CLI finds the same trace in Jaeger
    result = CliRunner().invoke(main, ["trace", "--trace-id", finding.trace.trace_id,
                                       "--url", jaeger.query_url])
    assert result.exit_code == 1, result.output
    assert "Stopped at channel dispatcher → broker filter: HTTP 502" in result.output
    await wait_until("the Broker flow Healthy again", traced_probe.healthy, 6 * INTERVAL)
    assert CHANNEL  # the Channel flow was probed throughout (its findings checked by healthy)
