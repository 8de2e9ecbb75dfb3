"""The heartbeat sender: what goes where, signed, recorded; failures counted, never raised;
keys from a Secret, reloaded, the last good keyring kept."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
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

KEY = base64.b64encode(b"k" * 32).decode()
KEYRING = keyring_from_secret_data({"k1": KEY})


def client(requests: list[httpx.Request], status: int = 202,
           fail: str | None = None) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if fail and fail in str(request.url):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status)
    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


CONFIG = SendConfig(
    event_service_url_template="http://es/{app}/v1/events",
    channel_url_template="http://ch/{app}",
    broker_url_template="http://broker/{namespace}",
)


async def test_one_round_ingress_channel_and_one_broker_probe_per_namespace() -> None:
    requests: list[httpx.Request] = []
    tracker = Tracker()
    sender = Sender(tracker, lambda: KEYRING, "run-1", config=CONFIG,
                    client=client(requests))
    await sender.send_application("commerce-mock", ["stage", "prod"])
    urls = sorted(str(r.url) for r in requests)
    assert urls == ["http://broker/prod", "http://broker/stage", "http://ch/commerce-mock",
                    "http://es/commerce-mock/v1/events"]
    verifier = Verifier(KEYRING)
    for request in requests:
        if "/v1/events" in str(request.url):
            body = json.loads(request.content)
            assert body["event-type"] == "eventmesh-health.heartbeat"
            assert body["event-type-version"] == "v1"
            assert body["data"]["emhhop"] == "ingress"
            continue
        hb = heartbeat_from_event(parse_http(request.headers.items(), request.content))
        verifier.check_signature(hb)
        assert hb.application == "commerce-mock" and hb.run == "run-1" and hb.sequence == 1
        if hb.hop is Hop.BROKER:
            assert str(request.url).endswith(hb.namespace or "?")
    assert tracker.sent_totals() == {("commerce-mock", Hop.INGRESS): 1,
                                     ("commerce-mock", Hop.CHANNEL): 1,
                                     ("commerce-mock", Hop.BROKER): 2}
    second = await sender.send_application("commerce-mock", ["stage"])
    # one sequence per round, on every hop: sequences name rounds across hops
    assert {(hb.hop, hb.namespace, hb.sequence) for hb in second} == {
        (Hop.INGRESS, None, 2), (Hop.CHANNEL, None, 2), (Hop.BROKER, "stage", 2)}


async def test_channel_address_from_the_channel_and_binary_to_the_adapter() -> None:
    requests: list[httpx.Request] = []
    config = SendConfig(adapter_url_template="http://adapter/{app}",
                        broker_url_template="http://b/{namespace}")
    sender = Sender(Tracker(), lambda: KEYRING, "run-1", config=config,
                    client=client(requests))
    await sender.send_application("app", [], channel_url="http://app-kn-channel.x")
    assert sorted(str(r.url) for r in requests) == ["http://adapter/app",
                                                     "http://app-kn-channel.x"]
    assert all(r.headers["ce-specversion"] == "1.0" for r in requests)


@pytest.mark.parametrize("status", [500, 404])
async def test_failures_are_counted_and_recorded_as_sent_never_raised(status: int) -> None:
    requests: list[httpx.Request] = []
    tracker = Tracker()
    sender = Sender(tracker, lambda: KEYRING, "run-1", config=CONFIG,
                    client=client(requests, status=status, fail="broker/prod"))
    await sender.send_application("a", ["stage", "prod"])
    assert sender.failures[("a", Hop.BROKER)] == 2  # one refused, one non-2xx
    assert sender.failures[("a", Hop.INGRESS)] == 1
    assert tracker.sent_totals()[("a", Hop.BROKER)] == 2


async def test_nothing_is_sent_without_keys() -> None:
    requests: list[httpx.Request] = []
    sender = Sender(Tracker(), lambda: None, "run-1", config=CONFIG, client=client(requests))
    await sender.send_application("a", ["stage"])
    assert requests == []


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

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        event_id = request.headers.get("ce-id") or json.loads(request.content)["event-id"]
        assert event_id in {hb.id for hb in told}  # told before it was posted
        await asyncio.sleep(0.005)
        in_flight -= 1
        return httpx.Response(202)

    tracker = Tracker()
    config = SendConfig(event_service_url_template="http://es/{app}/v1/events",
                        channel_url_template="http://ch/{app}",
                        broker_url_template="http://broker/{namespace}", max_in_flight=5)
    sender = Sender(tracker, lambda: KEYRING, "run-1", config=config,
                    client=httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    rounds = await asyncio.gather(*(
        sender.send_application(f"app-{i}", ["stage", "prod"], on_send=told.append)
        for i in range(20)))
    assert peak == 5
    assert sum(len(r) for r in rounds) == len(told) == 80
    assert sum(tracker.sent_totals().values()) == 80
    assert sender.failures == {}
