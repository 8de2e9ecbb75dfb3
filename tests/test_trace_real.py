"""`trace` on REAL traces: the real Knative v1 data plane (v0.48.0 = 1.21, OpenTelemetry)
exporting to a real Jaeger (v1.75.0, OTLP HTTP), then diagnosed through Jaeger's query API.

Each test sends one event with its own W3C ``traceparent`` (the ingress's otelhttp handler
continues it: knative.dev/eventing@v0.48.0 ``pkg/observability/otel/handler.go``), so the trace
id is known, then waits until Jaeger holds the spans the scenario must produce and the CLI
gives the expected verdict. Run under ``flock /tmp/knative-mesh.lock``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from eventmesh_health.cli import main
from tests.knative.garbage import GarbageCollector
from tests.knative.mesh import KnativeMesh
from tests.knative.receiver import Receiver
from tests.test_smoke_knative import assert_nothing_left, run_smoke
from tests.tracing.jaeger import Jaeger

pytestmark = pytest.mark.knative

READY_TIMEOUT = 30.0
TRACE_TIMEOUT = 15.0
ORDER_CREATED = "order.created"


@pytest.fixture(scope="module")
def traced_mesh(knative_mesh: KnativeMesh, jaeger: Jaeger) -> Iterator[KnativeMesh]:
    """The session's mesh with its ingress, filter and dispatcher exporting to Jaeger; back to
    not tracing afterwards (restarting those three)."""
    knative_mesh.set_tracing(jaeger.otlp_url)
    try:
        yield knative_mesh
    finally:
        knative_mesh.set_tracing(None)


@pytest.fixture
def ns(traced_mesh: KnativeMesh, knative_namespace: str) -> str:
    return knative_namespace


def service_ref(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "name": name}


def broker_and_trigger(mesh: KnativeMesh, ns: str, *, filter_type: str = ORDER_CREATED,
                       delivery: dict[str, Any] | None = None) -> None:
    mesh.create_broker(ns)
    mesh.create_trigger(ns, "orders", "default", subscriber_ref=service_ref("subscriber"),
                        filter_attributes={"type": filter_type}, delivery=delivery)
    mesh.wait_ready("Broker", ns, "default", READY_TIMEOUT)
    mesh.wait_ready("Trigger", ns, "orders", READY_TIMEOUT)
    mesh.wait_settled(ns, READY_TIMEOUT)


def send_traced(mesh: KnativeMesh, ns: str, type_: str = ORDER_CREATED) -> tuple[str, int]:
    """POST one event with a fresh sampled traceparent; (trace id, ingress status)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"ce-specversion": "1.0", "ce-id": uuid.uuid4().hex, "ce-type": type_,
               "ce-source": "/eventmesh-health/tests", "content-type": "application/json",
               "traceparent": f"00-{trace_id}-{span_id}-01"}
    with httpx.Client(trust_env=False, timeout=15) as http:
        resp = http.post(mesh.ingress_url(ns, "default"), headers=headers, content=b"{}")
    return trace_id, resp.status_code


def run_trace(jaeger: Jaeger, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["trace", "--url", jaeger.query_url, *args])
    return result.exit_code, result.output


def services_of(jaeger: Jaeger, trace_id: str) -> set[str]:
    with httpx.Client(trust_env=False, timeout=5) as http:
        resp = http.get(f"{jaeger.query_url}/api/traces/{trace_id}")
    if resp.status_code != 200:
        return set()
    data = resp.json()["data"]
    return {p["serviceName"] for t in data for p in t["processes"].values()}


def wait_verdict(jaeger: Jaeger, trace_id: str, services: set[str],
                 done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll until the trace holds spans of `services` and its JSON verdict satisfies `done`
    (spans arrive in batches: a partial trace must not be judged)."""
    deadline = time.monotonic() + TRACE_TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        if services <= services_of(jaeger, trace_id):
            code, out = run_trace(jaeger, "--trace-id", trace_id, "-o", "json")
            last = (code, out)
            if code in (0, 1, 4):
                verdict = json.loads(out)
                verdict["exitCode"] = code
                if done(verdict):
                    return verdict
        time.sleep(0.2)
    folder = os.environ.get("EVENTMESH_HEALTH_TRACE_EXAMPLES")
    if folder:
        with httpx.Client(trust_env=False, timeout=5) as http:
            raw = http.get(f"{jaeger.query_url}/api/traces/{trace_id}").json()
        with open(os.path.join(folder, f"failed-{trace_id}.json"), "w") as f:
            json.dump(raw, f, indent=1, sort_keys=True)
    raise AssertionError(f"trace {trace_id}: no expected verdict in {TRACE_TIMEOUT}s; last: "
                         f"{last}; services: {services_of(jaeger, trace_id)}")


def print_example(jaeger: Jaeger, trace_id: str, name: str) -> str:
    """The text report, kept for the README (EVENTMESH_HEALTH_TRACE_EXAMPLES=dir)."""
    code, out = run_trace(jaeger, "--trace-id", trace_id)
    saved = jaeger.record(trace_id, name)
    if saved is not None:
        saved.with_suffix(".txt").write_text(
            f"$ eventmesh-health trace --trace-id {trace_id} --url $JAEGER\n{out}"
            f"(exit {code})\n")
    return out


def test_delivered_event_has_path_ingress_dispatcher_filter_subscriber(
        traced_mesh: KnativeMesh, ns: str, jaeger: Jaeger) -> None:
    with Receiver("subscriber") as rcv:
        traced_mesh.expose(ns, "subscriber", rcv.port)
        broker_and_trigger(traced_mesh, ns)
        trace_id, status = send_traced(traced_mesh, ns)
        assert status == 202
        verdict = wait_verdict(jaeger, trace_id, {"broker.ingress", "broker.filter",
                                                  "inmemorychannel.dispatcher"},
                               lambda v: v["outcome"] == "delivered")
        assert rcv.wait_for(lambda reqs: bool(reqs), 5)
    assert verdict["exitCode"] == 0
    assert verdict["deliveredTo"] == [f"http://subscriber.{ns}.svc.cluster.local"]
    ingress = verdict["path"][0]
    assert ingress["hop"] == "ingress" and ingress["statusCode"] == 202
    dispatcher = ingress["deliveries"][0]["next"]
    assert dispatcher["hop"] == "dispatcher"
    flt = dispatcher["deliveries"][0]["next"]
    assert flt["hop"] == "filter"
    assert flt["deliveries"][0]["statusCodes"] == [202]
    out = print_example(jaeger, trace_id, "delivered")
    assert "✓ delivered" in out


def test_no_matching_trigger_stops_at_the_filter(
        traced_mesh: KnativeMesh, ns: str, jaeger: Jaeger) -> None:
    with Receiver("subscriber") as rcv:
        traced_mesh.expose(ns, "subscriber", rcv.port)
        broker_and_trigger(traced_mesh, ns, filter_type="order.cancelled")
        trace_id, status = send_traced(traced_mesh, ns)
        assert status == 202
        verdict = wait_verdict(jaeger, trace_id, {"broker.ingress", "broker.filter"},
                               lambda v: v["outcome"] == "stopped")
    assert verdict["exitCode"] == 1
    assert [s["hop"] for s in verdict["stops"]] == ["broker filter"]
    assert "matched no Trigger" in verdict["stops"][0]["reason"]
    assert not rcv.requests
    print_example(jaeger, trace_id, "filter-no-match")


def test_subscriber_503_retries_into_dead_letter_sink(
        traced_mesh: KnativeMesh, ns: str, jaeger: Jaeger) -> None:
    with Receiver("subscriber", status=503) as rcv, Receiver("dead-letters") as dls:
        traced_mesh.expose(ns, "subscriber", rcv.port)
        traced_mesh.expose(ns, "dls", dls.port)
        broker_and_trigger(traced_mesh, ns, delivery={
            "retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.1S",
            "deadLetterSink": {"ref": service_ref("dls")}})
        trace_id, status = send_traced(traced_mesh, ns)
        assert status == 202
        verdict = wait_verdict(jaeger, trace_id, {"broker.ingress", "broker.filter"},
                               # complete: one stop, reached through the dispatcher's retries
                               lambda v: v["outcome"] == "stopped" and len(v["stops"]) == 1
                               and "dead-lettered" in v["summary"])
    assert verdict["exitCode"] == 1
    assert len(verdict["stops"]) == 1, verdict["stops"]
    (stop,) = verdict["stops"]
    assert stop["hop"] == "broker filter → subscriber"
    assert stop["reason"].startswith(f"HTTP 503 from http://subscriber.{ns}.svc")
    assert "; 3 attempts by the channel dispatcher; dead-lettered by the channel dispatcher " \
        f"to http://dls.{ns}.svc.cluster.local (HTTP 202)" in stop["reason"]
    print_example(jaeger, trace_id, "dead-letter")


def test_dead_dispatcher_stops_between_ingress_and_dispatcher(
        traced_mesh: KnativeMesh, ns: str, jaeger: Jaeger) -> None:
    with Receiver("subscriber") as rcv:
        traced_mesh.expose(ns, "subscriber", rcv.port)
        broker_and_trigger(traced_mesh, ns)
        traced_mesh.stop_dispatcher()
        trace_id, status = send_traced(traced_mesh, ns)
        assert status == 500
        verdict = wait_verdict(jaeger, trace_id, {"broker.ingress"},
                               lambda v: v["outcome"] == "stopped")
    assert verdict["exitCode"] == 1
    (stop,) = verdict["stops"]
    assert stop["hop"] == "broker ingress → channel dispatcher", verdict
    print_example(jaeger, trace_id, "dead-dispatcher")


# -- smoke --trace-url: the smoke event's own trace, read back from the real Jaeger ----------


def smoke_with_trace(mesh: KnativeMesh, jaeger: Jaeger, ns: str) -> tuple[int, dict[str, Any]]:
    mesh.create_broker(ns)
    mesh.wait_ready("Broker", ns, "default", READY_TIMEOUT)
    mesh.wait_settled(ns, READY_TIMEOUT)
    # As in a cluster, the Trigger's Subscription goes after it: the cleanup waits for that.
    with GarbageCollector(mesh, ns):
        code, report, stderr = run_smoke(mesh, ns, "broker/default", "--trace-url",
                                         jaeger.query_url, "--trace-backend", "jaeger")
    assert report["trace"] is not None, (report, stderr)
    assert report["trace"]["traceId"] == report["traceId"]
    assert_nothing_left(mesh)
    return code, report


def test_smoke_reports_its_events_trace_delivered(traced_mesh: KnativeMesh, jaeger: Jaeger,
                                                   ns: str) -> None:
    code, report = smoke_with_trace(traced_mesh, jaeger, ns)
    assert code == 0, report
    assert report["trace"]["outcome"] == "delivered", report["trace"]
    assert report["trace"]["complete"] is True


def test_smoke_reports_where_its_events_trace_stops(traced_mesh: KnativeMesh, jaeger: Jaeger,
                                                    ns: str) -> None:
    """The filter stopped: the receiver never gets the event, and the trace says where."""
    traced_mesh.stop_component("filter")
    code, report = smoke_with_trace(traced_mesh, jaeger, ns)
    assert code == 1, report
    assert report["trace"]["outcome"] == "stopped", report["trace"]
    assert "broker filter" in report["trace"]["stoppedAt"], report["trace"]
