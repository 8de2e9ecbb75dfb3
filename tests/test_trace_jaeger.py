"""The real Jaeger (v1.75.0, built by hack/jaeger/build.sh): Zipkin v2 spans as Knative 0.9-0.12
wrote them go in through its Zipkin receiver, and `trace` reads them back from its query API.
Fails (never skips) when Jaeger cannot be built or started."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from eventmesh_health.cli import main
from eventmesh_health.sources.tracing import TraceBackend, TraceNotFound
from tests.tracing.jaeger import Jaeger

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
ARRIVAL_TIMEOUT = 15.0


def post_zipkin(jaeger: Jaeger, name: str, trace_id: str | None = None) -> tuple[str, int]:
    """Post a fixture's spans (under a fresh trace id, so runs never collide); its trace id and
    span count, once Jaeger's query API returns them all."""
    spans = json.loads((FIXTURES / name).read_text())
    trace_id = trace_id or spans[0]["traceId"]
    for span in spans:
        span["traceId"] = trace_id
    with httpx.Client(trust_env=False, timeout=5) as http:
        resp = http.post(jaeger.zipkin_url, json=spans)
        assert resp.status_code == 202, resp.text
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while True:
            got = http.get(f"{jaeger.query_url}/api/traces/{trace_id}")
            if got.status_code == 200 and sum(
                    len(t["spans"]) for t in got.json()["data"]) == len(spans):
                return trace_id, len(spans)
            assert time.monotonic() < deadline, f"spans of {trace_id} not queryable: {got.text}"
            time.sleep(0.05)


def trace(jaeger: Jaeger, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["trace", "--url", jaeger.query_url, *args])
    return result.exit_code, result.output


def test_jaeger_serves_the_knative_docs_trace(jaeger: Jaeger) -> None:
    trace_id, count = post_zipkin(jaeger, "knative-docs-0.9-zipkin.json")
    spans = TraceBackend("jaeger", jaeger.query_url).trace(trace_id)
    assert len(spans) == count
    assert {s.service for s in spans} >= {"imc-dispatcher", "transformer", "logger"}
    code, out = trace(jaeger, "--trace-id", trace_id)
    assert code == 0, out
    assert out.splitlines()[0] == f"Trace {trace_id}: ✓ delivered"
    assert out.splitlines()[-1] == "Delivered to transformer, logger"


@pytest.mark.parametrize(("fixture", "trace_id", "stop"), [
    ("v0.12-filter-no-match.zipkin.json", "1" * 32,
     "Stopped at broker filter: filter matched no Trigger"),
    ("v0.12-subscriber-503.zipkin.json", "2" * 32,
     "Stopped at broker filter → subscriber: HTTP 503 from http://order-service.shop"),
    ("v0.12-dead-dispatcher.zipkin.json", "3" * 32,
     "Stopped at broker ingress → channel dispatcher: Post "),
])
def test_kyma1_traces_through_jaeger(jaeger: Jaeger, fixture: str, trace_id: str,
                                     stop: str) -> None:
    post_zipkin(jaeger, fixture, trace_id)
    code, out = trace(jaeger, "--trace-id", trace_id)
    assert code == 1, out
    assert out.splitlines()[-1].startswith(stop), out


def test_unknown_trace_is_not_found(jaeger: Jaeger) -> None:
    with pytest.raises(TraceNotFound):
        TraceBackend("jaeger", jaeger.query_url).trace("abcdef0123456789abcdef0123456789")
    code, out = trace(jaeger, "--trace-id", "abcdef0123456789abcdef0123456789")
    assert code == 2
    assert "has no such trace (HTTP 404)" in out


def test_event_id_search_on_jaeger_says_when_the_release_records_none(jaeger: Jaeger) -> None:
    post_zipkin(jaeger, "v0.12-filter-no-match.zipkin.json", "4" * 32)
    code, out = trace(jaeger, "0c6d5f9e-no-such-tag")
    assert code == 2
    assert "do not: look the event up by --trace-id" in out


def test_jaeger_stops_cleanly_and_at_once() -> None:
    """SIGTERM: exit code 0 without waiting on an export of its own spans (none configured)."""
    running = Jaeger().start()
    proc = running.proc
    assert proc is not None
    started = time.monotonic()
    running.stop()
    assert proc.returncode == 0, running.tail()
    assert time.monotonic() - started < 5
