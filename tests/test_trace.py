"""`trace` without a mesh: recorded traces (tests/fixtures/traces/README.md names their
sources) mapped to hops, the backends' clients against a loopback HTTP server answering
badly, and the CLI's usage errors and exit codes."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from eventmesh_health.analysis.trace import diagnose, hop_of_service, verdict_json
from eventmesh_health.cli import main
from eventmesh_health.outputs.trace import trace_lines
from eventmesh_health.sources.tracing import (
    TraceBackend,
    TraceBackendError,
    TraceNotFound,
    normalise_trace_id,
    parse_jaeger,
    parse_zipkin,
)
from tests.envtest.controlplane import free_port

FIXTURES = Path(__file__).parent / "fixtures" / "traces"


def zipkin(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def judge_zipkin(name: str) -> dict[str, Any]:
    spans = parse_zipkin(zipkin(name))
    return verdict_json(diagnose(spans[0].trace_id, spans))


# -- hop naming per release ------------------------------------------------------------------


@pytest.mark.parametrize(("service", "hop"), [
    ("broker.ingress", "ingress"),  # >= 1.19 (OTel component name)
    ("broker.filter", "filter"),
    ("inmemorychannel.dispatcher", "dispatcher"),
    ("broker-ingress.knative-eventing", "ingress"),  # 0.16 - 1.18
    ("broker-filter.knative-eventing", "filter"),
    ("default-broker.shop", "ingress"),  # 0.11 - 0.13 (Kyma 1.x)
    ("default-broker-filter.shop", "filter"),
    ("imc-dispatcher", "dispatcher"),
    ("natss-ch-dispatcher", "dispatcher"),
    ("commerce-mock-event-service", "event-service"),
    ("order-service", "subscriber"),
])
def test_hop_of_service(service: str, hop: str) -> None:
    assert hop_of_service(service) == hop


# -- recorded traces ---------------------------------------------------------------------------


def test_knative_docs_trace_is_delivered_to_both_subscribers() -> None:
    verdict = judge_zipkin("knative-docs-0.9-zipkin.json")
    assert verdict["outcome"] == "delivered", verdict["summary"]
    assert verdict["deliveredTo"] == ["transformer", "logger"]
    sender = verdict["path"][0]
    assert sender["hop"] == "sender"
    ingress = sender["deliveries"][0]["next"]
    assert (ingress["hop"], ingress["statusCode"]) == ("ingress", 202)
    dispatcher = ingress["deliveries"][0]["next"]
    assert dispatcher["hop"] == "dispatcher"
    filters = [d["next"] for d in dispatcher["deliveries"] if d["targetHop"] == "filter"]
    # The logger Trigger filters on the transformer's reply type: the original event passes
    # only the transformer's filter; the reply passes only the logger's.
    assert [bool(f["deliveries"]) for f in filters] == [True, False]


def test_v012_filter_matching_nothing_stops_at_the_filter() -> None:
    verdict = judge_zipkin("v0.12-filter-no-match.zipkin.json")
    assert verdict["outcome"] == "stopped"
    assert [s["hop"] for s in verdict["stops"]] == ["broker filter"]
    assert "matched no Trigger" in verdict["stops"][0]["reason"]
    assert "/triggers/shop/orders/" in verdict["stops"][0]["reason"]


def test_v012_subscriber_503_names_the_subscriber_not_the_filter_500() -> None:
    verdict = judge_zipkin("v0.12-subscriber-503.zipkin.json")
    assert verdict["outcome"] == "stopped"
    (stop,) = verdict["stops"]
    assert stop["hop"] == "broker filter → subscriber"
    assert stop["reason"].startswith("HTTP 503 from http://order-service.shop")


def test_v012_dead_dispatcher_stops_between_ingress_and_channel() -> None:
    verdict = judge_zipkin("v0.12-dead-dispatcher.zipkin.json")
    (stop,) = verdict["stops"]
    assert stop["hop"] == "broker ingress → channel dispatcher"
    assert "connection refused" in stop["reason"]


@pytest.mark.parametrize(("name", "outcome", "stop"), [
    ("v0.48-delivered", "delivered", None),
    ("v0.48-filter-no-match", "stopped", "broker filter"),
    ("v0.48-dead-letter", "stopped", "broker filter → subscriber"),
    ("v0.48-dead-dispatcher", "stopped", "broker ingress → channel dispatcher"),
])
def test_recorded_knative_v1_traces(name: str, outcome: str, stop: str | None) -> None:
    """Jaeger's answers for the real v1 mesh's traces (tests/test_trace_real.py records them)."""
    spans = parse_jaeger(json.loads((FIXTURES / f"{name}.jaeger.json").read_text()))
    verdict = verdict_json(diagnose(spans[0].trace_id, spans))
    assert verdict["outcome"] == outcome, verdict["summary"]
    assert [s["hop"] for s in verdict["stops"]] == ([stop] if stop else [])


def test_empty_and_foreign_spans_cannot_tell() -> None:
    verdict = diagnose("0af7651916cd43dd8448eb211c80319c", [])
    assert verdict.outcome == "unknown"
    spans = parse_zipkin(zipkin("knative-docs-0.9-zipkin.json"))
    assert diagnose("0af7651916cd43dd8448eb211c80319c", spans).outcome == "unknown"


def test_text_report_names_each_hop_and_the_stop() -> None:
    spans = parse_zipkin(zipkin("v0.12-dead-dispatcher.zipkin.json"))
    text = "\n".join(trace_lines(diagnose(spans[0].trace_id, spans)))
    assert "✗ stopped" in text
    assert "broker ingress" in text and "default-broker.shop" in text
    assert ("Stopped at broker ingress → channel dispatcher: Post http://default-kne-trigger-"
            "kn-channel.shop.svc.cluster.local/: dial tcp 10.96.12.7:80: connect: connection "
            "refused") in text.splitlines()


@pytest.mark.parametrize("body", [
    {}, {"data": "x"}, {"data": [{"spans": [1], "processes": {}}]},
    {"data": [{"spans": [{"traceID": "a"}], "processes": {}}]},
    {"data": [{"spans": [{"traceID": "a", "spanID": "b", "startTime": "soon"}],
               "processes": {}}]},
])
def test_malformed_jaeger_answers_are_one_line_errors(body: Any) -> None:
    with pytest.raises(TraceBackendError) as err:
        parse_jaeger(body)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("body", [{}, [1], [{"id": "x"}], [{"traceId": "a", "id": "b"}]])
def test_malformed_zipkin_answers_are_one_line_errors(body: Any) -> None:
    with pytest.raises(TraceBackendError):
        parse_zipkin(body)


@pytest.mark.parametrize(("value", "expected"), [
    ("4BF92F3577B34DA6A3CE929D0E0E4736", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
     "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("b3b82f55b531912f", "b3b82f55b531912f"),
])
def test_trace_ids(value: str, expected: str) -> None:
    assert normalise_trace_id(value) == expected


@pytest.mark.parametrize("value", ["", "xyz", "0" * 32, "1" * 31, "../../etc/passwd"])
def test_bad_trace_ids(value: str) -> None:
    with pytest.raises(ValueError):
        normalise_trace_id(value)


# -- a backend that answers badly --------------------------------------------------------------


class _Bad(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, bytes]]] = {}
    auth: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.auth.append(self.headers.get("Authorization"))
        path = self.path.split("?")[0]
        status, body = next((v for k, v in self.routes.items() if path.startswith(k)),
                            (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def bad_backend() -> Iterator[tuple[str, dict[str, tuple[int, bytes]]]]:
    routes: ClassVar[dict[str, tuple[int, bytes]]] = {}
    handler = type("Handler", (_Bad,), {"routes": routes, "auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["trace", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(("route", "answer", "code", "message"), [
    ("/none", (200, b""), 2, "has no such trace (HTTP 404)"),
    ("/api/traces/", (500, b"storage down\n"), 3, "answered HTTP 500: storage down"),
    ("/api/traces/", (200, b"<html>login</html>"), 3, "not JSON"),
    ("/api/traces/", (200, b'{"data": []}'), 2, "has no spans of trace"),
    ("/api/traces/", (200, b'{"data": [{"spans": "x"}]}'), 3, "malformed Jaeger answer"),
    ("/api/traces/", (200, b"[" * 100_000), 3, "not JSON"),
])
def test_backend_failures_are_one_line_and_an_exit_code(
        bad_backend: tuple[str, dict[str, tuple[int, bytes]]], route: str,
        answer: tuple[int, bytes], code: int, message: str) -> None:
    url, routes = bad_backend
    routes[route] = answer
    exit_code, out = cli("--trace-id", TRACE, "--url", url)
    assert exit_code == code, out
    assert message in out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_a_huge_answer_is_refused(bad_backend: tuple[str, dict[str, tuple[int, bytes]]]) -> None:
    url, routes = bad_backend
    routes["/api/v2/trace/"] = (200, b"[" + b" " * 4096 + b"]")
    with pytest.raises(TraceBackendError, match="more than 1024 bytes"):
        TraceBackend("zipkin", url, max_bytes=1024).trace(TRACE)


def test_unreachable_backend() -> None:
    exit_code, out = cli("--trace-id", TRACE, "--url", f"http://127.0.0.1:{free_port()}",
                         "--backend", "zipkin")
    assert exit_code == 3
    assert out.startswith("error: cannot reach zipkin at http://127.0.0.1:")


def test_zipkin_404_is_not_found(bad_backend: tuple[str, dict[str, tuple[int, bytes]]]) -> None:
    url, _ = bad_backend
    with pytest.raises(TraceNotFound):
        TraceBackend("zipkin", url).trace(TRACE)


def test_event_id_not_recorded_says_so(
        bad_backend: tuple[str, dict[str, tuple[int, bytes]]]) -> None:
    url, routes = bad_backend
    routes["/api/services"] = (200, b'{"data": ["broker.ingress"]}')
    routes["/api/traces"] = (200, b'{"data": []}')
    exit_code, out = cli("order-42", "--url", url)
    assert exit_code == 2
    assert "Knative >= 1.19 (OpenTelemetry) do not" in out
    assert "--trace-id" in out


def test_event_id_found_through_its_tag(
        bad_backend: tuple[str, dict[str, tuple[int, bytes]]]) -> None:
    """v0.15-1.18 tag spans with messaging.message_id: the search finds the trace."""
    url, routes = bad_backend
    docs = zipkin("knative-docs-0.9-zipkin.json")
    docs[0]["tags"]["messaging.message_id"] = "order-42"
    body = json.dumps([docs]).encode()
    routes["/api/v2/traces"] = (200, body)
    routes["/api/v2/trace/"] = (200, json.dumps(docs).encode())
    exit_code, out = cli("order-42", "--url", url, "--backend", "zipkin", "-o", "json")
    assert exit_code == 0, out
    assert json.loads(out)["traceId"] == docs[0]["traceId"]


@pytest.mark.parametrize("args", [
    [], ["--trace-id", TRACE], ["e1", "--trace-id", TRACE, "--url", "http://x"],
    ["--trace-id", "nope", "--url", "http://127.0.0.1:1"],
    ["--trace-id", TRACE, "--url", "ftp://x"],
])
def test_usage_errors(args: list[str]) -> None:
    exit_code, out = cli(*args)
    assert exit_code == 2
    assert "error" in out.lower()


def test_a_partial_trace_says_it_may_be_incomplete() -> None:
    """Spans arrive at the backend in batches: without the dispatcher's retry spans the
    filter's later visits hang from parents the backend does not have (yet)."""
    body = json.loads((FIXTURES / "v0.48-dead-letter.jaeger.json").read_text())
    spans = parse_jaeger(body)
    dispatcher_attempts = {s.span_id for s in spans if s.service == "inmemorychannel.dispatcher"
                           and s.kind == "client" and "/triggers/" in s.url}
    kept = [s for s in spans if s.span_id not in sorted(dispatcher_attempts)[:2]]
    verdict = diagnose(spans[0].trace_id, kept)
    assert verdict.orphans >= 1
    assert "the trace may be incomplete" in "\n".join(trace_lines(verdict))
    assert diagnose(spans[0].trace_id, spans).orphans == 0


def test_the_readme_example_is_the_recorded_trace_output() -> None:
    """README "Traces": the example is what `trace` printed for the real v1.21 trace that
    tests/test_trace_real.py recorded (v0.48-dead-letter), line for line."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Traces: `trace`", 1)[1]
    block = section.split("```\n$ ", 1)[1].split("```", 1)[0].splitlines()
    block[0] = "$ " + block[0]
    assert block[0].startswith("$ eventmesh-health trace --trace-id ")
    assert block[-1] == "(exit 1)"
    spans = parse_jaeger(json.loads((FIXTURES / "v0.48-dead-letter.jaeger.json").read_text()))
    assert block[1:-1] == trace_lines(diagnose(spans[0].trace_id, spans))


@pytest.mark.parametrize(("name", "outcome", "stop"), [
    ("v0.12-delivered", "delivered", None),
    ("v0.12-filter-no-match", "stopped", "broker filter"),
    ("v0.12-subscriber-503", "stopped", "broker filter → subscriber"),
    ("v0.12-dead-dispatcher", "stopped", "broker ingress → channel dispatcher"),
])
def test_recorded_kyma1_traces(name: str, outcome: str, stop: str | None) -> None:
    """Jaeger's answers for the real Knative v0.12 processes' Zipkin spans
    (tests/test_trace_v012.py records them)."""
    spans = parse_jaeger(json.loads((FIXTURES / f"{name}.jaeger.json").read_text()))
    assert {s.service.split(".")[0] for s in spans} >= {"default-broker"}
    verdict = verdict_json(diagnose(spans[0].trace_id, spans))
    assert verdict["outcome"] == outcome, verdict["summary"]
    assert [s["hop"] for s in verdict["stops"]] == ([stop] if stop else [])


def test_credentials_in_the_url_are_sent_but_never_shown(
        bad_backend: tuple[str, dict[str, tuple[int, bytes]]]) -> None:
    url, routes = bad_backend
    routes["/api/traces/"] = (503, b"down")
    with_secret = url.replace("http://", "http://reader:s3cr%40t@")
    exit_code, out = cli("--trace-id", TRACE, "--url", with_secret)
    assert exit_code == 3 and "answered HTTP 503" in out
    assert "s3cr" not in out and "reader" not in out
    handler = next(iter(_Bad.__subclasses__()[-1:]))
    assert handler.auth[-1] == "Basic " + base64.b64encode(b"reader:s3cr@t").decode()
    exit_code, out = cli("--trace-id", TRACE, "--url", "http://reader:s3cr3t@[::1")
    assert exit_code == 2 and "s3cr3t" not in out, out
