"""A small CloudEvents receiver for the real-Knative tests: a threaded HTTP server on 127.0.0.1.

It records every request (headers lower-cased, body) and answers ``status`` (202 by default);
a test sets ``status = 503`` for a failing subscriber, or stops it for a subscriber that is
gone. :meth:`wait_for` waits on a condition over the recorded requests (never a blind sleep).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
RECHECK = 0.05


@dataclass(frozen=True)
class Received:
    """One request the receiver got, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float = field(default_factory=time.monotonic)

    @property
    def ce_type(self) -> str | None:
        return self.headers.get("ce-type")

    @property
    def ce_id(self) -> str | None:
        return self.headers.get("ce-id")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner
        status = owner.status
        owner._record(Received(self.command, self.path,
                               {k.lower(): v for k, v in self.headers.items()}, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_GET = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Receiver


class Receiver:
    """Records CloudEvents posted to it; ``url`` is its loopback address once started."""

    def __init__(self, name: str = "receiver", status: int = 202) -> None:
        self.name = name
        self.status = status
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"receiver {self.name} was never started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Receiver:
        """Listen (again, on the same port after :meth:`stop`) and serve from a thread."""
        if self._server is not None:
            return self
        server = _Server((LOOPBACK, self._port), _Handler)
        server.owner = self
        self._server, self._port = server, int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"receiver-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections to its port are refused (a subscriber that is down)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def _record(self, req: Received) -> None:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float,
                 what: str = "the expected requests") -> list[Received]:
        """Wait until ``predicate(requests)`` holds; raises AssertionError after ``timeout``.

        ``predicate`` gets a snapshot of the requests so far; it runs outside the receiver's
        lock, so it may send (and so cause requests) itself."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = list(self.requests)
            # Evaluated without the lock (it may do I/O), and re-evaluated at least every
            # RECHECK seconds: a predicate may also look at state outside the receiver.
            if predicate(seen):
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                got = [(r.ce_type, r.ce_id, r.answered) for r in seen]
                raise AssertionError(
                    f"receiver {self.name}: no {what} after {timeout:.0f}s; got {got}")
            with self._cond:
                if len(self.requests) == len(seen):
                    self._cond.wait(min(left, RECHECK))

    def wait_event(self, ce_id: str, timeout: float) -> Received:
        """The first request carrying CloudEvent id ``ce_id`` (waits up to ``timeout``)."""
        reqs = self.wait_for(lambda rs: any(r.ce_id == ce_id for r in rs), timeout,
                             f"event id {ce_id}")
        return next(r for r in reqs if r.ce_id == ce_id)

    def with_id(self, ce_id: str) -> list[Received]:
        with self._cond:
            return [r for r in self.requests if r.ce_id == ce_id]

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
