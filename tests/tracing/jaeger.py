"""A real Jaeger (github.com/jaegertracing/jaeger/cmd/jaeger v1.75.0) for tests.

Built once by ``hack/jaeger/build.sh`` (cached outside the repo); here it runs on loopback with
free ports for the OTLP HTTP receiver, the Zipkin receiver, the query API and the health check,
in-memory storage, and no other listener (the all-in-one default config binds fixed ports:
one per host, and metrics on :8888).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.envtest.controlplane import REPO_ROOT, _die_with_parent, free_port, run_build_script

BUILD_SCRIPT = REPO_ROOT / "hack" / "jaeger" / "build.sh"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL = 0.05

# No self-tracing (telemetry traces, enable_tracing): Jaeger would export its own spans to
# the default OTLP endpoint 127.0.0.1:4317 (nobody there; at worst another test's Jaeger) and
# wait 10 s on SIGTERM for that export to time out.
_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp, zipkin]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
  zipkin:
    endpoint: 127.0.0.1:{zipkin}
processors:
  batch:
    # Spans reach storage within this, not the default 200 ms batches of up to 8192.
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": os.environ.get("HOME", "/tmp"),
    # The query extension dials its own gRPC server at localhost; grpc-go's DNS resolver
    # then asks the machine's resolver for the TXT record _grpc_config.localhost (seen with
    # strace: a packet off loopback). /etc/hosts answers the address without it.
    "GRPC_ENABLE_TXT_SERVICE_CONFIG": "false",
}


def find_jaeger() -> Path:
    """The jaeger executable (built on first use; a failed build fails the test)."""
    folder = run_build_script(BUILD_SCRIPT, "jaeger",
                              "see hack/jaeger/build.sh (needs go and the Go module proxy)")
    binary = folder / "jaeger"
    if not binary.is_file():
        raise RuntimeError(f"jaeger: {folder} holds no jaeger executable")
    return binary


class Jaeger:
    """One Jaeger process: ``otlp_url`` (OTLP HTTP traces endpoint), ``zipkin_url`` (Zipkin v2
    spans endpoint), ``query_url`` (the UI/query API base), ``log``."""

    def __init__(self, binary: Path | None = None) -> None:
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ports: dict[str, int] = {}
        self.log: Path | None = None

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['query']}"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['otlp']}/v1/traces"

    @property
    def zipkin_base(self) -> str:
        return f"http://127.0.0.1:{self.ports['zipkin']}"

    @property
    def zipkin_url(self) -> str:
        return f"{self.zipkin_base}/api/v2/spans"

    def start(self) -> Jaeger:
        binary = self.binary or find_jaeger()
        self._tmp = tempfile.TemporaryDirectory(prefix="eventmesh-jaeger-")
        tmp = Path(self._tmp.name)
        self.ports = {name: free_port()
                      for name in ("health", "query", "query_grpc", "otlp", "zipkin")}
        config = tmp / "jaeger.yaml"
        config.write_text(_CONFIG.format(**self.ports))
        self.log = tmp / "jaeger.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), "--config", str(config)], env=_ENV, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp, preexec_fn=_die_with_parent)
        try:
            self._await_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _await_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2, trust_env=False) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"jaeger exited with code {self.proc.returncode}:\n"
                                       f"{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    health = http.get(f"http://127.0.0.1:{self.ports['health']}/status")
                    query = http.get(f"{self.query_url}/api/services")
                    if health.status_code == 200 and query.status_code == 200:
                        # The receivers start before the health check turns OK.
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jaeger not ready within {START_TIMEOUT:.0f}s:\n"
                                       f"{self.tail()}")
                time.sleep(POLL)

    def record(self, trace_id: str, name: str) -> Path | None:
        """The trace as Jaeger's query API gives it, saved as `<name>.json` in the folder
        named by EVENTMESH_HEALTH_TRACE_EXAMPLES (how the fixtures of
        tests/fixtures/traces were recorded); None when that is not set."""
        folder = os.environ.get("EVENTMESH_HEALTH_TRACE_EXAMPLES")
        if not folder:
            return None
        with httpx.Client(trust_env=False, timeout=5) as http:
            raw = http.get(f"{self.query_url}/api/traces/{trace_id}").json()
        path = Path(folder) / f"{name}.json"
        path.write_text(json.dumps(raw, indent=1, sort_keys=True))
        return path

    def tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Jaeger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_jaeger() -> Iterator[Jaeger]:
    with Jaeger() as jaeger:
        yield jaeger
