"""Transition notifications (serve/notify.py) against real HTTP receivers on loopback: one
that answers 200, one that fails twice and then takes it, one that always fails."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from eventmesh_health.cli import main as cli
from eventmesh_health.model import (
    ApplicationReport,
    Finding,
    FlowReport,
    Health,
    MeshReport,
    ObjectRef,
    Severity,
    SystemReport,
)
from eventmesh_health.serve.notify import NOTIFY_ANNOTATION, Notifier, NotifySettings, opted_out

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
TOKEN = "T000/B000/XXXXsecretXXXX"


@dataclass
class Receiver:
    url: str
    fail_first: int = 0  # answer 500 to this many posts, then 200
    status: int = 500
    posts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    runners: list[web.AppRunner] = []

    async def start(fail_first: int = 0, status: int = 500) -> Receiver:
        made = Receiver("", fail_first, status)

        async def hook(request: web.Request) -> web.Response:
            made.attempts += 1
            body = await request.json()
            if made.attempts <= made.fail_first:
                return web.Response(status=made.status)
            made.posts.append(body)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/services/{token:.*}", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        made.url = f"http://127.0.0.1:{port}/services/{TOKEN}"
        runners.append(runner)
        return made

    yield start
    for runner in runners:
        await runner.cleanup()


def cause() -> Finding:
    return Finding(severity=Severity.ERROR, health=Health.UNHEALTHY,
                   object=ObjectRef(api_version="messaging.knative.dev/v1alpha1",
                                    kind="KafkaChannel", namespace="kyma-integration",
                                    name="commerce-mock"),
                   reason="TopicFailed", message="quota reached", root_cause=True)


def report(app: Health = Health.HEALTHY, flow: Health = Health.HEALTHY) -> MeshReport:
    findings = [cause()] if app is not Health.HEALTHY else []
    return MeshReport(
        healthy=app is Health.HEALTHY and flow is Health.HEALTHY,
        health=max((app, flow), key=lambda h: h is not Health.HEALTHY),
        system=SystemReport(health=Health.HEALTHY),
        applications=[ApplicationReport(name="commerce-mock", health=app, state=4,
                                        findings=findings)],
        flows=[FlowReport(flow="broker", kind="Broker", namespace="prod", name="default",
                          health=flow)])


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The checker's log records (the receivers' access log shows their own paths)."""
    return [r for r in caplog.records if r.name.startswith("eventmesh_health")]


def settings(*urls: str, **kwargs: Any) -> NotifySettings:
    defaults: dict[str, Any] = {"link_base": "http://checker:8080", "backoff_initial": 0.01,
                                "backoff_max": 0.05, "timeout": 2.0,
                                "min_interval": timedelta(seconds=30)}
    return NotifySettings(urls=urls, **{**defaults, **kwargs})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def started(notifier: Notifier) -> asyncio.Task[None]:
    task = asyncio.create_task(notifier.run())
    await asyncio.sleep(0)
    return task


def counters(notifier: Notifier) -> str:
    registry = CollectorRegistry()
    registry.register(notifier.metrics)
    return generate_latest(registry).decode()


async def test_a_transition_is_posted_with_root_cause_and_link(receivers: Any) -> None:
    hook = await receivers()
    notifier = Notifier(settings(hook.url))
    task = await started(notifier)
    try:
        notifier.observe(report(), NOW)  # the baseline: nothing posted
        notifier.observe(report(app=Health.UNHEALTHY), NOW)
        notifier.observe(report(app=Health.UNHEALTHY, flow=Health.DEGRADED), NOW)
        await notifier.drain()
    finally:
        task.cancel()
    app, flow = hook.posts
    assert app["text"] == (
        "eventmesh-health: Application commerce-mock is Unhealthy (was Healthy); root cause: "
        "KafkaChannel kyma-integration/commerce-mock: TopicFailed — quota reached "
        "<http://checker:8080/api/v1/applications/commerce-mock>")
    assert app["subject"] == {"kind": "Application", "application": "commerce-mock"}
    assert (app["health"], app["previous"], app["rootCauses"], app["changes"]) == (
        "Unhealthy", "Healthy", 1, 1)
    assert app["rootCause"]["reason"] == "TopicFailed"
    assert app["link"] == "http://checker:8080/api/v1/applications/commerce-mock"
    assert app["time"] == "2026-01-01T10:00:00Z"
    assert flow["link"] == "http://checker:8080/api/v1/flows/prod/Broker/default"
    assert flow["subject"]["flow"] == "broker" and flow["health"] == "Degraded"
    assert 'eventmesh_notifications_total{outcome="delivered",target="url-1"} 2.0' in \
        counters(notifier)


async def test_retries_with_backoff_then_delivers(receivers: Any) -> None:
    hook = await receivers(fail_first=2)
    notifier = Notifier(settings(hook.url, max_attempts=3))
    task = await started(notifier)
    try:
        notifier.observe(report(), NOW)
        notifier.observe(report(app=Health.UNHEALTHY), NOW)
        await notifier.drain()
    finally:
        task.cancel()
    assert hook.attempts == 3 and len(hook.posts) == 1
    text = counters(notifier)
    assert 'eventmesh_notification_retries_total{target="url-1"} 2.0' in text
    assert 'eventmesh_notifications_total{outcome="delivered",target="url-1"} 1.0' in text


async def test_a_failing_receiver_is_given_up_on_loudly_and_others_still_get_it(
        receivers: Any, caplog: pytest.LogCaptureFixture) -> None:
    broken = await receivers(fail_first=10**6)
    fine = await receivers()
    notifier = Notifier(settings(broken.url, fine.url, max_attempts=4))
    task = await started(notifier)
    with caplog.at_level(logging.DEBUG):
        try:
            notifier.observe(report(), NOW)
            notifier.observe(report(app=Health.UNHEALTHY), NOW)
            await notifier.drain()
        finally:
            task.cancel()
    assert broken.attempts == 4 and not broken.posts
    assert len(fine.posts) == 1
    text = counters(notifier)
    assert 'eventmesh_notifications_total{outcome="failed",target="url-1"} 1.0' in text
    assert 'eventmesh_notification_retries_total{target="url-1"} 3.0' in text
    assert 'eventmesh_notifications_total{outcome="delivered",target="url-2"} 1.0' in text
    failed = [r.getMessage() for r in caplog.records if "failed after" in r.getMessage()]
    assert failed == ["notification to url-1 failed after 4 attempt(s) (HTTP 500): "
                      "commerce-mock is Unhealthy (was Healthy)"]
    assert not any(TOKEN in r.getMessage() or "127.0.0.1" in r.getMessage()
                   for r in ours(caplog))


async def test_a_refusing_receiver_is_not_retried(receivers: Any) -> None:
    hook = await receivers(fail_first=10**6, status=404)
    notifier = Notifier(settings(hook.url, max_attempts=5))
    task = await started(notifier)
    try:
        notifier.observe(report(), NOW)
        notifier.observe(report(app=Health.UNHEALTHY), NOW)
        await notifier.drain()
    finally:
        task.cancel()
    assert hook.attempts == 1
    assert 'outcome="failed",target="url-1"} 1.0' in counters(notifier)


async def test_an_unreachable_receiver_is_retried_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(settings(f"http://127.0.0.1:9/services/{TOKEN}", max_attempts=2))
    task = await started(notifier)
    try:
        notifier.observe(report(), NOW)
        notifier.observe(report(app=Health.UNHEALTHY), NOW)
        await notifier.drain()
    finally:
        task.cancel()
    assert 'outcome="failed",target="url-1"} 1.0' in counters(notifier)
    assert not any(TOKEN in r.getMessage() for r in ours(caplog))


async def test_rate_limit_per_subject_merges_transitions(receivers: Any) -> None:
    hook = await receivers()
    clock = Clock()
    notifier = Notifier(settings(hook.url, min_interval=timedelta(seconds=30)), clock=clock)
    task = await started(notifier)
    try:
        notifier.observe(report(), NOW)
        notifier.observe(report(app=Health.UNHEALTHY), NOW)  # sent at once
        clock.now += 1
        notifier.observe(report(app=Health.DEGRADED), NOW)  # held back
        notifier.observe(report(app=Health.PROGRESSING, flow=Health.UNHEALTHY), NOW)
        await notifier.drain()
        assert [(p["subject"]["kind"], p["health"]) for p in hook.posts] == [
            ("Application", "Unhealthy"), ("Flow", "Unhealthy")]  # the flow has its own limit
        clock.now += 30
        notifier._wake.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(hook.posts) == 3:
                break
        await notifier.drain()
        merged = hook.posts[2]
        assert (merged["health"], merged["previous"], merged["changes"]) == (
            "Progressing", "Unhealthy", 2)
        assert "[2 changes since the last notification]" in merged["text"]
        # Flapping back within the interval: nothing to tell, but counted.
        clock.now += 1
        notifier.observe(report(app=Health.UNHEALTHY, flow=Health.UNHEALTHY), NOW)
        notifier.observe(report(app=Health.PROGRESSING, flow=Health.UNHEALTHY), NOW)
        clock.now += 30
        notifier._wake.set()
        await asyncio.sleep(0.05)
        await notifier.drain()
    finally:
        task.cancel()
    assert len(hook.posts) == 3
    assert "eventmesh_notifications_coalesced_total 3.0" in counters(notifier)


async def test_opted_out_subjects_are_not_notified(receivers: Any) -> None:
    hook = await receivers()
    notifier = Notifier(settings(hook.url))
    task = await started(notifier)
    app = {"metadata": {"name": "commerce-mock", "annotations": {NOTIFY_ANNOTATION: "false"}}}
    try:
        notifier.observe(report(), NOW)
        notifier.observe(report(app=Health.UNHEALTHY, flow=Health.UNHEALTHY), NOW,
                         lambda key: key[0] == "application" and opted_out(app))
        await notifier.drain()
    finally:
        task.cancel()
    assert [p["subject"]["kind"] for p in hook.posts] == ["Flow"]
    assert not opted_out({"metadata": {"annotations": {NOTIFY_ANNOTATION: "true"}}})


async def test_urls_from_a_secret_never_show(receivers: Any,
                                             caplog: pytest.LogCaptureFixture) -> None:
    hook = await receivers()
    data = {"slack": base64.b64encode(hook.url.encode()).decode(),
            "bad": base64.b64encode(b"not a url " + TOKEN.encode()).decode()}

    async def read() -> dict[str, str]:
        return data

    notifier = Notifier(settings(secret=("kyma-system", "hooks")), read)
    with caplog.at_level(logging.DEBUG):
        task = await started(notifier)
        try:
            for _ in range(100):
                if notifier.targets():
                    break
                await asyncio.sleep(0.01)
            notifier.observe(report(), NOW)
            notifier.observe(report(app=Health.UNHEALTHY), NOW)
            await notifier.drain()
        finally:
            task.cancel()
    assert len(hook.posts) == 1
    assert [t.label for t in notifier.targets()] == ["secret:slack"]
    assert TOKEN not in repr(notifier.targets()) and TOKEN not in repr(notifier.settings)
    assert not any(TOKEN in r.getMessage() for r in ours(caplog))
    assert any("key bad" in r.getMessage() for r in ours(caplog))
    assert 'eventmesh_notifications_total{outcome="delivered",target="secret:slack"} 1.0' in \
        counters(notifier)


def test_the_serve_flags() -> None:
    runner = CliRunner()
    helped = runner.invoke(cli, ["serve", "--help"])
    assert "--notify-url" in helped.output and "--notify-secret" in helped.output
    bad = runner.invoke(cli, ["serve", "--notify-url", f"ftp://hooks/{TOKEN}"])
    assert bad.exit_code == 2 and TOKEN not in bad.output
    bad = runner.invoke(cli, ["serve", "--notify-secret", "no-slash"])
    assert bad.exit_code == 2 and "NAMESPACE/NAME" in bad.output


def test_the_payload_is_json_with_a_slack_text() -> None:
    from eventmesh_health.serve.notify import payload
    body = payload(subject={"kind": "Application", "application": "a"}, title="Application a",
                   health=Health.HEALTHY, previous=Health.UNHEALTHY, causes=[],
                   link="http://x/api/v1/applications/a", now=NOW, changes=1)
    assert json.loads(json.dumps(body))["text"] == (
        "eventmesh-health: Application a is Healthy (was Unhealthy) "
        "<http://x/api/v1/applications/a>")
    assert body["rootCause"] is None
