"""The heartbeat receiver over real HTTP: mounted into serve's own API app, served by
uvicorn on a loopback port, fed real CloudEvents with httpx. Every kind of bad request
gets its 4xx, is counted, and changes nothing; hypothesis: no request gets a 5xx."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count

import h11
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from eventmesh_health.probing.heartbeat import (
    Heartbeat,
    Hop,
    new_heartbeat,
    to_binary,
    to_legacy,
    to_structured,
)
from eventmesh_health.probing.receiver import Receiver, ReceiverConfig
from eventmesh_health.probing.signing import Freshness, Key, Keyring, Verifier
from eventmesh_health.probing.tracker import ProbeMetrics, Tracker
from eventmesh_health.serve.api import create_app, embedded_server
from eventmesh_health.serve.metrics import Metrics
from eventmesh_health.serve.state import HealthState

T0 = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
KEY = Key("k1", b"k" * 32)
RING = Keyring(KEY)
RUN = "checker-0-abc"
NS = "prod"
MAX_BODY = 4096
_apps = count()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Served:
    def __init__(self, receiver: Receiver, clock: Clock, url: str) -> None:
        self.receiver = receiver
        self.clock = clock
        self.tracker = receiver.tracker
        self.http = httpx.Client(base_url=url, timeout=10)


@contextlib.contextmanager
def serving(receiver: Receiver) -> Iterator[str]:
    """serve's API app with the receiver's router, under uvicorn in a thread: its URL."""
    app = create_app(HealthState(), Metrics())
    app.include_router(receiver.router)
    server = embedded_server(app, host="127.0.0.1", port=0, log_level="warning")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def verifier_of(keyring: Keyring | Callable[[], Keyring]) -> Verifier:
    return Verifier(keyring, Freshness(max_age=timedelta(minutes=5),
                                       max_skew=timedelta(seconds=30)))


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    clock = Clock()
    tracker = Tracker(window=timedelta(minutes=5), grace=timedelta(seconds=30), clock=clock)
    receiver = Receiver(tracker, verifier_of(RING), config=ReceiverConfig(max_body=MAX_BODY))
    with serving(receiver) as url:
        result = Served(receiver, clock, url)
        try:
            yield result
        finally:
            result.http.close()


def new_app() -> str:
    """A fresh application name per test: the tracker state of the others is not touched."""
    return f"app-{next(_apps)}"


def signed(app: str, seq: int = 1, hop: Hop = Hop.INGRESS, at: datetime = T0,
           namespace: str | None = None) -> Heartbeat:
    return RING.sign(new_heartbeat(app, hop, seq, run=RUN, at=at, namespace=namespace))


def post(s: Served, app: str, headers: dict[str, str], body: bytes, ns: str = NS,
         endpoint: str = "heartbeat") -> httpx.Response:
    return s.http.post(f"/{endpoint}/{ns}/{app}", headers=headers, content=body)


def snapshot(s: Served) -> object:
    """Everything the tracker knows, to compare before and after a rejected request."""
    now = s.clock.now
    return (s.tracker.pairs(), s.tracker.sent_totals(),
            [s.tracker.pair_stats(app, ns, now) for app, ns in s.tracker.pairs()])


@pytest.mark.parametrize("encode", [to_binary, to_structured], ids=["binary", "structured"])
def test_heartbeats_are_received_with_their_latency(served, encode):
    app = new_app()
    for seq in range(1, 4):
        hb = signed(app, seq, at=T0 + seq * timedelta(seconds=10))
        served.clock.now = hb.time + timedelta(milliseconds=200)  # 200 ms through the mesh
        response = post(served, app, *encode(hb))
        assert response.status_code == 202, response.text
        assert response.json() == {"status": "Accepted", "arrival": "InOrder",
                                   "hop": "ingress", "sequence": seq}
    stats = served.tracker.stats(app, NS, Hop.INGRESS)
    assert (stats.received, stats.lost, stats.duplicates) == (3, 0, 0)
    assert stats.latency.p99 == pytest.approx(0.2)


def test_legacy_heartbeat_as_the_event_service_forwards_it(served):
    app = new_app()
    hb = signed(app)
    legacy = json.loads(to_legacy(hb)[1])
    headers = {
        "Ce-Specversion": "1.0", "Ce-Id": legacy["event-id"], "Ce-Source": app,
        "Ce-Type": legacy["event-type"], "Ce-Eventtypeversion": "v1",
        "Ce-Time": "2020-06-15T10:00:00Z", "Content-Type": "application/json",
    }
    served.clock.now = T0 + timedelta(seconds=1)
    response = post(served, app, headers, json.dumps(legacy["data"]).encode())
    assert response.status_code == 202, response.text
    assert served.tracker.stats(app, NS, Hop.INGRESS).received == 1


def test_broker_probe_and_out_of_order(served):
    app = new_app()
    served.clock.now = T0 + timedelta(seconds=5)
    for seq, expected in [(1, "InOrder"), (3, "InOrder"), (2, "OutOfOrder")]:
        response = post(served, app, *to_binary(signed(app, seq, Hop.BROKER, namespace=NS)))
        assert response.json()["arrival"] == expected
    stats = served.tracker.stats(app, NS, Hop.BROKER)
    assert (stats.received, stats.out_of_order) == (3, 1)


def test_a_redelivered_heartbeat_is_a_duplicate_and_changes_nothing_else(served):
    app = new_app()
    served.clock.now = T0 + timedelta(seconds=1)
    hb = signed(app)
    headers, body = to_binary(hb)
    assert post(served, app, headers, body).json()["status"] == "Accepted"
    before = served.tracker.stats(app, NS, Hop.INGRESS)
    served.clock.now = T0 + timedelta(seconds=2)
    for encode in (to_binary, to_structured):  # the same event (id), either mode
        response = post(served, app, *encode(hb))
        assert response.status_code == 202
        assert response.json()["status"] == "Duplicate"
    after = served.tracker.stats(app, NS, Hop.INGRESS)
    assert after.duplicates == 2
    assert (after.received, after.last_arrival, after.latency) == (
        before.received, before.last_arrival, before.latency)
    # the same event delivered to another namespace (fan-out) is no duplicate
    assert post(served, app, headers, body, ns="stage").json()["status"] == "Accepted"


def test_a_heartbeat_posted_again_after_the_redelivery_window_is_a_rejected_replay(served):
    app = new_app()
    served.clock.now = T0 + timedelta(seconds=1)
    hb = signed(app)
    headers, body = to_binary(hb)
    assert post(served, app, headers, body).json()["status"] == "Accepted"
    before = served.tracker.stats(app, NS, Hop.INGRESS)
    rejected = served.receiver.rejected_counts()["Replayed"]
    window = served.receiver.config.redelivery_window
    served.clock.now = T0 + timedelta(seconds=1) + window + timedelta(seconds=1)
    response = post(served, app, headers, body)
    assert response.status_code == 403
    assert response.json()["error"] == "Replayed"
    assert "a replay" in response.json()["detail"]
    assert served.receiver.rejected_counts()["Replayed"] == rejected + 1
    after = served.tracker.stats(app, NS, Hop.INGRESS)
    assert (after.received, after.duplicates, after.last_arrival) == (
        before.received, before.duplicates, before.last_arrival)


def _forged(app: str) -> Heartbeat:
    return Keyring(Key(KEY.id, b"f" * 32)).sign(new_heartbeat(app, Hop.INGRESS, 1, run=RUN,
                                                              at=T0))


def rejection_cases(app: str) -> list[tuple[str, dict[str, str], bytes, str, int, str]]:
    """(id, headers, body, path application, status, error)."""
    good_h, good_b = to_binary(signed(app))
    unsigned = to_binary(signed(app).unsigned())
    other_key = to_binary(Keyring(Key("k9", b"k" * 32)).sign(signed(app).unsigned()))
    stale = to_binary(signed(app, at=T0 - timedelta(minutes=6)))
    future = to_binary(signed(app, at=T0 + timedelta(minutes=1)))
    other_ns = to_binary(signed(app, 1, Hop.BROKER, namespace="stage"))
    not_ours = {**good_h, "ce-type": "com.example.order.created"}
    ce_json = {"content-type": "application/cloudevents+json"}
    return [
        ("forged", *to_binary(_forged(app)), app, 401, "BadSignature"),
        ("altered", {**good_h, "ce-emhseq": "2"}, good_b, app, 401, "BadSignature"),
        ("unsigned", *unsigned, app, 401, "Unsigned"),
        ("unknown-key", *other_key, app, 401, "UnknownKey"),
        ("stale", *stale, app, 403, "Stale"),
        ("future", *future, app, 403, "FromFuture"),
        ("other-application", good_h, good_b, app + "-x", 422, "Misrouted"),
        ("other-namespace", *other_ns, app, 422, "Misrouted"),
        ("invalid-name", good_h, good_b, "Bad_Name", 422, "InvalidName"),
        ("not-a-cloudevent", {"content-type": "application/json"}, b"{}", app, 400,
         "Malformed"),
        ("bad-json", ce_json, b"{not json", app, 400, "Malformed"),
        ("batch", {"content-type": "application/cloudevents-batch+json"}, b"[]", app, 415,
         "UnsupportedMediaType"),
        ("not-a-heartbeat", not_ours, good_b, app, 422, "NotAHeartbeat"),
        ("oversized", good_h, b"x" * (MAX_BODY + 1), app, 413, "TooLarge"),
    ]


@pytest.mark.parametrize("case", [c[0] for c in rejection_cases("x")])
def test_rejected_counted_and_changing_nothing(served, case):
    app = new_app()
    served.clock.now = T0 + timedelta(seconds=1)
    # a tracked pair with history, which the rejected request must not touch
    assert post(served, app, *to_binary(signed(app, 5))).status_code == 202
    _, headers, body, path_app, status, error = next(
        c for c in rejection_cases(app) if c[0] == case)
    before_counts = served.receiver.rejected_counts()
    before = snapshot(served)
    response = post(served, path_app, headers, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == error and response.json()["detail"]
    after_counts = served.receiver.rejected_counts()
    assert after_counts[error] == before_counts[error] + 1
    assert sum(after_counts.values()) == sum(before_counts.values()) + 1
    assert snapshot(served) == before
    assert served.receiver.internal_errors == 0


def test_oversized_streamed_body_is_cut_off(served):
    app = new_app()
    headers, _ = to_binary(signed(app))

    def chunks() -> Iterator[bytes]:
        for _ in range(100):  # 100 x 1 KiB, no Content-Length: chunked
            yield b"x" * 1024

    before = served.receiver.rejected_counts()["TooLarge"]
    response = served.http.post(f"/heartbeat/{NS}/{app}", headers=headers, content=chunks())
    assert response.status_code == 413
    assert served.receiver.rejected_counts()["TooLarge"] == before + 1


def test_dead_letters_are_recorded_once(served):
    app = new_app()
    hb = signed(app, 7, Hop.CHANNEL)
    headers, body = to_binary(hb)
    headers.update({
        "ce-knativeerrordest": f"http://eventmesh-health.kyma-system/heartbeat/{NS}/{app}",
        "ce-knativeerrorcode": "502",
        "ce-knativeerrordata": base64.b64encode(b"upstream connect error").decode(),
    })
    served.clock.now = T0 + timedelta(minutes=30)  # dead letters may come late
    response = post(served, app, headers, body, endpoint="deadletter")
    assert response.status_code == 202 and response.json() == {"status": "Recorded"}
    letter = served.receiver.latest_dead_letter(app, NS)
    assert letter is not None
    assert (letter.hop, letter.sequence, letter.error_code) == (Hop.CHANNEL, 7, 502)
    assert letter.error_data == "upstream connect error"
    assert "HTTP 502" in letter.describe()
    assert post(served, app, headers, body, endpoint="deadletter").json() == {
        "status": "Duplicate"}
    assert served.tracker.stats(app, NS, Hop.CHANNEL).dead_letters == 1
    assert served.tracker.stats(app, NS, Hop.CHANNEL).received == 0
    unsigned = to_binary(replace(hb, signature=None))
    assert post(served, app, *unsigned, endpoint="deadletter").status_code == 401


def test_probe_metrics_and_the_rest_of_the_api(served):
    registry = CollectorRegistry()
    ProbeMetrics(served.tracker, served.receiver.rejected_counts).register(registry)
    text = generate_latest(registry).decode()
    assert 'eventmesh_heartbeats_rejected_total{reason="BadSignature"}' in text
    assert served.http.get("/openapi.json").json()["paths"]["/heartbeat/{namespace}/{application}"]
    assert served.http.get("/healthz").status_code == 200
    response = served.http.get(f"/heartbeat/{NS}/x")  # not a GET endpoint: 4xx, JSON
    assert 400 <= response.status_code < 500 and response.json()["error"]


HEADERS = st.dictionaries(
    st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time",
                     "ce-eventtypeversion", "ce-emhrun", "ce-emhseq", "ce-emhhop",
                     "ce-emhsig", "ce-emhns", "content-type", "ce-x", "transfer-encoding"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
    max_size=12,
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
        st.sampled_from(["specversion", "id", "source", "type", "time", "data", "emhseq",
                         "emhsig", "eventtypeversion", "data_base64"]),
        st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.integers())),
        max_size=10)),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(headers=HEADERS, body=BODIES, endpoint=st.sampled_from(["heartbeat", "deadletter"]),
       path=st.sampled_from(["prod/app-h", "Prod/app-h", "prod/-x-", "prod/a.b"]))
def test_no_request_gets_a_5xx(served, headers, body, endpoint, path):
    served.clock.now = T0
    before = snapshot(served)
    try:
        response = served.http.post(f"/{endpoint}/{path}", headers=headers, content=body)
    except (httpx.HTTPError, h11.LocalProtocolError):
        return  # a framing the client itself refuses to send
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]
        assert snapshot(served) == before
    assert served.receiver.internal_errors == 0


@pytest.mark.parametrize("framing", [
    b"Content-Length: abc\r\n\r\n",
    b"Content-Length: 99999999999999999999\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_broken_framing_is_a_4xx(served, framing):
    host, port = served.http.base_url.host, served.http.base_url.port
    assert port is not None
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /heartbeat/prod/app-raw HTTP/1.1\r\nHost: x\r\n" + framing)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), status_line
