"""Benchmark heartbeat probing: the receiver's throughput on one core, the sender's capacity.

    .venv/bin/python benchmarks/bench_probe.py [--seconds 10] [--apps 1000] [--namespaces 2]
        [--concurrency 32] [--sender-concurrency 4] [--warmup 3] [--in-process 6000] [--profile]

Needs two CPUs and loopback only (no Kubernetes API server); a default run takes about two
minutes, up to a minute of it the all-at-once sender round (see below). It measures the code
of the working tree (the editable install), as it is now.

- **Receiver over HTTP**: the receiver as `serve` mounts it (`create_app(..., routers=
  [Receiver(tracker, Verifier(keyring)).router])` under `embedded_server`: uvicorn with
  its default HTTP stack, log level info) in a subprocess pinned to the first CPU. A load
  generator pinned to the second CPU posts pre-signed binary-mode heartbeats
  (`Keyring.sign`, `to_binary`) as the mesh delivers them: per round and application one
  ingress and one channel heartbeat to every namespace and one broker probe per namespace,
  sequences in order, every event id once per namespace (so each is `Accepted`, never a
  `Duplicate` of the replay cache), timed when generated (well inside the 5-minute
  freshness window). It keeps `--concurrency` keep-alive connections busy with a raw
  asyncio client (its CPU is shown: it is not the bottleneck). One full round warms up
  (every series exists: the steady state), then it counts the 202 answers for `--seconds`,
  with the server's CPU seconds from /proc/<pid>/stat. Twice: uvicorn's access log on
  (as `serve` runs) and off. Any answer but 202 `Accepted` is an error.
- **Receiver in-process**, on the same CPU with nothing of ours running beside it: the same
  app called as ASGI without a server (FastAPI routing, middleware, our endpoint), and
  `Receiver.handle_heartbeat` alone (parse, verify, replay cache, tracker), in CPU µs per
  heartbeat after an untimed round. The difference to the HTTP figure is uvicorn's cost.
- **Sender**: the real `Sender` (its own HTTP client) against a sink (a minimal ASGI app
  under uvicorn answering 202) pinned to the other CPU, the URL templates pointing at the
  sink; `send_application(app, namespaces)` posts 1 ingress + 1 channel + M broker probes.
  Two ways: `--sender-concurrency` applications at a time, round after round, for
  `--seconds` (the capacity: no post waits for a pooled connection), then one round with
  every application at once as `ProbeRunner.round` sends them, cut off after `--seconds`.
  Applications per second, answered posts per second, the sender's and the sink's CPU (a
  sink far below 100 % means the sender is the bottleneck), and the longest stall of the
  sender's event loop (in `serve` that loop also runs the API and the heartbeat receiver;
  a stall longer than the limit cannot be cut short). A failed post is an error in
  the first; in the all-at-once round failures are reported (with their reasons) as a
  finding, and do not fail the run.

CPU % is of one core; "per CPU-s" and "µs CPU each" divide by the measured process' CPU
time, so they hold even when other work shares the core. The 1-minute load average is
sampled throughout (the benchmark itself adds about 2). Everything started is stopped on
exit, errors, Ctrl-C and SIGTERM; exit status 1 with a message if anything failed.
`--profile` prints the top functions of a cProfile run of `handle_heartbeat` to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import ctypes
import io
import itertools
import json
import logging
import math
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from eventmesh_health.probing import (
    Hop,
    Key,
    Keyring,
    Tracker,
    Verifier,
    new_heartbeat,
    new_run_id,
    to_binary,
)
from eventmesh_health.probing.receiver import Receiver
from eventmesh_health.probing.sender import SendConfig, Sender
from eventmesh_health.serve.api import create_app, embedded_server
from eventmesh_health.serve.metrics import Metrics
from eventmesh_health.serve.state import HealthState
from machine import LoadSampler

HOST = "127.0.0.1"
KEY_ENV = "BENCH_PROBE_KEY"  # the HMAC key, base64: children get it from the environment
CHILD = "_child"  # argv[1] of a child process: `bench_probe.py _child ROLE PARAMS-JSON`
READY_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1
WARMUP_LIMIT = 300.0  # seconds: the receiver's warm-up round must be done by then
POOL_MARGIN = 2.0  # pre-generate this much more than the warm-up rate says is needed


class BenchError(Exception):
    """Something failed: the message says what; the benchmark exits 1."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine ----------------------------------------------------------------------------


def two_cpus() -> tuple[int, int]:
    """(the measured CPU, the other one): the first two this process may run on."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError(f"two CPUs needed (server and load on separate cores), have {cpus}")
    return cpus[0], cpus[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/<pid>/stat: utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- child processes ------------------------------------------------------------------------


def child_setup(cpu: int) -> None:
    """First thing in a child: run on `cpu` only, and die with the parent (SIGKILL), so that
    not even a killed benchmark leaves a server behind."""
    os.sched_setaffinity(0, {cpu})
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl
        raise SystemExit("the benchmark is gone")


@dataclass
class Child:
    role: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the {self.role} exited with {self.process.returncode}; last "
                             f"lines of its log {self.log_path}:\n{self.tail()}")


class Children:
    """Every process the benchmark starts, so that all of them are stopped, whatever happens."""

    def __init__(self, folder: Path, key: bytes) -> None:
        self.folder = folder
        self.env = {**os.environ, KEY_ENV: base64.b64encode(key).decode(),
                    "PYTHONUNBUFFERED": "1"}
        self.started: list[Child] = []

    def start(self, role: str, params: dict[str, Any], cpu: int, *, server: bool) -> Child:
        """`bench_probe.py _child role params` on `cpu`. Its stderr goes to a file, and so does
        a server's stdout (uvicorn's access log: a pipe nobody reads would fill and block
        it); a measuring child's stdout is a pipe, for its result. In a session of its own,
        so a Ctrl-C reaches the parent only, which then stops it."""
        log_path = self.folder / f"{role}-{len(self.started)}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, __file__, CHILD, role, json.dumps({**params, "cpu": cpu})],
                stdin=subprocess.DEVNULL, stdout=out if server else subprocess.PIPE,
                stderr=out, env=self.env, start_new_session=True,
            )
        child = Child(role, process, log_path)
        self.started.append(child)
        return child

    def result(self, child: Child, timeout: float) -> dict[str, Any]:
        """The JSON line a measuring child prints last, once it has exited."""
        try:
            out, _ = child.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"the {child.role} did not finish within {timeout:.0f}s; last "
                             f"lines of its log {child.log_path}:\n{child.tail()}") from None
        if child.process.returncode != 0 or not out.strip():
            raise BenchError(f"the {child.role} failed (exit {child.process.returncode}); "
                             f"last lines of its log {child.log_path}:\n{child.tail()}")
        result: dict[str, Any] = json.loads(out.splitlines()[-1])
        return result

    def measure_against(self, server_role: str, server_params: dict[str, Any],
                        server_cpu: int, ready_path: str, client_role: str,
                        client_params: dict[str, Any], client_cpu: int, timeout: float,
                        ) -> dict[str, Any]:
        """A server child on `server_cpu`, listening on a free port (`port` in both
        children's params), then a measuring child on `client_cpu` (told the server's
        `server_pid` too) until its result; every child is stopped afterwards."""
        port = free_port()
        server = self.start(server_role, {**server_params, "port": port}, server_cpu,
                            server=True)
        try:
            wait_ready(server, f"http://{HOST}:{port}{ready_path}")
            client = self.start(client_role, {**client_params, "port": port,
                                              "server_pid": server.pid},
                                client_cpu, server=False)
            result = self.result(client, timeout)
            server.check_alive()
        finally:
            self.stop_all()
        return result

    def stop(self, child: Child) -> None:
        if child.process.poll() is None:
            child.process.terminate()
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if child.process.stdout is not None:
            child.process.stdout.close()

    def stop_all(self) -> None:
        for child in reversed(self.started):
            self.stop(child)
        self.started.clear()


def wait_ready(child: Child, url: str) -> None:
    """Until `url` answers at all (a server subprocess is listening)."""
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while True:
            child.check_alive()
            with contextlib.suppress(httpx.TransportError):
                http.get(url)
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the {child.role} is not listening at {url} after "
                                 f"{READY_TIMEOUT:.0f}s; its log:\n{child.tail()}")
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- heartbeats -----------------------------------------------------------------------------


def keyring_from_env() -> Keyring:
    return Keyring(Key("bench", base64.b64decode(os.environ[KEY_ENV])))


def names(apps: int, namespaces: int) -> tuple[list[str], list[str]]:
    return [f"app-{i:05d}" for i in range(apps)], [f"ns-{j}" for j in range(namespaces)]


Delivery = tuple[str, str, dict[str, str], bytes]  # namespace, application, headers, body


def deliveries(keyring: Keyring, apps: list[str], namespaces: list[str]) -> Iterator[Delivery]:
    """Signed binary-mode heartbeats as the heartbeat Triggers deliver them, round after
    round, without end: per application the ingress and channel heartbeat fan out to every
    namespace (one event id, M deliveries), and each namespace gets its own broker probe.
    Sequences count the rounds, so every (application, namespace, hop) sees 1, 2, 3, ...
    in order; each round is timed when it is generated."""
    run = new_run_id("bench-probe")
    for sequence in itertools.count(1):
        at = datetime.now(UTC)
        for app in apps:
            fan_out = [to_binary(keyring.sign(new_heartbeat(app, hop, sequence, run=run, at=at)))
                       for hop in (Hop.INGRESS, Hop.CHANNEL)]
            for namespace in namespaces:
                broker = to_binary(keyring.sign(new_heartbeat(
                    app, Hop.BROKER, sequence, run=run, at=at, namespace=namespace)))
                for headers, body in (*fan_out, broker):
                    yield namespace, app, headers, body


def http_request(port: int, delivery: Delivery) -> bytes:
    """One POST to the receiver, as the bytes on the wire (HTTP/1.1, keep-alive)."""
    namespace, app, headers, body = delivery
    head = [f"POST /heartbeat/{namespace}/{app} HTTP/1.1", f"host: {HOST}:{port}",
            f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def receiver_app(keyring: Keyring) -> FastAPI:
    """The receiver mounted the way `serve` mounts it (its API, middleware and error
    handlers), with a fresh tracker: an empty state (no report) is fine for POSTs."""
    receiver = Receiver(Tracker(), Verifier(keyring))
    return create_app(HealthState(), Metrics(), routers=[receiver.router])


# --- the receiver in-process ----------------------------------------------------------------


def time_handler(keyring: Keyring, first: list[Delivery], pool: list[Delivery]) -> float:
    """CPU µs per heartbeat of `Receiver.handle_heartbeat` alone (answer rendered too, as the
    endpoint does) over `pool`, on a fresh receiver that got the `first` round untimed (so
    every series exists: the steady state)."""
    receiver = Receiver(Tracker(), Verifier(keyring))

    def handle(part: list[Delivery]) -> float:
        calls = [(ns, app, [*headers.items(), ("content-length", str(len(body)))], body)
                 for ns, app, headers, body in part]
        start = time.process_time()
        for ns, app, headers, body in calls:
            status, reply = receiver.handle_heartbeat(ns, app, headers, body)
            reply.model_dump_json()
            if status != 202:
                raise BenchError(f"in-process handler answered {status}: {reply}")
        return (time.process_time() - start) / len(calls) * 1e6

    handle(first)
    return handle(pool)


def time_asgi(keyring: Keyring, first: list[Delivery], pool: list[Delivery]) -> float:
    """CPU µs per heartbeat of the whole ASGI app (FastAPI, middleware, endpoint) called
    without a server, over `pool` after the untimed `first` round: what uvicorn adds is the
    rest of the HTTP figure."""
    app = receiver_app(keyring)

    async def call(ns: str, name: str, headers: dict[str, str], body: bytes) -> int:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": f"/heartbeat/{ns}/{name}",
            "raw_path": f"/heartbeat/{ns}/{name}".encode(), "root_path": "",
            "query_string": b"", "server": (HOST, 8080), "client": (HOST, 40000),
            "headers": [(b"host", b"127.0.0.1:8080"),
                        (b"content-length", str(len(body)).encode()),
                        *((k.encode(), v.encode()) for k, v in headers.items())],
        }
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    async def all_of(part: list[Delivery]) -> float:
        start = time.process_time()
        for delivery in part:
            status = await call(*delivery)
            if status != 202:
                raise BenchError(f"in-process ASGI app answered {status}")
        return (time.process_time() - start) / len(part) * 1e6

    async def both() -> float:
        await all_of(first)
        return await all_of(pool)

    return asyncio.run(both())


def profile_handler(keyring: Keyring, first: list[Delivery], pool: list[Delivery],
                    top: int = 20) -> str:
    """The functions `handle_heartbeat` spends its time in (cProfile, by own time)."""
    receiver = Receiver(Tracker(), Verifier(keyring))
    for ns, app, headers, body in first:
        receiver.handle_heartbeat(ns, app, headers.items(), body)
    profiler = cProfile.Profile()
    profiler.enable()
    for ns, app, headers, body in pool:
        receiver.handle_heartbeat(ns, app, headers.items(), body)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --- child: the receiver server, and the sink -----------------------------------------------


def run_receiver(params: dict[str, Any]) -> None:
    """The receiver app under uvicorn as serve runs it (log level info: access log on)."""
    server = embedded_server(receiver_app(keyring_from_env()), host=HOST, port=params["port"],
                             log_level="info", access_log=params["access_log"])
    asyncio.run(server.serve())


async def sink(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that reads the body and answers 202, nothing else (the fastest uvicorn
    can serve, so that the sender is what is measured)."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def run_sink(params: dict[str, Any]) -> None:
    uvicorn.run(sink, host=HOST, port=params["port"], log_level="warning", access_log=False,
                lifespan="off")


# --- child: the load generator --------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection: sends the next request when the answer is complete."""

    def __init__(self, load: LoadGenerator) -> None:
        self.load = load
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:  # not what uvicorn sends: give up on this connection (an error)
                assert self.transport is not None
                self.transport.close()
                return
            length = int(head[at + 17:].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self.busy = False
            self.load.answered(self, int(head[9:12]), body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.load.lost(self)


@dataclass
class Phase:
    """What one phase of the load generator saw (answers arriving by its end)."""

    statuses: Counter[str] = field(default_factory=Counter)
    lost_connections: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    ran_out: bool = False

    @property
    def accepted(self) -> int:
        return self.statuses["202 Accepted"]

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.accepted + self.lost_connections


class LoadGenerator:
    """`concurrency` connections posting pre-built requests, phase after phase."""

    def __init__(self, port: int, concurrency: int, server_pid: int) -> None:
        self.port = port
        self.concurrency = concurrency
        self.server_pid = server_pid
        self.connections: list[_Connection] = []
        self.pending: list[bytes] = []
        self.next = 0
        self.phase = Phase()
        self.deadline = 0.0
        self.counting = False
        self.drained: asyncio.Future[None] | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.concurrency - len(self.connections)):
            _, conn = await loop.create_connection(lambda: _Connection(self), HOST, self.port)
            self.connections.append(conn)

    async def run(self, requests: list[bytes], seconds: float) -> Phase:
        """Post `requests` (after what is left from the last phase) for `seconds` or until
        they are used up; count the answers that arrive by then."""
        await self.connect()
        loop = asyncio.get_running_loop()
        self.pending = self.pending[self.next:] + requests
        self.next = 0
        self.phase = Phase()
        self.drained = loop.create_future()
        self.counting = True
        start, cpu, server_cpu = time.monotonic(), time.process_time(), cpu_seconds(
            self.server_pid)
        self.deadline = start + seconds
        stop = loop.call_at(loop.time() + seconds, self._stop_counting)
        for conn in self.connections:
            self._send_next(conn)
        await self.drained  # every connection idle: time is up or the requests used up
        stop.cancel()
        if self.counting:  # used up before the deadline: the phase ends now
            self.phase.ran_out = True
            self._stop_counting()
        phase = self.phase
        phase.seconds -= start
        phase.server_cpu -= server_cpu
        phase.client_cpu -= cpu
        return phase

    def _stop_counting(self) -> None:
        if self.counting:
            self.counting = False
            self.phase.seconds = time.monotonic()
            self.phase.server_cpu = cpu_seconds(self.server_pid)
            self.phase.client_cpu = time.process_time()

    def _send_next(self, conn: _Connection) -> None:
        if self.counting and self.next < len(self.pending) and conn.transport is not None:
            conn.send(self.pending[self.next])
            self.next += 1
        elif (self.drained is not None and not self.drained.done()
              and not any(c.busy for c in self.connections)):
            self.drained.set_result(None)

    def answered(self, conn: _Connection, status: int, body: bytes) -> None:
        if self.counting:
            what = ("Accepted" if b'"status":"Accepted"' in body
                    else body[:80].decode("utf-8", "replace"))
            self.phase.statuses[f"{status} {what}"] += 1
        self._send_next(conn)

    def lost(self, conn: _Connection) -> None:
        """The server closed a connection: an error; the connection is replaced."""
        if self.counting:
            self.phase.lost_connections += 1
        conn.busy = False
        self.connections.remove(conn)
        self._send_next(conn)
        if self.counting:
            asyncio.get_running_loop().create_task(self._replace())

    async def _replace(self) -> None:
        with contextlib.suppress(OSError):
            await self.connect()
            for conn in self.connections:
                if not conn.busy:
                    self._send_next(conn)


def build(stream: Iterator[Delivery], port: int, count: int) -> list[bytes]:
    return [http_request(port, d) for d in itertools.islice(stream, count)]


async def load(params: dict[str, Any]) -> dict[str, Any]:
    """Warm up with one full round (every series exists afterwards: the steady state; and the
    rate it went at says how much to pre-generate), then measure."""
    apps, namespaces = names(params["apps"], params["namespaces"])
    stream = deliveries(keyring_from_env(), apps, namespaces)
    port = params["port"]
    generator = LoadGenerator(port, params["concurrency"], params["server_pid"])
    one_round = len(apps) * len(namespaces) * 3
    warm = await generator.run(build(stream, port, one_round), WARMUP_LIMIT)
    if warm.errors:
        raise BenchError(f"errors while warming up: {dict(warm.statuses)}")
    if not warm.accepted:
        raise BenchError("no heartbeat accepted while warming up")
    rate = warm.accepted / warm.seconds
    needed = math.ceil(rate * params["seconds"] * POOL_MARGIN) + 2 * params["concurrency"]
    measured = await generator.run(build(stream, port, needed), params["seconds"])
    for conn in generator.connections:
        if conn.transport is not None:
            conn.transport.close()
    return {
        "accepted": measured.accepted, "errors": measured.errors,
        "statuses": dict(measured.statuses), "lost_connections": measured.lost_connections,
        "seconds": measured.seconds, "server_cpu": measured.server_cpu,
        "client_cpu": measured.client_cpu, "ran_out": measured.ran_out,
        "warmup_rate": rate, "pregenerated": needed,
    }


# --- child: the sender ----------------------------------------------------------------------


@dataclass
class SenderFigures:
    """What a sender measurement saw: applications done, posts, CPU, over wall seconds."""

    seconds: float = 0.0
    apps: int = 0  # send_application calls that returned
    posts: int = 0  # posts the sink answered 2xx
    failed: int = 0  # posts that failed (no answer, timeout, non-2xx)
    why: dict[str, int] = field(default_factory=dict)  # failures by what the sender logged
    sender_cpu: float = 0.0
    sink_cpu: float = 0.0
    finished: bool = True  # False: the round was cut off at the time limit
    stall: float = 0.0  # the longest the event loop did not get to run a 10 ms timer, s


class FailureLog(logging.Handler):
    """Counts the sender's failure messages (logged at debug level) by their reason."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if "failed" in record.msg and record.args:
            self.reasons[str(record.args[-1])[:80] or "?"] += 1


class SenderBench:
    """The real `Sender` (its own HTTP client) posting to the sink, as the leader does."""

    def __init__(self, params: dict[str, Any]) -> None:
        base = f"http://{HOST}:{params['port']}"
        config = SendConfig(event_service_url_template=base + "/{app}/v1/events",
                            channel_url_template=base + "/channel/{app}",
                            broker_url_template=base + "/broker/{namespace}/{app}")
        keyring = keyring_from_env()
        self.sender = Sender(Tracker(), lambda: keyring, new_run_id("bench-probe"),
                             config=config)
        self.apps, self.namespaces = names(params["apps"], params["namespaces"])
        self.sink_pid: int = params["server_pid"]
        self.failures = FailureLog()
        probing_log = logging.getLogger("eventmesh_health.probing")
        probing_log.setLevel(logging.DEBUG)
        probing_log.addHandler(self.failures)
        probing_log.propagate = False

    async def measure(self, work: Callable[[SenderFigures], Awaitable[None]]) -> SenderFigures:
        """Runs `work`, which counts the applications it completes; adds posts and CPU."""
        figures = SenderFigures()
        accepted, failed = self.sender.accepted, sum(self.sender.failures.values())
        self.failures.reasons.clear()
        start, cpu, sink_cpu = time.monotonic(), time.process_time(), cpu_seconds(self.sink_pid)
        watch = asyncio.ensure_future(self._watch_loop(figures))
        await work(figures)
        watch.cancel()
        figures.seconds = time.monotonic() - start
        figures.sender_cpu = time.process_time() - cpu
        figures.sink_cpu = cpu_seconds(self.sink_pid) - sink_cpu
        figures.posts = self.sender.accepted - accepted
        figures.failed = sum(self.sender.failures.values()) - failed
        figures.why = dict(self.failures.reasons)
        return figures

    @staticmethod
    async def _watch_loop(figures: SenderFigures, tick: float = 0.01) -> None:
        """How late a 10 ms timer fires: in `serve` the sender shares its event loop with
        the API and the heartbeat receiver, which wait as long."""
        while True:
            began = time.monotonic()
            await asyncio.sleep(tick)
            figures.stall = max(figures.stall, time.monotonic() - began - tick)

    async def bounded(self, figures: SenderFigures, in_flight: int, seconds: float) -> None:
        """Round after round, at most `in_flight` applications at a time, for `seconds`:
        how many applications the sender can probe per second (no post waits for a pooled
        connection, so none times out there)."""
        deadline = time.monotonic() + seconds
        queue = itertools.cycle(self.apps)

        async def worker() -> None:
            while time.monotonic() < deadline:
                await self.sender.send_application(next(queue), self.namespaces)
                figures.apps += 1  # the last ones end a little late: `measure` times them

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    async def all_at_once(self, figures: SenderFigures, limit: float) -> None:
        """One round with every application at once, as `ProbeRunner.round` sends them;
        cut off after `limit` seconds (then left running: see `send`)."""

        async def one(app: str) -> None:
            await self.sender.send_application(app, self.namespaces)
            figures.apps += 1

        round_ = asyncio.ensure_future(asyncio.gather(*(one(app) for app in self.apps)))
        done, _ = await asyncio.wait([round_], timeout=limit)
        figures.finished = bool(done)


async def send(params: dict[str, Any]) -> None:
    """Warm-up (opens the connections), the bounded measurement, the all-at-once round;
    prints the figures."""
    bench = SenderBench(params)
    in_flight, seconds = params["in_flight"], params["seconds"]
    warm = await bench.measure(lambda f: bench.bounded(f, in_flight, params["warmup"]))
    bounded = await bench.measure(lambda f: bench.bounded(f, in_flight, seconds))
    burst = await bench.measure(lambda f: bench.all_at_once(f, seconds))
    print(json.dumps({"warmup_failed": warm.failed, "bounded": asdict(bounded),
                      "all_at_once": asdict(burst)}), flush=True)
    if not burst.finished:
        # The figures are out; thousands of posts still queued need not be cancelled one
        # by one: the process just ends.
        os._exit(0)
    await bench.sender.close()


def child_main(role: str, params: dict[str, Any]) -> None:
    child_setup(params["cpu"])
    if role == "receiver":
        run_receiver(params)
    elif role == "sink":
        run_sink(params)
    elif role == "load":
        print(json.dumps(asyncio.run(load(params))), flush=True)
    elif role == "sender":
        asyncio.run(send(params))
    else:
        raise SystemExit(f"unknown role {role!r}")


# --- the measurements, from the parent ------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    what: str
    rate: float  # per second (wall clock)
    unit: str
    cpu: float | None = None  # CPU seconds of the measured process over `seconds`
    seconds: float | None = None
    errors: int | None = 0  # None: counted on another row
    note: str = ""
    fatal: bool = True  # errors make the benchmark fail (else they are a finding)

    def cells(self) -> list[str]:
        if self.cpu is not None and self.seconds:
            per_cpu_second = self.rate * self.seconds / self.cpu if self.cpu else math.nan
            cpu = f"{100 * self.cpu / self.seconds:.0f}"
        else:  # in-process: the rate is per CPU-second already
            per_cpu_second, cpu = self.rate, "100"
        per_cpu = f"{per_cpu_second:,.0f}"
        micro = f"{1e6 / per_cpu_second:,.0f}" if per_cpu_second else "-"
        return [self.what, f"{self.rate:,.0f}", self.unit, cpu, per_cpu, micro,
                "-" if self.errors is None else f"{self.errors:,}", self.note]


COLUMNS = ("measurement", "per s", "unit", "CPU %", "per CPU-s", "µs CPU each", "errors",
           "notes")


def print_table(rows: list[Row]) -> None:
    table = [list(COLUMNS), *(r.cells() for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        print("  ".join(c.ljust(w) if i in (0, 2, len(r) - 1) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())


def bench_in_process(args: argparse.Namespace, keyring: Keyring, cpu: int) -> list[Row]:
    """The handler and the ASGI app, in this process pinned to the measured CPU."""
    apps, namespaces = names(args.apps, args.namespaces)
    stream = deliveries(keyring, apps, namespaces)
    first = list(itertools.islice(stream, len(apps) * len(namespaces) * 3))
    pool = list(itertools.islice(stream, args.in_process))
    others = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        asgi = time_asgi(keyring, first, pool)
        handler = time_handler(keyring, first, pool)
        if args.profile:
            print(profile_handler(keyring, first, pool), file=sys.stderr)
    finally:
        os.sched_setaffinity(0, others)
    note = f"{len(pool):,} heartbeats after a round of {len(first):,}, CPU {cpu}"
    return [Row("receiver: ASGI app in-process (no server)", 1e6 / asgi, "heartbeats",
                note=note),
            Row("receiver: handle_heartbeat in-process", 1e6 / handler, "heartbeats",
                note=note)]


def bench_receiver_http(args: argparse.Namespace, children: Children, cpus: tuple[int, int],
                        access_log: bool) -> Row:
    """The receiver under uvicorn on one CPU, saturated from the other."""
    result = children.measure_against(
        "receiver", {"access_log": access_log}, cpus[0], "/healthz",
        "load", {"apps": args.apps, "namespaces": args.namespaces,
                 "concurrency": args.concurrency, "warmup": args.warmup,
                 "seconds": args.seconds}, cpus[1],
        timeout=WARMUP_LIMIT + args.seconds + 120)
    if result["errors"]:
        log(f"receiver answers: {result['statuses']}, connections lost: "
            f"{result['lost_connections']}")
    if result["ran_out"]:
        log(f"the {result['pregenerated']:,} pre-generated heartbeats ran out after "
            f"{result['seconds']:.1f}s (the rate is still right; raise POOL_MARGIN)")
    note = (f"{args.concurrency} connections, load generator CPU "
            f"{100 * result['client_cpu'] / result['seconds']:.0f} %")
    return Row(f"receiver: uvicorn, access log {'on (as serve)' if access_log else 'off'}",
               result["accepted"] / result["seconds"], "heartbeats", result["server_cpu"],
               result["seconds"], result["errors"], note)


def bench_sender(args: argparse.Namespace, children: Children, cpus: tuple[int, int]
                 ) -> list[Row]:
    """The sender on the measured CPU against the sink on the other one."""
    result = children.measure_against(
        "sink", {}, cpus[1], "/",
        "sender", {"apps": args.apps, "namespaces": args.namespaces,
                   "in_flight": args.sender_concurrency, "warmup": args.warmup,
                   "seconds": args.seconds}, cpus[0],
        timeout=args.warmup + 2 * args.seconds + 120)
    if result["warmup_failed"]:
        raise BenchError(f"{result['warmup_failed']} posts failed while warming up the sender")
    for name, figures in (("bounded", result["bounded"]), ("all at once", result["all_at_once"])):
        if figures["failed"]:
            log(f"sender, {name}: failed posts by reason: {figures['why']}")
    bounded = SenderFigures(**result["bounded"])
    burst = SenderFigures(**result["all_at_once"])
    per_app = 2 + args.namespaces
    took = (f"{burst.seconds:.1f}s" if burst.finished
            else f"cut off after {burst.seconds:.0f}s")
    rows = []
    for what, f, note, fatal in (
        (f"sender: {args.sender_concurrency} applications at a time", bounded,
         f"{args.apps:,} apps x {args.namespaces} ns, round after round", True),
        # Failed posts here are a finding about the sender, not a broken benchmark.
        (f"sender: all {args.apps:,} at once (as a round)", burst,
         f"one round: {took}, {burst.apps:,} apps done", False),
    ):
        sink_note = (f"; sink CPU {100 * f.sink_cpu / f.seconds:.0f} %; event loop "
                     f"stalled up to {f.stall:.2f}s")
        rows.append(Row(what, f.apps / f.seconds, "applications", f.sender_cpu, f.seconds,
                        None, note + sink_note))
        rows.append(Row("  posts", f.posts / f.seconds, "posts", f.sender_cpu, f.seconds,
                        f.failed, f"answered; {per_app} per application", fatal))
    return rows


def run_all(args: argparse.Namespace) -> tuple[list[Row], str]:
    cpus = two_cpus()
    # The parent idles on the load generator's CPU, away from the measured one.
    os.sched_setaffinity(0, {cpus[1]})
    key = os.urandom(32)
    keyring = Keyring(Key("bench", key))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as folder, \
            LoadSampler(every=2.0) as load_average:
        children = Children(Path(folder), key)
        try:
            log("receiver, in-process")
            rows += bench_in_process(args, keyring, cpus[0])
            for access_log in (True, False):
                log(f"receiver over HTTP, access log {'on' if access_log else 'off'}")
                rows.append(bench_receiver_http(args, children, cpus, access_log))
            log(f"sender, {args.apps:,} applications x {args.namespaces} namespaces")
            rows += bench_sender(args, children, cpus)
        finally:
            children.stop_all()
    return rows, load_average.summary()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == CHILD:
        child_main(sys.argv[2], json.loads(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per run (default: 10)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of sending before the sender is measured (default: 3; "
                             "the receiver's warm-up is one round of heartbeats)")
    parser.add_argument("--apps", type=int, default=1000, help="applications (default: 1000)")
    parser.add_argument("--namespaces", type=int, default=2,
                        help="namespaces per application (default: 2)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="keep-alive connections of the load generator (default: 32)")
    parser.add_argument("--sender-concurrency", type=int, default=4, metavar="K",
                        help="applications the sender probes at a time in the bounded "
                             "measurement (default: 4, i.e. 16 posts at M=2)")
    parser.add_argument("--in-process", type=int, default=6000, metavar="N",
                        help="heartbeats timed in-process, after one untimed round "
                             "(default: 6000)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile of handle_heartbeat (to stderr)")
    args = parser.parse_args()
    # Ctrl-C (even when started in the background, where SIGINT starts out ignored) and
    # SIGTERM stop the benchmark the same way: through the `finally` that stops the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    log(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"({os.cpu_count()} CPUs)")
    try:
        rows, load_average = run_all(args)
    except KeyboardInterrupt:
        log("interrupted: everything stopped")
        sys.exit(130)
    except BenchError as exc:
        print(f"bench_probe: FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    print_table(rows)
    print(f"\nload average (1 min) during the run: {load_average}; "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, uvicorn {uvicorn.__version__}")
    for r in rows:
        if r.errors and not r.fatal:
            print(f"WARNING: {r.errors:,} posts failed when all applications were sent at "
                  "once, as ProbeRunner.round does (reasons above; the sink answers every "
                  "post it gets): each is a heartbeat recorded as sent that never arrives",
                  file=sys.stderr)
    errors = sum(r.errors or 0 for r in rows if r.fatal)
    if errors:
        print(f"bench_probe: FAILED: {errors:,} errors (non-202 answers, lost connections or "
              "failed posts; see the table and the log above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
