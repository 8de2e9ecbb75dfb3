"""Runs one Knative v0.12 process in a network namespace of its own, reachable through Unix sockets.

Knative v0.12 binds fixed ports in every process (:8080 for the ingress, the filter and the
IMC dispatcher; :9090 metrics; :8008 profiling), so two of them cannot share a network
namespace. Started as ``unshare -n -- python netns.py SPEC.json`` (a new, empty namespace), this
launcher:

1. brings ``lo`` up (the only interface: nothing here can reach anything but loopback);
2. for each ``inbound`` entry ``[port, unix_path]``, listens on ``127.0.0.1:port`` inside and
   relays every connection to ``unix_path`` (a socket served outside: the API adapter, the
   forward proxy). A Unix socket with a path is a file, so it crosses network namespaces;
3. for each ``outbound`` entry ``[unix_path, port]``, listens on ``unix_path`` and relays every
   connection to ``127.0.0.1:port`` inside (the pod's own :8080, for the proxy outside);
4. with ``hosts`` (a list of names), gives the process a mount namespace whose /etc/hosts maps
   them to 127.0.0.1 (the tracing tests: v0.12's Zipkin exporter resolves its own name);
5. starts ``argv`` with ``env`` (stdout/stderr inherited), SIGKILLed if this launcher dies
   (``PR_SET_PDEATHSIG``, set from the main thread, which waits on it), forwards SIGTERM/SIGINT
   to it, and exits with its exit code.

Standard library only: it runs in a fresh interpreter, outside pytest.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
BUFFER = 65536


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _relay(conn: socket.socket, connect: Any) -> None:
    try:
        peer = connect()
    except OSError:
        conn.close()
        return
    back = threading.Thread(target=_pipe, args=(peer, conn), daemon=True)
    back.start()
    _pipe(conn, peer)
    back.join()
    conn.close()
    peer.close()


def _serve(listener: socket.socket, connect: Any) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_relay, args=(conn, connect), daemon=True).start()


def _to_unix(path: str) -> Any:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return s
    return connect


def _to_tcp(port: int) -> Any:
    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=10)
    return connect


_CLONE_NEWNS = 0x00020000


def _hosts(names: list[str], path: Path) -> None:
    """A mount namespace of this process's own whose /etc/hosts maps `names` to 127.0.0.1:
    nothing resolves a cluster name here, and v0.12's Zipkin exporter looks up the process's
    own service name before it exports anything (knative.dev/pkg tracing/opencensus.go,
    ``zipkin.NewEndpoint(name, name + ":80")``)."""
    if ctypes.CDLL(None, use_errno=True).unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    path.write_text("127.0.0.1 localhost " + " ".join(names) + "\n")
    subprocess.run(["mount", "--bind", str(path), "/etc/hosts"], check=True)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if spec.get("hosts"):
        _hosts(spec["hosts"], Path(spec_path).with_suffix(".hosts"))
    listeners: list[socket.socket] = []
    for port, path in spec.get("inbound", []):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(port)))
        s.listen(64)
        listeners.append(s)
        threading.Thread(target=_serve, args=(s, _to_unix(path)), daemon=True).start()
    for path, port in spec.get("outbound", []):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(64)
        listeners.append(s)
        threading.Thread(target=_serve, args=(s, _to_tcp(int(port))), daemon=True).start()

    child = subprocess.Popen(spec["argv"], env=spec["env"], stdin=subprocess.DEVNULL,
                             cwd=spec.get("cwd"), preexec_fn=_die_with_parent)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = child.wait()
    for path, _ in spec.get("outbound", []):
        with contextlib.suppress(OSError):
            os.unlink(path)
    sys.stdout.write(f"netns: {spec['argv'][0]} exited with {rc}\n")
    sys.stdout.flush()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
