"""`serve --probe --receiver-port`: the heartbeat receiver on a port of its own (which a
NetworkPolicy opens to the mesh), the REST API and /metrics on the other, each without the
other's endpoints; `serve` on the envtest API server, requests over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import httpx
import pytest
from lightkube import AsyncClient, KubeConfig

from eventmesh_health.probing.runner import ProbeSettings
from eventmesh_health.serve.service import Service, Settings
from tests.envtest.controlplane import ControlPlane, free_port


async def _up(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{url} did not come up"
            await asyncio.sleep(0.1)


@pytest.mark.envtest
async def test_the_receiver_and_the_api_on_ports_of_their_own(
        control_plane: ControlPlane) -> None:
    api_port, receiver_port = free_port(), free_port()
    settings = Settings(
        host="127.0.0.1", port=api_port, receiver_port=receiver_port, leader_election=False,
        write=False, identity="ports", log_level="warning",
        probe=ProbeSettings(interval=timedelta(seconds=30),
                            receiver_url_template="http://{replica}/heartbeat/{namespace}/"
                                                  "{application}"))
    client = AsyncClient(KubeConfig.from_file(control_plane.kubeconfig_path), trust_env=False)
    service = Service(client, settings)
    assert service.prober is not None
    assert service.prober.settings.advertise_address == f"127.0.0.1:{receiver_port}"
    task = asyncio.create_task(service.run())
    api, receiver = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{receiver_port}"
    try:
        await _up(api)
        await _up(receiver)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            heartbeat = "/heartbeat/stage/commerce"
            on_api = await http.post(api + heartbeat, content=b"{}")
            assert on_api.status_code == 404, on_api.text  # not served beside the API
            on_receiver = await http.post(receiver + heartbeat, content=b"{}")
            assert on_receiver.status_code == 403, on_receiver.text
            assert on_receiver.json()["error"] == "NotProbed"
            for path in ("/api/v1/health", "/metrics", "/openapi.json"):
                assert (await http.get(receiver + path)).status_code == 404, path
            assert (await http.get(api + "/metrics")).status_code == 200
            assert (await http.get(receiver + "/readyz")).status_code in (200, 503)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
