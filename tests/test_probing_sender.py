"""The heartbeat sender: what goes where, signed, recorded; failures counted, never raised;
keys from a Secret, reloaded, the last good keyring kept."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from eventmesh_health.probing import (
    Hop,
    Tracker,
    Verifier,
    heartbeat_from_event,
    keyring_from_secret_data,
    parse_http,
)
from eventmesh_health.probing.sender import KeySource, SendConfig, Sender, jittered
from tests.emulator.http import Abort, HttpServer, Request, Response
from tests.envtest.controlplane import free_port

KEY = base64.b64encode(b"k" * 32).decode()
KEYRING = keyring_from_secret_data({"k1": KEY})


class Sink:
    """A real HTTP server on loopback that records every request; answers `status`, and
    closes the connection without an answer for paths containing `fail`."""

    def __init__(self, status: int = 202, fail: str | None = None,
                 handle: Any = None) -> None:
        self.requests: list[Request] = []
        self.status, self.fail, self._handle = status, fail, handle
        self.server = HttpServer(self._serve)

    async def _serve(self, request: Request) -> Response:
        self.requests.append(request)
        if self._handle is not None:
            return await self._handle(request)
        if self.fail and self.fail in request.path:
            raise Abort
        return Response(self.status)

    async def __aenter__(self) -> Sink:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def config(self, **overrides: Any) -> SendConfig:
        options: dict[str, Any] = {
            "event_service_url_template": self.url + "/es/{app}/v1/events",
            "channel_url_template": self.url + "/ch/{app}",
            "broker_url_template": self.url + "/broker/{namespace}",
        }
        options.update(overrides)
        return SendConfig(**options)

    def paths(self) -> list[str]:
        return sorted(r.path for r in self.requests)


async def test_one_round_ingress_channel_and_one_broker_probe_per_namespace() -> None:
    tracker = Tracker()
    async with Sink() as sink:
        sender = Sender(tracker, lambda: KEYRING, "run-1", config=sink.config())
        try:
            await sender.send_application("commerce-mock", ["stage", "prod"])
            assert sink.paths() == ["/broker/prod", "/broker/stage", "/ch/commerce-mock",
                                    "/es/commerce-mock/v1/events"]
            verifier = Verifier(KEYRING)
            for request in sink.requests:
                if request.path.endswith("/v1/events"):
                    body = json.loads(request.body)
                    assert body["event-type"] == "eventmesh-health.heartbeat"
                    assert body["event-type-version"] == "v1"
                    assert body["data"]["emhhop"] == "ingress"
                    continue
                hb = heartbeat_from_event(parse_http(request.headers.items(), request.body))
                verifier.check_signature(hb)
                assert hb.application == "commerce-mock" and hb.run == "run-1"
                assert hb.sequence == 1
                if hb.hop is Hop.BROKER:
                    assert request.path.endswith(hb.namespace or "?")
            assert tracker.sent_totals() == {("commerce-mock", Hop.INGRESS): 1,
                                             ("commerce-mock", Hop.CHANNEL): 1,
                                             ("commerce-mock", Hop.BROKER): 2}
            second = await sender.send_application("commerce-mock", ["stage"])
            # one sequence per round, on every hop: sequences name rounds across hops
            assert {(hb.hop, hb.namespace, hb.sequence) for hb in second} == {
                (Hop.INGRESS, None, 2), (Hop.CHANNEL, None, 2), (Hop.BROKER, "stage", 2)}
            assert sender.failures == {}
        finally:
            await sender.close()


async def test_channel_address_from_the_channel_and_binary_to_the_adapter() -> None:
    async with Sink() as sink:
        config = SendConfig(adapter_url_template=sink.url + "/adapter/{app}",
                            broker_url_template=sink.url + "/b/{namespace}")
        sender = Sender(Tracker(), lambda: KEYRING, "run-1", config=config)
        try:
            await sender.send_application("app", [], channel_url=sink.url + "/app-kn-channel")
        finally:
            await sender.close()
    assert sink.paths() == ["/adapter/app", "/app-kn-channel"]
    assert all(r.headers["ce-specversion"] == "1.0" for r in sink.requests)


@pytest.mark.parametrize("status", [500, 404])
async def test_failures_are_counted_and_recorded_as_sent_never_raised(status: int) -> None:
    tracker = Tracker()
    async with Sink(status=status, fail="broker/prod") as sink:
        sender = Sender(tracker, lambda: KEYRING, "run-1", config=sink.config())
        try:
            await sender.send_application("a", ["stage", "prod"])
        finally:
            await sender.close()
    assert sender.failures[("a", Hop.BROKER)] == 2  # one without an answer, one non-2xx
    assert sender.failures[("a", Hop.INGRESS)] == 1
    assert tracker.sent_totals()[("a", Hop.BROKER)] == 2


async def test_an_unreachable_hop_is_a_failure_within_the_timeout() -> None:
    port = free_port()  # nothing listens there
    config = SendConfig(event_service_url_template=f"http://127.0.0.1:{port}/{{app}}",
                        channel_url_template=f"http://127.0.0.1:{port}/ch",
                        broker_url_template=f"http://127.0.0.1:{port}/{{namespace}}",
                        timeout=2.0)
    tracker = Tracker()
    sender = Sender(tracker, lambda: KEYRING, "run-1", config=config)
    try:
        sent = await asyncio.wait_for(sender.send_application("a", ["stage"]), 10)
    finally:
        await sender.close()
    assert len(sent) == 3
    assert sender.failures == {("a", Hop.INGRESS): 1, ("a", Hop.CHANNEL): 1,
                               ("a", Hop.BROKER): 1}


async def test_nothing_is_sent_without_keys() -> None:
    async with Sink() as sink:
        sender = Sender(Tracker(), lambda: None, "run-1", config=sink.config())
        try:
            assert await sender.send_application("a", ["stage"]) == []
        finally:
            await sender.close()
    assert sink.requests == []


async def test_keys_reloaded_and_the_last_good_keyring_kept() -> None:
    data: list[Mapping[str, str] | Exception] = [
        {"k1": KEY}, ValueError("no"), {"k1": KEY, "k2": base64.b64encode(b"z" * 32).decode()}]

    async def read() -> Mapping[str, str]:
        item = data.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    keys = KeySource(read, reload=timedelta(hours=1))
    with pytest.raises(LookupError):
        keys.get()
    assert (await keys.refresh()) is not None and keys.get().current.id == "k1"
    assert (await keys.refresh()).current.id == "k1"  # type: ignore[union-attr]  # not due
    await keys.refresh(force=True)
    assert keys.errors == 1 and keys.get().current.id == "k1"  # the last good one
    await keys.refresh(force=True)
    assert keys.get().current.id == "k2"  # rotated: the greatest id signs


def test_jitter_stays_within_bounds() -> None:
    values = [jittered(10.0, 0.1) for _ in range(200)]
    assert all(9.0 <= v <= 11.0 for v in values) and len(set(values)) > 1


# --- the runner's merge of data-plane verdicts into the report --------------------------


def _report(ns_health: str) -> Any:
    from eventmesh_health.model import MeshReport

    return MeshReport.model_validate({
        "healthy": ns_health == "Healthy", "health": ns_health,
        "system": {"health": "Healthy", "findings": []},
        "applications": [{"name": "a", "health": ns_health, "state": 4, "namespaces": [
            {"name": "stage", "health": ns_health, "state": 4, "findings": []},
            {"name": "prod", "health": "Healthy", "state": 4, "findings": []}]}]})


def test_merge_takes_the_worst_and_keeps_the_control_plane_root_cause() -> None:
    from datetime import UTC, datetime

    from eventmesh_health.model import Health
    from eventmesh_health.probing import classify
    from eventmesh_health.probing.runner import merge_verdicts

    now = datetime(2026, 1, 1, tzinfo=UTC)
    silent = classify("a", "stage", {}, now=now, since=now - timedelta(hours=1),
                      hops=[Hop.BROKER])
    # No stats for a probed hop: not probed, Healthy -> nothing changes.
    assert merge_verdicts(_report("Healthy"), {("a", "stage"): silent}).health is Health.HEALTHY

    from eventmesh_health.probing.tracker import HopStats

    stats = {Hop.BROKER: HopStats("a", "stage", Hop.BROKER, now, timedelta(minutes=5))}
    verdict = classify("a", "stage", stats, now=now, since=now - timedelta(hours=1))
    assert verdict.health is Health.UNHEALTHY
    merged = merge_verdicts(_report("Healthy"), {("a", "stage"): verdict})
    app = merged.applications[0]
    assert (merged.healthy, merged.health, app.health) == (False, Health.UNHEALTHY,
                                                           Health.UNHEALTHY)
    assert [ns.health for ns in app.namespaces] == [Health.UNHEALTHY, Health.HEALTHY]
    assert [f.reason for f in app.namespaces[0].findings] == ["NoHeartbeat"]

    unknown = classify("a", "stage", stats, now=now, since=now,
                       not_meaningful="the control plane is not ready")
    merged = merge_verdicts(_report("Progressing"), {("a", "stage"): unknown})
    stage = merged.applications[0].namespaces[0]
    assert stage.health is Health.PROGRESSING  # Unknown adds a finding, not its health
    assert [f.reason for f in stage.findings] == ["DataPlaneNotProbed"]


async def test_posts_in_flight_are_capped_and_each_told_before_it_is_posted() -> None:
    """A big round does not flood the connection pool: at most `max_in_flight` posts at
    once; a probe is made (timed, recorded, told) only when it gets its slot."""
    in_flight, peak, told = 0, 0, []

    async def handle(request: Request) -> Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        event_id = request.headers.get("ce-id") or json.loads(request.body)["event-id"]
        assert event_id in {hb.id for hb in told}  # told before it was posted
        await asyncio.sleep(0.005)
        in_flight -= 1
        return Response(202)

    tracker = Tracker()
    async with Sink(handle=handle) as sink:
        sender = Sender(tracker, lambda: KEYRING, "run-1",
                        config=sink.config(max_in_flight=5))
        try:
            rounds = await asyncio.gather(*(
                sender.send_application(f"app-{i}", ["stage", "prod"], on_send=told.append)
                for i in range(20)))
        finally:
            await sender.close()
    assert peak == 5
    assert sum(len(r) for r in rounds) == len(told) == 80
    assert sum(tracker.sent_totals().values()) == 80
    assert sender.failures == {}
