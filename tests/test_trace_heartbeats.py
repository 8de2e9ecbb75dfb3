"""Heartbeats carry a trace: the trace id is derived from what identifies the heartbeat, the
sender posts it (W3C traceparent and B3), a NoHeartbeat finding names the trace of the newest
failed heartbeat, and `TraceLookups` attaches what the backend says about it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from eventmesh_health.model import Finding, HeartbeatTrace, ObjectRef
from eventmesh_health.probing.health import classify
from eventmesh_health.probing.heartbeat import Hop, new_heartbeat, trace_context, trace_headers
from eventmesh_health.probing.tracelookup import TraceLookups
from eventmesh_health.probing.tracker import HopStats
from eventmesh_health.sources.tracing import TraceBackend
from tests.envtest.controlplane import free_port

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RUN = "serve-0-0123456789ab"


def test_trace_context_is_derived_and_distinct() -> None:
    a = trace_context("shop", Hop.BROKER, 7, run=RUN, namespace="prod")
    assert a == trace_context("shop", Hop.BROKER, 7, run=RUN, namespace="prod")
    assert len(a[0]) == 32 and len(a[1]) == 16
    others = {trace_context("shop", Hop.BROKER, 8, run=RUN, namespace="prod")[0],
              trace_context("shop", Hop.BROKER, 7, run=RUN, namespace="stage")[0],
              trace_context("shop", Hop.CHANNEL, 7, run=RUN)[0],
              trace_context("shop", Hop.BROKER, 7, run=RUN + "x", namespace="prod")[0]}
    assert a[0] not in others and len(others) == 4


def test_heartbeat_headers_carry_traceparent_and_b3() -> None:
    hb = new_heartbeat("shop", Hop.BROKER, 3, run=RUN, at=NOW, namespace="prod")
    headers = trace_headers(hb)
    trace_id, span_id = trace_context("shop", Hop.BROKER, 3, run=RUN, namespace="prod")
    assert headers["traceparent"] == f"00-{trace_id}-{span_id}-01"
    assert (headers["x-b3-traceid"], headers["x-b3-spanid"], headers["x-b3-sampled"]) == (
        trace_id, span_id, "1")


def _silent_stats(hop: Hop = Hop.BROKER) -> HopStats:
    return HopStats(application="shop", namespace="prod", hop=hop, now=NOW,
                    window=timedelta(minutes=5), received=10,
                    last_arrival=NOW - timedelta(minutes=2), window_sent=8,
                    window_unreceived=4, unreceived_streak=4,
                    streak_last_sent=NOW - timedelta(seconds=5),
                    streak_rounds=((RUN, 12), (RUN, 11)), window_judged=8,
                    window_isolated_unreceived=0)


def _no_heartbeat(traces: Any = None) -> Finding:
    verdict = classify("shop", "prod", {Hop.BROKER: _silent_stats()}, now=NOW,
                       since=NOW - timedelta(hours=1), hops=[Hop.BROKER], traces=traces)
    (finding,) = [f for f in verdict.findings if f.reason == "NoHeartbeat"]
    return finding


def test_no_heartbeat_finding_names_the_newest_failed_heartbeat_trace() -> None:
    finding = _no_heartbeat()
    newest = trace_context("shop", Hop.BROKER, 12, run=RUN, namespace="prod")[0]
    assert finding.trace == HeartbeatTrace(trace_id=newest)
    assert f"Trace of the newest failed heartbeat: {newest}." in finding.message
    body = finding.model_dump(mode="json", by_alias=True)
    assert body["trace"] == {"traceId": newest, "outcome": None, "stoppedAt": None,
                             "detail": None}


def test_a_looked_up_trace_is_kept_while_newer_heartbeats_fail() -> None:
    older = trace_context("shop", Hop.BROKER, 11, run=RUN, namespace="prod")[0]
    answer = HeartbeatTrace(trace_id=older, outcome="stopped",
                            stopped_at="channel dispatcher → broker filter", detail="HTTP 502")
    finding = _no_heartbeat({older: answer}.get)
    assert finding.trace == answer
    assert finding.message.endswith(
        f"Trace of the newest failed heartbeat: {older}, stops at channel dispatcher → "
        "broker filter: HTTP 502.")


def test_findings_without_trace_keep_their_json() -> None:
    finding = Finding(severity="Error", health="Unhealthy",
                      object=ObjectRef(api_version="v1", kind="Service", namespace="a",
                                       name="b"),
                      reason="NotFound", message="m", rootCause=True)
    assert "trace" not in finding.model_dump(mode="json", by_alias=True)
    assert "trace" not in json.loads(finding.model_dump_json(by_alias=True))


# -- lookups against a backend ------------------------------------------------------------------


@pytest.fixture
def jaeger_like() -> Iterator[tuple[str, dict[str, tuple[int, bytes]], list[str]]]:
    routes: dict[str, tuple[int, bytes]] = {}
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(self.path)
            status, body = routes.get(self.path, (404, b""))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes, asked
    finally:
        server.shutdown()
        server.server_close()


async def _ask(lookups: TraceLookups, trace_id: str) -> HeartbeatTrace | None:
    answered = asyncio.Event()
    lookups.want([trace_id], answered.set)
    await asyncio.wait_for(answered.wait(), 10)
    return lookups.known(trace_id)


async def test_lookup_attaches_where_a_real_trace_stops(
        jaeger_like: tuple[str, dict[str, tuple[int, bytes]], list[str]]) -> None:
    url, routes, asked = jaeger_like
    body = (FIXTURES / "v0.48-dead-dispatcher.jaeger.json").read_bytes()
    trace_id = json.loads(body)["data"][0]["traceID"]
    routes[f"/api/traces/{trace_id}"] = (200, body)
    lookups = TraceLookups(TraceBackend("jaeger", url))
    known = await _ask(lookups, trace_id)
    assert known is not None and known.outcome == "stopped"
    assert known.stopped_at == "broker ingress → channel dispatcher"
    lookups.want([trace_id], lambda: None)  # final: never asked again
    assert asked == [f"/api/traces/{trace_id}"]


async def test_lookup_of_a_missing_trace_is_asked_again_later(
        jaeger_like: tuple[str, dict[str, tuple[int, bytes]], list[str]]) -> None:
    url, _, asked = jaeger_like
    clock = [0.0]
    lookups = TraceLookups(TraceBackend("jaeger", url), retry_after=10,
                           clock=lambda: clock[0])
    known = await _ask(lookups, "1" * 32)
    assert known is not None and known.outcome == "unknown"
    assert "has no span of it" in (known.detail or "")
    lookups.want(["1" * 32], lambda: None)
    assert len(asked) == 1  # not before retry_after
    clock[0] = 11
    await _ask(lookups, "1" * 32)
    assert len(asked) == 2


async def test_unreachable_backend_is_a_detail_not_a_failure() -> None:
    lookups = TraceLookups(TraceBackend("zipkin", f"http://127.0.0.1:{free_port()}",
                                        timeout=2))
    known = await _ask(lookups, "2" * 32)
    assert known is not None and known.outcome == "unknown"
    assert (known.detail or "").startswith("cannot reach zipkin at http://127.0.0.1:")
