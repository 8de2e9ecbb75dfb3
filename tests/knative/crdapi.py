"""A TLS front of kube-apiserver that still serves ``apiextensions.k8s.io/v1beta1`` CRDs.

Knative v0.12's Subscription reconciler lists and watches CustomResourceDefinitions through
``apiextensions.k8s.io/v1beta1`` (client-go v0.16), an API removed in Kubernetes 1.22: against
the envtest kube-apiserver (v1.34) its informers never sync and no reconciler starts
(REAL-KNATIVE.md §7). This adapter sits in front of the API server:

- ``GET /apis/apiextensions.k8s.io/v1beta1/customresourcedefinitions[/<name>]``, including
  ``?watch=true``, is answered from the v1 API with each object rewritten to v1beta1 (group,
  names, scope, versions, labels: what the lister reads);
- every other request is streamed through unchanged (watches chunk by chunk).

It presents the envtest serving certificate (so the envtest CA and a kubeconfig with only its
URL changed work) and calls the API server as the admin (the client's TLS identity is not
passed through). Standard library only; HTTP/1.1.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import logging
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

V1BETA1_CRDS = re.compile(
    r"^/apis/apiextensions\.k8s\.io/v1beta1/customresourcedefinitions(?:/(?P<name>[^/]+))?$")
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host",
})
UPSTREAM_TIMEOUT = 600.0  # watches stay open (the API server closes them after minutes)


def crd_to_v1beta1(crd: dict[str, Any]) -> dict[str, Any]:
    """A v1 CustomResourceDefinition as v1beta1 would show it (without schemas)."""
    out = copy.deepcopy(crd)
    out["apiVersion"] = "apiextensions.k8s.io/v1beta1"
    spec = crd.get("spec") or {}
    versions = [{"name": v["name"], "served": v.get("served", True),
                 "storage": v.get("storage", False)} for v in spec.get("versions") or []]
    out["spec"] = {
        "group": spec.get("group"), "names": spec.get("names"), "scope": spec.get("scope"),
        "version": versions[0]["name"] if versions else None, "versions": versions,
        "conversion": {"strategy": "None"}, "preserveUnknownFields": False,
    }
    return out


def _rewrite(doc: dict[str, Any]) -> dict[str, Any]:
    kind = doc.get("kind")
    if kind == "CustomResourceDefinition":
        return crd_to_v1beta1(doc)
    if kind == "CustomResourceDefinitionList":
        return {**doc, "apiVersion": "apiextensions.k8s.io/v1beta1",
                "items": [crd_to_v1beta1(i) for i in doc.get("items") or []]}
    return doc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CrdApiAdapter
    _upstream: http.client.HTTPSConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("crd-api: " + format, *args)

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            super().finish()
        if self._upstream is not None:
            self.server.forget(self._upstream)
            self._upstream.close()

    def _conn(self) -> http.client.HTTPSConnection:
        if self._upstream is None:
            self._upstream = http.client.HTTPSConnection(
                "127.0.0.1", self.server.upstream_port, context=self.server.client_context,
                timeout=UPSTREAM_TIMEOUT)
            self.server.remember(self._upstream)
        return self._upstream

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> http.client.HTTPResponse:
        for attempt in (1, 2):  # a kept-alive upstream connection the server closed: redo once
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._upstream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        parts = urlsplit(self.path)
        m = V1BETA1_CRDS.match(parts.path)
        if m and self.command == "GET":
            self._crds(parts.path, parts.query, headers)
            return
        resp = self._request(self.command, self.path, body, headers)
        self._relay(resp)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        self.send_response(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if length is not None:
            self.send_header("Content-Length", length)
            self.end_headers()
            data = resp.read()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while chunk := resp.read1(65536):
            self._chunk(chunk)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _crds(self, path: str, query: str, headers: dict[str, str]) -> None:
        upstream = path.replace("/v1beta1/", "/v1/", 1) + (f"?{query}" if query else "")
        headers = {**headers, "Accept": "application/json"}
        headers.pop("Accept-Encoding", None)
        resp = self._request("GET", upstream, None, headers)
        watch = parse_qs(query).get("watch", ["false"])[0] in ("true", "1")
        if not watch or resp.status != 200:
            data = resp.read()
            with contextlib.suppress(ValueError):
                data = json.dumps(_rewrite(json.loads(data))).encode()
            self.send_response(resp.status, resp.reason)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while line := resp.readline():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event.get("object"), dict):
                    event["object"] = _rewrite(event["object"])
                line = json.dumps(event).encode() + b"\n"
            self._chunk(line)
        self._chunk(b"")


class CrdApiAdapter(ThreadingHTTPServer):
    """``CrdApiAdapter(...).start()`` serves on a free 127.0.0.1 port from a daemon thread."""

    daemon_threads = True

    def __init__(self, upstream_port: int, ca_path: Path, admin_cert: tuple[Path, Path],
                 serving_cert: tuple[Path, Path]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_port = upstream_port
        self.client_context = ssl.create_default_context(cafile=str(ca_path))
        self.client_context.load_cert_chain(str(admin_cert[0]), str(admin_cert[1]))
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(str(serving_cert[0]), str(serving_cert[1]))
        self.socket = server_context.wrap_socket(self.socket, server_side=True)
        self._thread: threading.Thread | None = None
        self._upstreams: set[http.client.HTTPSConnection] = set()
        self._upstreams_lock = threading.Lock()

    def remember(self, conn: http.client.HTTPSConnection) -> None:
        with self._upstreams_lock:
            self._upstreams.add(conn)

    def forget(self, conn: http.client.HTTPSConnection) -> None:
        with self._upstreams_lock:
            self._upstreams.discard(conn)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("crd-api: connection from %s ended with an error", client_address,
                  exc_info=True)

    def start(self) -> CrdApiAdapter:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="crd-api-adapter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()
        # Open watches hold API server connections (and the API server's shutdown waits for
        # them): cut them.
        with self._upstreams_lock:
            upstreams, self._upstreams = list(self._upstreams), set()
        for conn in upstreams:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
