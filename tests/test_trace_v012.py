"""Kyma 1.x-era traces for real: the real Knative v0.12 processes (tests/knative/v012.py:
broker ingress and filter per namespace, IMC dispatcher; OpenCensus) export Zipkin spans to
the real Jaeger's Zipkin receiver when ``config-tracing`` says ``backend: zipkin`` (keys of
knative.dev/pkg@v0.0.0-20200113182502-b8dc5fbc6d2f ``tracing/config/tracing.go``; watched
at run time: ``SetupDynamicPublishing`` in each main), and `trace` diagnoses them.

The events carry B3 headers (OpenCensus' ochttp default propagation), so the trace id is the
test's. Jaeger is reached as Service ``zipkin.knative-eventing`` through the mesh's loopback
proxy, like every cluster name. Run under ``flock /tmp/knative-mesh.lock``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from lightkube.resources.core_v1 import ConfigMap, Endpoints, Service
from lightkube.types import PatchType

from eventmesh_health.cli import main
from tests.knative.common import from_dict
from tests.knative.receiver import Receiver
from tests.knative.v012 import PLACEHOLDER_IP, SYSTEM_NAMESPACE, KnativeV012Mesh
from tests.tracing.jaeger import Jaeger

pytestmark = pytest.mark.knative

TIMEOUT = 60.0
TRACE_TIMEOUT = 30.0
ORDER_CREATED = "order.created"


def _expose(mesh: KnativeV012Mesh, ns: str, name: str, service_port: int, port: int) -> None:
    """Service + Endpoints: the proxy routes ``<name>.<ns>:<service_port>`` to 127.0.0.1:port."""
    with contextlib.suppress(Exception):
        mesh.client.delete(Service, name, namespace=ns)
    mesh.client.create(from_dict(Service, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": service_port, "targetPort": port,
                            "protocol": "TCP"}]}}))
    mesh.client.apply(from_dict(Endpoints, {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
        "subsets": [{"addresses": [{"ip": PLACEHOLDER_IP}],
                     "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}]}),
        field_manager="tests", force=True)


@pytest.fixture(scope="module")
def traced_v012(knative_v012: KnativeV012Mesh, jaeger: Jaeger) -> Iterator[KnativeV012Mesh]:
    mesh = knative_v012
    mesh.trace_names = True
    mesh.stop_dispatcher()  # restarted resolving its own name (the broker pods start later)
    mesh.start_dispatcher()
    _expose(mesh, SYSTEM_NAMESPACE, "zipkin", 9411, jaeger.ports["zipkin"])
    mesh.client.patch(ConfigMap, "config-tracing", {"data": {
        "backend": "zipkin",
        "zipkin-endpoint": f"http://zipkin.{SYSTEM_NAMESPACE}.svc.cluster.local:9411"
                           "/api/v2/spans",
        "sample-rate": "1.0"}}, namespace=SYSTEM_NAMESPACE, patch_type=PatchType.MERGE)
    try:
        yield mesh
    finally:
        mesh.trace_names = False
        mesh.client.patch(ConfigMap, "config-tracing", {"data": {
            "backend": "none", "zipkin-endpoint": None, "sample-rate": None}},
            namespace=SYSTEM_NAMESPACE, patch_type=PatchType.MERGE)
        with contextlib.suppress(Exception):
            mesh.client.delete(Service, "zipkin", namespace=SYSTEM_NAMESPACE)
            mesh.client.delete(Endpoints, "zipkin", namespace=SYSTEM_NAMESPACE)


@pytest.fixture(scope="module")
def broker_ns(traced_v012: KnativeV012Mesh) -> Iterator[tuple[str, Receiver]]:
    """A namespace with the default Broker, a Trigger on order.created to a receiver."""
    mesh = traced_v012
    ns = mesh.new_namespace("trace", labels={"knative-eventing-injection": "enabled"})
    with Receiver("subscriber") as rcv:
        _expose(mesh, ns, "subscriber", 80, rcv.port)
        mesh.default_broker(ns, TIMEOUT)
        mesh.create("Trigger", ns, "orders", {
            "broker": "default", "filter": {"attributes": {"type": ORDER_CREATED}},
            "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service",
                                   "name": "subscriber", "namespace": ns}},
        }, labels={"eventing.knative.dev/broker": "default"})
        mesh.wait_pods_available(ns, TIMEOUT)
        mesh.wait_ready("Broker", ns, "default", TIMEOUT)
        mesh.wait_ready("Trigger", ns, "orders", TIMEOUT)
        yield ns, rcv


def send(mesh: KnativeV012Mesh, ns: str, type_: str) -> tuple[str, httpx.Response]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    assert mesh.proxy is not None
    resp = mesh.send_event(f"http://default-broker.{ns}.svc.cluster.local/", type_,
                           source="/eventmesh-health/tests",
                           proxy=mesh.proxy.url,
                           extra_headers={"x-b3-traceid": trace_id, "x-b3-spanid": span_id,
                                          "x-b3-sampled": "1"})
    return trace_id, resp


def verdict(jaeger: Jaeger, trace_id: str) -> tuple[int, dict[str, Any] | None]:
    result = CliRunner().invoke(main, ["trace", "--trace-id", trace_id, "--url",
                                       jaeger.query_url, "-o", "json"])
    if result.exit_code not in (0, 1, 4):
        return result.exit_code, None
    return result.exit_code, json.loads(result.output)


def traced_event(mesh: KnativeV012Mesh, jaeger: Jaeger, ns: str, type_: str,
                 services: set[str], name: str,
                 status: int | None = 202) -> tuple[str, dict[str, Any]]:
    """Send events until one's trace holds spans of `services` (the processes pick up
    config-tracing when their informer sees it), then give its verdict once stable."""
    deadline = time.monotonic() + TRACE_TIMEOUT
    while time.monotonic() < deadline:
        trace_id, resp = send(mesh, ns, type_)
        assert status is None or resp.status_code == status, resp.text
        until = time.monotonic() + 3
        while time.monotonic() < until:
            code, answer = verdict(jaeger, trace_id)
            if answer is not None:
                seen = {v["service"] for v in _visits(answer["path"])}
                if services <= seen and answer["missingParents"] == 0:
                    time.sleep(0.3)  # one more batch may still come: judge the settled trace
                    code, answer = verdict(jaeger, trace_id)
                    assert answer is not None
                    answer["exitCode"] = code
                    jaeger.record(trace_id, f"v0.12-{name}.real")
                    return trace_id, answer
            time.sleep(0.1)
    assert mesh.proxy is not None
    with httpx.Client(trust_env=False, timeout=5) as http:
        known = http.get(f"{jaeger.query_url}/api/services").json().get("data")
    exports = [(f.url, f.status, f.error) for f in mesh.proxy.forwarded() if "zipkin" in f.url]
    logs = {key: [line[:300] for line in mesh.log_tail(key, 400).splitlines()
                  if "racing" in line or "ipkin" in line or "xporter" in line][-4:]
            for key in mesh.pods}
    raise AssertionError(f"no trace with spans of {services} within {TRACE_TIMEOUT}s; Jaeger "
                         f"knows {known}; exports through the proxy: {exports[-5:]}; "
                         f"logs: {logs}")


def _visits(path: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for visit in path:
        yield visit
        for d in visit["deliveries"]:
            if d["next"]:
                yield from _visits([d["next"]])
        yield from _visits(visit["alsoReached"])


def test_v012_delivered(traced_v012: KnativeV012Mesh, broker_ns: tuple[str, Receiver],
                        jaeger: Jaeger) -> None:
    ns, rcv = broker_ns
    _, answer = traced_event(traced_v012, jaeger, ns, ORDER_CREATED,
                             {f"default-broker.{ns}", f"default-broker-filter.{ns}",
                              "imc-dispatcher"}, "delivered")
    assert answer["outcome"] == "delivered", answer["summary"]
    assert answer["deliveredTo"] == [f"http://subscriber.{ns}.svc.cluster.local/"]
    assert rcv.requests


def test_v012_filter_matching_nothing(traced_v012: KnativeV012Mesh,
                                      broker_ns: tuple[str, Receiver], jaeger: Jaeger) -> None:
    ns, _ = broker_ns
    _, answer = traced_event(traced_v012, jaeger, ns, "order.deleted",
                             {f"default-broker.{ns}", f"default-broker-filter.{ns}"},
                             "filter-no-match")
    assert answer["outcome"] == "stopped", answer["summary"]
    assert [s["hop"] for s in answer["stops"]] == ["broker filter"]
    assert "matched no Trigger" in answer["stops"][0]["reason"]


def test_v012_subscriber_503(traced_v012: KnativeV012Mesh, broker_ns: tuple[str, Receiver],
                             jaeger: Jaeger) -> None:
    ns, rcv = broker_ns
    rcv.status = 503
    try:
        _, answer = traced_event(traced_v012, jaeger, ns, ORDER_CREATED,
                                 {f"default-broker.{ns}", f"default-broker-filter.{ns}"},
                                 "subscriber-503")
    finally:
        rcv.status = 202
    assert answer["outcome"] == "stopped", answer["summary"]
    (stop,) = answer["stops"]
    assert stop["hop"] == "broker filter → subscriber"
    assert stop["reason"].startswith(f"HTTP 503 from http://subscriber.{ns}.svc"), stop
    # the filter answered the dispatcher 400 (seen here), not the 500 its source suggests
    assert answer["path"][0]["deliveries"][0]["next"]["deliveries"][0]["statusCodes"] == [400]


def test_v012_dead_dispatcher(traced_v012: KnativeV012Mesh, broker_ns: tuple[str, Receiver],
                              jaeger: Jaeger) -> None:
    ns, _ = broker_ns
    traced_v012.stop_dispatcher()
    try:
        _, answer = traced_event(traced_v012, jaeger, ns, ORDER_CREATED,
                                 {f"default-broker.{ns}"}, "dead-dispatcher", status=400)
    finally:
        traced_v012.start_dispatcher()
    assert answer["outcome"] == "stopped", answer["summary"]
    (stop,) = answer["stops"]
    assert stop["hop"] == "broker ingress → channel dispatcher", stop
    # v0.12's ingress answers 400 when it cannot send on (cloudevents sdk-go v0.11's
    # transport; seen here), the proxy standing in for kube-proxy answered 502
    assert stop["reason"].startswith("HTTP 502 from http://default-kne-trigger-kn-channel."), stop
