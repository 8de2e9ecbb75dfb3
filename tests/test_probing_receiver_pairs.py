"""The receiver as serve runs it: only pairs being probed, each at its own URL (the pair
token), dead letters age-limited, unsigned dead-letter fields harmless in logs, and a 503
`NoKeys` (retried by the mesh), not a traceback, before the keys are read. Over real HTTP
(uvicorn on loopback), as in test_probing_receiver."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import count

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from eventmesh_health.probing.heartbeat import Hop, to_binary
from eventmesh_health.probing.receiver import Receiver
from eventmesh_health.probing.signing import Keyring
from eventmesh_health.probing.tracker import ProbeMetrics, Tracker
from eventmesh_health.probing.triggers import new_pair_token
from tests.test_probing_receiver import RING, T0, Clock, serving, signed, verifier_of

# the pairs being probed, with the tokens their heartbeat Triggers' URLs carry
TOKENS = {("prod", "commerce"): new_pair_token(), ("stage", "commerce"): new_pair_token()}
_apps = count()


class Guarded:
    def __init__(self, receiver: Receiver, clock: Clock, url: str) -> None:
        self.receiver = receiver
        self.clock = clock
        self.http = httpx.Client(base_url=url, timeout=10)
        self.keyring: Keyring | None = RING

    def post(self, ns: str, app: str, headers: dict[str, str], body: bytes, *,
             token: str | None = None, endpoint: str = "heartbeat") -> httpx.Response:
        query = {"pair": token} if token is not None else {}
        return self.http.post(f"/{endpoint}/{ns}/{app}", headers=headers, content=body,
                              params=query)


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    clock = Clock()
    tracker = Tracker(window=timedelta(minutes=5), grace=timedelta(seconds=30), clock=clock)
    holder: list[Guarded] = []

    def keyring() -> Keyring:
        ring = holder[0].keyring
        if ring is None:
            raise LookupError("no keys yet")  # what the runner's KeySource does
        return ring

    receiver = Receiver(tracker, verifier_of(keyring),
                        pair_tokens=lambda ns, app: TOKENS.get((ns, app)))
    with serving(receiver) as url:
        holder.append(Guarded(receiver, clock, url))
        try:
            yield holder[0]
        finally:
            holder[0].http.close()


def token(ns: str, app: str = "commerce") -> str:
    return TOKENS[(ns, app)]


def fresh(seq: int, hop: Hop = Hop.INGRESS) -> tuple[dict[str, str], bytes]:
    return to_binary(signed("commerce", seq + 1000 * next(_apps), hop, at=T0))


def test_a_probed_pair_with_its_token_is_accepted(guarded: Guarded) -> None:
    guarded.clock.now = T0 + timedelta(milliseconds=100)
    response = guarded.post("prod", "commerce", *fresh(1), token=token("prod"))
    assert response.status_code == 202, response.text


def test_invented_namespaces_get_403_and_create_nothing(guarded: Guarded) -> None:
    """One captured heartbeat posted to 10,000 invented namespaces: 403 `NotProbed` each
    time (Knative does not retry a 403), no tracker series, no new /metrics lines."""
    guarded.clock.now = T0 + timedelta(milliseconds=100)
    headers, body = fresh(2)
    registry = CollectorRegistry()
    ProbeMetrics(guarded.receiver.tracker, guarded.receiver.rejected_counts).register(registry)
    lines_before = len(generate_latest(registry).splitlines())
    pairs_before = set(guarded.receiver.tracker.pairs())
    rejected_before = guarded.receiver.rejected_counts()["NotProbed"]
    for n in range(10_000):
        handled = guarded.receiver.handle_heartbeat(f"invented-{n}", "commerce",
                                                    headers.items(), body, token("prod"))
        assert handled[0] == 403, handled
    over_http = guarded.post("invented-x", "commerce", headers, body, token=token("prod"))
    assert over_http.status_code == 403 and over_http.json()["error"] == "NotProbed"
    assert set(guarded.receiver.tracker.pairs()) == pairs_before
    assert len(generate_latest(registry).splitlines()) == lines_before
    assert guarded.receiver.rejected_counts()["NotProbed"] == rejected_before + 10_001


def test_a_heartbeat_captured_in_one_namespace_is_refused_in_another(guarded: Guarded) -> None:
    """An ingress heartbeat (it fans out to every namespace) that arrived in `prod` and is
    posted again to `stage`'s URL, with prod's token or none, cannot count as arrived there."""
    guarded.clock.now = T0 + timedelta(milliseconds=100)
    headers, body = fresh(3)
    assert guarded.post("prod", "commerce", headers, body, token=token("prod")).status_code == 202
    stage_before = guarded.receiver.tracker.stats("commerce", "stage", Hop.INGRESS).received
    for forged in (token("prod"), None, "", token("stage")[:-1], "x" * 5000, "é"):
        response = guarded.post("stage", "commerce", headers, body, token=forged)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "BadPairToken"
    assert guarded.receiver.tracker.stats("commerce", "stage", Hop.INGRESS).received == \
        stage_before
    ok = guarded.post("stage", "commerce", headers, body, token=token("stage"))
    assert ok.status_code == 202  # the genuine fan-out delivery to stage still counts


def test_an_old_dead_letter_is_stale(guarded: Guarded) -> None:
    headers, body = fresh(4, Hop.CHANNEL)
    headers["ce-knativeerrorcode"] = "502"
    guarded.clock.now = T0 + timedelta(days=2)
    old = guarded.post("prod", "commerce", headers, body, token=token("prod"),
                       endpoint="deadletter")
    assert old.status_code == 403 and old.json()["error"] == "Stale", old.text
    guarded.clock.now = T0 + timedelta(minutes=3)
    recent = guarded.post("prod", "commerce", headers, body, token=token("prod"),
                          endpoint="deadletter")
    assert recent.status_code == 202, recent.text


def test_dead_letter_fields_cannot_forge_a_log_line(
        guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    headers, body = fresh(5, Hop.CHANNEL)
    forged = "oops\n2020-06-15 10:00:00 INFO eventmesh_health all heartbeats arrived\r\x1b[2J"
    headers["ce-knativeerrordata"] = base64.b64encode(forged.encode()).decode()
    headers["ce-knativeerrordest"] = "http://x/%E2%80%A8fake%0Aline"  # percent-encoded
    guarded.clock.now = T0 + timedelta(minutes=1)
    with caplog.at_level(logging.INFO, logger="eventmesh_health.probing"):
        response = guarded.post("prod", "commerce", headers, body, token=token("prod"),
                                endpoint="deadletter")
    assert response.status_code == 202, response.text
    logged = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert logged, caplog.text
    for text in (*logged, guarded.receiver.latest_dead_letter("commerce", "prod").describe()):
        assert not any(c in text for c in "\n\r\x1b\u2028"), repr(text)
        assert "\\n2020-06-15" in text  # escaped, still readable


def test_no_keys_yet_is_503_and_one_log_line(
        guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    headers, body = fresh(6)
    guarded.clock.now = T0 + timedelta(milliseconds=100)
    guarded.keyring = None
    try:
        with caplog.at_level(logging.DEBUG, logger="eventmesh_health.probing"):
            answers = [guarded.post("prod", "commerce", headers, body, token=token("prod"))
                       for _ in range(5)]
    finally:
        guarded.keyring = RING
    assert {a.status_code for a in answers} == {503}
    assert {a.json()["error"] for a in answers} == {"NoKeys"}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and not warnings[0].exc_info, caplog.text
    assert "Traceback" not in caplog.text
    assert guarded.post("prod", "commerce", headers, body, token=token("prod")).status_code \
        == 202  # the mesh's retry, once the keys are read


def _nothing(_: str, __: str) -> str | None:
    return None


@pytest.mark.parametrize("pair_tokens", [_nothing])
def test_nothing_is_accepted_when_nothing_is_probed(
        guarded: Guarded, pair_tokens: Callable[[str, str], str | None]) -> None:
    saved = guarded.receiver.pair_tokens
    guarded.receiver.pair_tokens = pair_tokens
    try:
        response = guarded.post("prod", "commerce", *fresh(7), token=token("prod"))
    finally:
        guarded.receiver.pair_tokens = saved
    assert response.status_code == 403
