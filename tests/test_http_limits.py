"""serve's HTTP server under slow and half-sent requests (a slowloris): with a 256-file
limit, 400 connections that never finish their request must not starve /healthz. The
server (serve's own API app under `embedded_server`) runs in a subprocess with that limit."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

SERVER = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from eventmesh_health.serve.api import create_app, embedded_server
from eventmesh_health.serve.metrics import Metrics
from eventmesh_health.serve.state import HealthState

server = embedded_server(create_app(HealthState(), Metrics()), host="127.0.0.1", port=0,
                         log_level="critical", request_deadline=float(sys.argv[1]))

async def main():
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    await task

asyncio.run(main())
"""
DEADLINE = 2.0


def _healthz(port: int, within: float) -> float:
    """Seconds until /healthz answered 200 (or AssertionError after `within`)."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < within:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if answer.status_code == 200:
                return time.monotonic() - start
            last = answer.status_code
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.1)
    raise AssertionError(f"/healthz did not answer within {within}s: {last!r}")


@contextlib.contextmanager
def limited_server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The server subprocess (256 files, DEADLINE) and its port; stopped afterwards."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(DEADLINE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield server, int(server.stdout.readline())
    finally:
        server.terminate()
        server.wait(10)


def test_half_sent_requests_are_cut_off_and_healthz_still_answers() -> None:
    sockets: list[socket.socket] = []
    with limited_server() as (server, port):
        try:
            for _ in range(400):  # more than the server has file descriptors
                sock = socket.socket()
                sock.settimeout(5)
                try:
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(b"POST /heartbeat/prod/app HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                except OSError:
                    sock.close()
                    continue
                sockets.append(sock)
            assert len(sockets) > 256, "the kernel's backlog accepts more than the server holds"
            # cut off within the deadline (plus the time to accept the backlog), so the
            # server can accept again
            waited = _healthz(port, within=4 * DEADLINE + 5)
            assert server.poll() is None, "the server died"
            closed = 0
            for sock in sockets[:50]:
                try:
                    closed += sock.recv(1) == b""
                except OSError:
                    closed += 1
            assert closed == 50, f"only {closed} of the first 50 half-sent requests were cut off"
            assert waited < 4 * DEADLINE + 5
        finally:
            for sock in sockets:
                sock.close()


def test_a_request_head_over_16_kib_is_refused() -> None:
    with limited_server() as (_, port), \
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        answer = sock.recv(100)
    assert answer.startswith(b"HTTP/1.1 4"), answer
