"""A loopback HTTP forward proxy standing in for cluster DNS + kube-proxy.

The real Knative processes address each other by cluster names
(``http://broker-ingress.knative-eventing.svc.cluster.local/<ns>/<broker>``,
``http://<channel>-kn-channel.<ns>.svc.cluster.local`` ...). No cluster DNS runs here, and
nothing may leave loopback, so the processes get ``HTTP_PROXY``/``HTTPS_PROXY`` = this proxy:
Go's ``http.ProxyFromEnvironment`` sends every request for a non-loopback host here, in absolute
form. The proxy resolves ``<svc>.<ns>[.svc[.cluster.local]]`` through the API server the way
kube-proxy would route it: the Service (following an ``ExternalName``), the Service port that
matches the URL's port, then the Endpoints port that serves it (same name as the Service port,
or else the numeric ``targetPort``), and forwards the request to ``127.0.0.1:<that port>``
with the ``Host`` header unchanged (the IMC dispatcher routes by Host).

It dials nothing but 127.0.0.1, or a Unix socket registered in ``unix_sockets`` for that
Endpoints port (a Knative v0.12 pod in a network namespace of its own, tests/knative/v012.py):
the Endpoints' addresses (a placeholder such as 192.0.2.10,
because the API server rejects loopback Endpoints IPs) are only checked to exist, never used.
Whatever it cannot resolve, or whose backend refuses, gets ``502 Bad Gateway``; ``CONNECT``
(HTTPS) gets 502 too. Bodies are buffered; HTTP/1.1 keep-alive is supported on both sides.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CLUSTER_DOMAIN = "cluster.local"
MAX_EXTERNAL_NAME_HOPS = 5
BACKEND_TIMEOUT = 30.0
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})

_HOST_RE = re.compile(
    r"^(?P<svc>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    rf"(\.svc(\.{re.escape(CLUSTER_DOMAIN)})?)?\.?$"
)


class Unresolvable(Exception):
    """The host is not a Service with a ready Endpoints port (the proxy answers 502)."""


def parse_service_host(host: str) -> tuple[str, str]:
    """``(service, namespace)`` of ``<svc>.<ns>[.svc[.cluster.local]]``; raises Unresolvable."""
    m = _HOST_RE.match(host.lower())
    if not m:
        raise Unresolvable(f"{host!r} is not <service>.<namespace>[.svc[.{CLUSTER_DOMAIN}]]")
    return m["svc"], m["ns"]


@dataclass(frozen=True)
class Forwarded:
    """One request the proxy handled: where it went (``port`` None: answered 502)."""

    method: str
    url: str
    port: int | None
    status: int
    error: str = ""


class ServiceResolver:
    """Cluster name + port → loopback port, read from Services and Endpoints on every call.

    Reading every time keeps the proxy stateless: a test that edits or deletes a Service or its
    Endpoints changes routing at once, as kube-proxy would after its next sync.
    """

    def __init__(self, http_client_factory: Callable[[], httpx.Client]) -> None:
        self._factory = http_client_factory
        self._local = threading.local()

    def _get(self, path: str) -> dict[str, Any] | None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
        resp = client.get(path)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()

    def resolve(self, host: str, port: int) -> int:
        """The loopback port serving ``host:port``; raises Unresolvable."""
        for _ in range(MAX_EXTERNAL_NAME_HOPS):
            name, ns = parse_service_host(host)
            svc = self._get(f"/api/v1/namespaces/{ns}/services/{name}")
            if svc is None:
                raise Unresolvable(f"service {ns}/{name} not found")
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName":
                host = str(spec.get("externalName") or "")
                continue
            return self._endpoint_port(ns, name, spec, port)
        raise Unresolvable(f"more than {MAX_EXTERNAL_NAME_HOPS} ExternalName hops from {host}")

    def _endpoint_port(self, ns: str, name: str, spec: dict[str, Any], port: int) -> int:
        svc_port = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
        if svc_port is None:
            raise Unresolvable(f"service {ns}/{name} has no port {port}")
        eps = self._get(f"/api/v1/namespaces/{ns}/endpoints/{name}")
        if eps is None:
            raise Unresolvable(f"endpoints {ns}/{name} not found")
        port_name = svc_port.get("name") or ""
        target = svc_port.get("targetPort", port)
        for subset in eps.get("subsets") or []:
            if not subset.get("addresses"):
                continue  # only notReadyAddresses: kube-proxy sends nothing there
            ports = subset.get("ports") or []
            by_name = [p for p in ports if (p.get("name") or "") == port_name]
            by_number = [p for p in ports if isinstance(target, int) and p.get("port") == target]
            chosen = by_name or by_number
            if chosen:
                return int(chosen[0]["port"])
        raise Unresolvable(f"endpoints {ns}/{name} have no ready address for port {port}")


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a Unix socket (a pod in a network namespace of its own)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ForwardProxy

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("proxy: " + format, *args)

    def do_CONNECT(self) -> None:
        # HTTPS through the proxy (e.g. OIDC discovery at https://kubernetes.default.svc):
        # refused, so nothing ever tries a real address.
        self.server.record(Forwarded("CONNECT", self.path, None, 502, "CONNECT not supported"))
        self._reply(502, b"CONNECT is not supported by the test proxy\n")

    def _forward(self) -> None:
        body = self._read_body()
        url = self.path
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            self.server.record(Forwarded(self.command, url, None, 502, "not absolute-form http"))
            self._reply(502, b"the test proxy takes absolute-form http:// requests only\n")
            return
        try:
            port = self.server.resolver.resolve(parts.hostname, parts.port or 80)
        except (Unresolvable, httpx.HTTPError, ValueError) as exc:
            self.server.record(Forwarded(self.command, url, None, 502, str(exc)))
            self._reply(502, f"test proxy: cannot resolve {parts.hostname}: {exc}\n".encode())
            return
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        unix_path = self.server.unix_sockets.get(port)
        conn: http.client.HTTPConnection = (
            UnixHTTPConnection(unix_path, BACKEND_TIMEOUT) if unix_path is not None
            else http.client.HTTPConnection(LOOPBACK, port, timeout=BACKEND_TIMEOUT))
        try:
            conn.request(self.command, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status, reason, resp_headers = resp.status, resp.reason, resp.getheaders()
        except OSError as exc:
            self.server.record(Forwarded(self.command, url, port, 502, str(exc)))
            where = unix_path or f"127.0.0.1:{port}"
            self._reply(502, f"test proxy: {where}: {exc}\n".encode())
            return
        finally:
            conn.close()
        self.server.record(Forwarded(self.command, url, port, status))
        self.send_response(status, reason)
        for k, v in resp_headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the empty line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)


class ForwardProxy(ThreadingHTTPServer):
    """The proxy server; :meth:`start` serves it from a daemon thread on a free loopback port.

    ``log`` keeps every request handled (:class:`Forwarded`), so a test can show which hop an
    event took or where it was refused.
    """

    daemon_threads = True

    def __init__(self, resolver: ServiceResolver, host: str = LOOPBACK, port: int = 0,
                 log_path: Path | None = None) -> None:
        if host != LOOPBACK:
            raise ValueError("the test proxy listens on 127.0.0.1 only")
        super().__init__((host, port), _Handler)
        self.resolver = resolver
        self.log: list[Forwarded] = []
        # Endpoints port -> Unix socket: a backend in another network namespace (Knative v0.12
        # pods, tests/knative/v012.py) is dialed there instead of at 127.0.0.1:<port>.
        self.unix_sockets: dict[int, str] = {}
        self._log_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    def record(self, entry: Forwarded) -> None:
        with self._log_lock:
            self.log.append(entry)
            if self.log_path is not None:
                with self.log_path.open("a") as f:
                    f.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} "
                            f"{entry.method} {entry.url} -> {entry.port} {entry.status} "
                            f"{entry.error}\n")
        log.info("proxy: %s %s -> %s %s %s", entry.method, entry.url,
                 entry.port, entry.status, entry.error)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (Go resets the connection after a refused CONNECT) is normal.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("proxy: %s hung up: %s", client_address, exc)
            return
        super().handle_error(request, client_address)

    def forwarded(self, since: int = 0) -> list[Forwarded]:
        """A copy of the log from index ``since`` (``len(proxy.log)`` taken earlier)."""
        with self._log_lock:
            return list(self.log[since:])

    def start(self) -> ForwardProxy:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="knative-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()
        with contextlib.suppress(Exception):
            self.resolver.close()


def wait_listening(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port (False: gave up)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return True
        time.sleep(0.05)
    return False
