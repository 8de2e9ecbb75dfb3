"""`serve --notify-url` end to end on the real API server: a Trigger broken and mended is
posted to a loopback receiver twice (Unhealthy with its root cause, then Healthy), an
Application annotated `notify: "false"` is not, and the URL's token is never in the log."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.envtest.controlplane import ControlPlane
from tests.live_objects import ApiServer
from tests.test_serve import api, set_trigger_ready, start_serve, wait_for

pytestmark = pytest.mark.envtest
__all__ = ["api"]  # the module-scoped fixture of test_serve, used here too

TOKEN = "T0/B0/sekrit-token"
APPLICATION = "/apis/applicationconnector.kyma-project.io/v1alpha1/applications/commerce-mock"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    posts: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/{TOKEN}", posts
    finally:
        server.shutdown()
        server.server_close()


def annotate(api: ApiServer, value: str | None) -> None:
    answer = api.request("PATCH", APPLICATION, {"metadata": {"annotations": {
        "eventmesh-health.kyma-project.io/notify": value}}}, patch=True)
    assert answer.status_code == 200, answer.text


def test_transitions_are_posted(control_plane: ControlPlane, api: ApiServer, tmp_path: Path,
                                receiver: tuple[str, list[dict[str, Any]]]) -> None:
    url, posts = receiver
    serve = start_serve(control_plane, tmp_path, "serve-notify", "--no-leader-election",
                        "--no-write", "--notify-url", url, "--notify-min-interval", "1s",
                        "--notify-link-base", serve_base := "http://checker.example:8080")
    try:
        set_trigger_ready(api, "commerce-mock-order-created", ready=False)
        wait_for("the Unhealthy notification", lambda: any(
            p["health"] == "Unhealthy" for p in posts), 15)
        (broken,) = [p for p in posts if p["health"] == "Unhealthy"]
        assert broken["subject"] == {"kind": "Application", "application": "commerce-mock"}
        assert broken["previous"] == "Healthy"
        assert broken["rootCause"]["object"]["name"] == "commerce-mock-order-created"
        assert broken["link"] == f"{serve_base}/api/v1/applications/commerce-mock"
        assert "SubscriberResolveFailed" in broken["text"]
        set_trigger_ready(api, "commerce-mock-order-created", ready=True)
        wait_for("the Healthy notification", lambda: any(
            p["health"] == "Healthy" for p in posts), 15)
        assert serve.metric("eventmesh_notifications_total", target="url-1",
                            outcome="delivered") == 2.0

        # Opted out: the same break tells nobody.
        annotate(api, "false")
        # The Application and the Trigger are watched apart: let the annotation arrive
        # first (a watch event takes milliseconds on loopback; nothing shows it to wait on).
        time.sleep(1.0)
        set_trigger_ready(api, "commerce-mock-order-created", ready=False)
        wait_for("Unhealthy again", lambda: serve.app("commerce-mock")["health"] == "Unhealthy")
        set_trigger_ready(api, "commerce-mock-order-created", ready=True)
        wait_for("Healthy again", lambda: serve.app("commerce-mock")["health"] == "Healthy")
        assert len(posts) == 2
    finally:
        annotate(api, None)
        set_trigger_ready(api, "commerce-mock-order-created", ready=True)
        serve.stop()
    assert TOKEN not in serve.log.read_text()
