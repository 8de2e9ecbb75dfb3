"""Real Knative Eventing v0.12.0 (what Kyma 1.11-1.20 ran) on an envtest kube-apiserver + etcd.

What is real: the upstream v0.12 ``controller`` (namespace, Broker, Trigger, Channel and
Subscription reconcilers among others), the InMemoryChannel controller and dispatcher, and the
per-namespace broker ingress and filter that the Broker reconciler deploys; the CRDs and
ConfigMaps as shipped (``hack/knative/build-v012.sh`` builds and copies them). Their
conditions and deliveries are Knative's own.

Three stand-ins make v0.12 run against a v1.34 API server with nothing but loopback
(REAL-KNATIVE.md §4, §7):

- :mod:`.crdapi`: serves the removed ``apiextensions.k8s.io/v1beta1`` CRD API from v1 (the
  v0.12 Subscription reconciler's informer needs it), everything else passed through;
- :mod:`.netns`: every process in a network namespace of its own (v0.12 binds :8080, :9090
  and :8008 in every process), reaching the API adapter and the forward proxy
  (:mod:`.proxy`) over Unix sockets, and reached through its own Unix socket;
- :class:`MiniKubelet`: starts the Deployments the Broker reconciler makes (image
  ``local/ingress`` / ``local/filter``) as processes, and writes what kubelet, the
  Deployment controller and the endpoints controller would: ``Available=False`` first, then,
  once the pod answers, Endpoints for its Services and ``Available=True``; when the process
  exits, empty Endpoints and ``Available=False``, then a restart (unless held).

What the test writes: the CRDs converted to apiextensions v1 (open schema), the system
Deployments' status, the dispatcher's Service Endpoints (placeholder address 192.0.2.10, never
dialed), and what the v0.12 webhook would have defaulted (no webhook runs). One v0.12 mesh per
session, on its OWN control plane. Needs root (``unshare -n``).
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Endpoints, Namespace, Service
from lightkube.types import PatchType

from tests.envtest.controlplane import (
    REPO_ROOT,
    ControlPlane,
    _die_with_parent,
    run_build_script,
)
from tests.envtest.fixtures import install_crds, wait_served

from . import netns
from .common import (
    LOG_TAIL_LINES,
    StatusWaiter,
    conditions,
    config_docs,
    from_dict,
    tail,
    utc_now,
)
from .crdapi import CrdApiAdapter
from .proxy import ForwardProxy, ServiceResolver, UnixHTTPConnection

BUILD_SCRIPT = REPO_ROOT / "hack" / "knative" / "build-v012.sh"
NETNS_LAUNCHER = Path(netns.__file__).resolve()
SYSTEM_NAMESPACE = "knative-eventing"
PLACEHOLDER_IP = "192.0.2.10"  # TEST-NET-1 (RFC 5737): written into Endpoints, never dialed
POD_PORT = 8080  # every v0.12 data-plane process serves here (in its own network namespace)
INGRESS_IMAGE = "local/ingress"
FILTER_IMAGE = "local/filter"
IMAGES = {INGRESS_IMAGE: "ingress", FILTER_IMAGE: "filter"}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# SIGTERM, then SIGKILL after this long: the v0.12 broker filter does not exit on SIGTERM
# within 10 s (measured), and nothing here needs a graceful stop.
POD_STOP_TIMEOUT = 2.0
POLL = 0.05
KUBELET_POLL = 0.2
FIRST_FAKE_PORT = 20001  # Endpoints ports of netns pods: keys for the proxy's Unix map only

CRD_FILES = ["300-*.yaml", "channels/in-memory-channel/300-in-memory-channel.yaml"]
CONFIGMAP_FILES = ["config-logging.yaml", "config-observability.yaml", "config-tracing.yaml",
                   "400-default-ch-config.yaml"]

KINDS: dict[str, tuple[str, str, str]] = {
    "Broker": ("eventing.knative.dev", "v1alpha1", "brokers"),
    "Trigger": ("eventing.knative.dev", "v1alpha1", "triggers"),
    "Channel": ("messaging.knative.dev", "v1alpha1", "channels"),
    "Subscription": ("messaging.knative.dev", "v1alpha1", "subscriptions"),
    "InMemoryChannel": ("messaging.knative.dev", "v1alpha1", "inmemorychannels"),
}
IMC_TEMPLATE = {"apiVersion": "messaging.knative.dev/v1alpha1", "kind": "InMemoryChannel"}


def resource(kind: str) -> Any:
    group, version, plural = KINDS[kind]
    return create_namespaced_resource(group, version, kind, plural)


def find_assets(build_script: Path = BUILD_SCRIPT) -> Path:
    """The folder with the five v0.12 binaries and ``config/`` (runs build-v012.sh; honours
    ``KNATIVE_V012_ASSETS``). Raises RuntimeError when the build fails: never skips."""
    return run_build_script(
        build_script, "knative v0.12", "Set KNATIVE_V012_ASSETS to a folder holding the "
        "binaries, or fix the build.")


def _docs(config_dir: Path, patterns: list[str], kind: str) -> list[dict[str, Any]]:
    return config_docs(config_dir, patterns, kind, "knative v0.12", "make knative-v012")


def crd_to_v1(crd: dict[str, Any]) -> dict[str, Any]:
    """A v0.12 apiextensions v1beta1 CRD as v1, with an open schema (no validation: the
    v0.12 webhook does not run either) and its subresources and printer columns per version."""
    spec = crd["spec"]
    versions = spec.get("versions") or [{"name": spec["version"], "served": True,
                                         "storage": True}]
    columns = [
        {"name": c["name"], "type": c["type"], "jsonPath": c["JSONPath"],
         **({"description": c["description"]} if c.get("description") else {})}
        for c in spec.get("additionalPrinterColumns") or []
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": crd["metadata"]["name"],
                     "labels": dict(crd["metadata"].get("labels") or {})},
        "spec": {
            "group": spec["group"], "names": spec["names"], "scope": spec["scope"],
            "versions": [{
                "name": v["name"], "served": v.get("served", True),
                "storage": v.get("storage", True),
                "schema": {"openAPIV3Schema": {"type": "object",
                                               "x-kubernetes-preserve-unknown-fields": True}},
                "subresources": spec.get("subresources") or {},
                **({"additionalPrinterColumns": columns} if columns else {}),
            } for v in versions],
        },
    }


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready=True, for the generation seen where the kind writes observedGeneration (the v0.12
    messaging Channel never does: REAL-KNATIVE.md, product finding)."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    return ((observed is None and obj.get("kind") == "Channel")
            or observed == obj["metadata"].get("generation")) \
        and conditions(obj).get("Ready", ("",))[0] == "True"


def deployment_status(generation: int | None, available: bool,
                      rolled_out: bool) -> dict[str, Any]:
    """What kube-controller-manager writes for a 1-replica Deployment: all available, or none
    (``rolled_out``: the rollout completed once, so Progressing stays NewReplicaSetAvailable)."""
    now = utc_now()
    n = 1 if available else 0
    return {
        "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": n or None, "availableReplicas": n or None,
        "unavailableReplicas": None if available else 1,
        "conditions": [
            {"type": "Available", "status": "True" if available else "False",
             "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "message": "Deployment has minimum availability." if available
             else "Deployment does not have minimum availability.",
             "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True",
             "reason": "NewReplicaSetAvailable" if rolled_out or available
             else "ReplicaSetUpdated",
             "message": "ReplicaSet has successfully progressed." if rolled_out or available
             else "ReplicaSet is progressing.",
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    }


def _http_ok(sock_path: Path, path: str = "/healthz", timeout: float = 1.0) -> bool:
    """True once a process answers HTTP through its Unix socket (any status)."""
    conn = UnixHTTPConnection(str(sock_path), timeout)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class UnixRelay:
    """Listens on a Unix socket and relays each connection to 127.0.0.1:port (outside the
    pods' namespaces: the API adapter, the forward proxy)."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(128)
        threading.Thread(target=netns._serve, args=(self._sock, netns._to_tcp(port)),
                         name=f"relay-{path.name}", daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


@dataclass
class Pod:
    """One v0.12 process in its own network namespace (a system process or a broker pod)."""

    key: str  # "controller", or "<ns>/<deployment>" for a pod the mini-kubelet runs
    binary: str
    env: dict[str, str]
    sock: Path | None = None  # serves the process's :8080 outside its namespace
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    starts: int = 0
    held: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KnativeV012Mesh(StatusWaiter):
    """Knative Eventing v0.12 for tests. Attributes after :meth:`start`: ``control_plane``,
    ``client`` (lightkube, admin, straight to the API server), ``kubeconfig_path`` (for the
    checker), ``proxy``, ``adapter``, ``pods`` (key → :class:`Pod`), ``log_dir``,
    ``start_seconds``."""

    LABEL, CONTROLLER_LOG = "knative v0.12", "controller"
    is_ready = staticmethod(is_ready)

    def __init__(self, assets_dir: Path | str | None = None, *,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.assets_dir = Path(assets_dir) if assets_dir else None
        self.start_timeout = start_timeout
        self.control_plane = ControlPlane(start_timeout=start_timeout)
        self._client: Client | None = None
        self.proxy: ForwardProxy | None = None
        self.adapter: CrdApiAdapter | None = None
        self.pods: dict[str, Pod] = {}
        self.log_dir: Path | None = None
        self.sock_dir: Path | None = None
        self.adapter_kubeconfig: Path | None = None
        self._relays: list[UnixRelay] = []
        self._fake_port = FIRST_FAKE_PORT
        self._lock = threading.RLock()
        self.kubelet: MiniKubelet | None = None
        self.start_seconds = 0.0
        # Set by the tracing tests: processes started from then on resolve their own service
        # names (netns.py ``hosts``), which v0.12's Zipkin exporter needs. Off: as before.
        self.trace_names = False

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("knative v0.12: mesh not started")
        return self._client

    @property
    def kubeconfig_path(self) -> Path:
        return self.control_plane.kubeconfig_path

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> KnativeV012Mesh:
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("knative v0.12: start the mesh from the main thread "
                               "(PR_SET_PDEATHSIG kills a child when its forking thread exits)")
        if shutil.which("unshare") is None or shutil.which("ip") is None:
            raise RuntimeError("knative v0.12: needs unshare (util-linux) and ip (iproute2)")
        if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
            raise RuntimeError("knative v0.12: `unshare -n` is not permitted here (needs root "
                               "or CAP_SYS_ADMIN): the v0.12 mesh runs one netns per process")
        if self.assets_dir is None:
            self.assets_dir = find_assets()
        config = self.assets_dir / "config"
        self.control_plane.start()
        assert self.control_plane.tmp_dir is not None
        self.log_dir = self.control_plane.tmp_dir / "knative-v012"
        self.log_dir.mkdir()
        # Unix socket paths are limited to 107 bytes: a short folder of its own.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="kn012-", dir="/tmp"))
        self._client = Client(KubeConfig.from_file(self.kubeconfig_path), trust_env=False)

        for ns in (SYSTEM_NAMESPACE,):
            self.client.create(from_dict(Namespace, {"metadata": {"name": ns}}))
        crds = [crd_to_v1(c) for c in _docs(config, CRD_FILES, "CustomResourceDefinition")]
        install_crds(self.client, crds, self.start_timeout)
        wait_served(self.control_plane, crds, self.start_timeout)
        for cm in _docs(config, CONFIGMAP_FILES, "ConfigMap"):
            self.client.create(from_dict(ConfigMap, cm))

        # The CRD API adapter and its kubeconfig (the admin's, with the adapter's URL).
        cp = self.control_plane
        certs = cp.tmp_dir / "certs"
        self.adapter = CrdApiAdapter(cp.port, cp.ca_path, cp.admin_cert_paths,
                                     (certs / "serving.crt", certs / "serving.key")).start()
        kubeconfig = yaml.safe_load(cp.kubeconfig_path.read_text())
        kubeconfig["clusters"][0]["cluster"]["server"] = self.adapter.url
        self.adapter_kubeconfig = self.log_dir / "adapter.kubeconfig"
        self.adapter_kubeconfig.write_text(yaml.safe_dump(kubeconfig))

        resolver = ServiceResolver(lambda: self.control_plane.http_client(timeout=5))
        self.proxy = ForwardProxy(resolver, log_path=self.log_dir / "proxy.log").start()
        self._relays = [UnixRelay(self.sock_dir / "api.sock", self.adapter.port),
                        UnixRelay(self.sock_dir / "proxy.sock", self.proxy.server_address[1])]

        # The IMC dispatcher's Deployment/Service/Endpoints (kubelet and the endpoints
        # controller are not here), and the two system Deployments' status.
        dispatcher_dep = _docs(config, ["channels/in-memory-channel/500-dispatcher.yaml"],
                               "Deployment")[0]
        dispatcher_svc = _docs(config, ["channels/in-memory-channel/200-dispatcher-service.yaml"],
                               "Service")[0]
        for dep in (_docs(config, ["500-controller.yaml"], "Deployment")
                    + _docs(config, ["channels/in-memory-channel/500-controller.yaml"],
                            "Deployment") + [dispatcher_dep]):
            self.client.create(from_dict(Deployment, dep))
            self.set_deployment_available(SYSTEM_NAMESPACE, dep["metadata"]["name"], False)
        self.client.create(from_dict(Service, dispatcher_svc))

        self._define_system_pods(dispatcher_svc)
        for pod in self.pods.values():
            self._spawn(pod)
        dispatcher = self.pods["dispatcher"]
        self._await_http(dispatcher, "/")
        self.write_endpoints(SYSTEM_NAMESPACE, "imc-dispatcher", dispatcher, True)
        for dep in ("eventing-controller", "imc-controller", "imc-dispatcher"):
            self.set_deployment_available(SYSTEM_NAMESPACE, dep, True)
        self.kubelet = MiniKubelet(self)
        self.kubelet.start()

    def stop(self) -> None:
        """Kill every process, stop the stand-ins and the control plane (idempotent)."""
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        with self._lock:
            for pod in self.pods.values():
                pod.held = True
                self._terminate(pod)
        for relay in self._relays:
            relay.close()
        self._relays = []
        for server in (self.proxy, self.adapter):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        self.proxy = self.adapter = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self.control_plane.stop()
        if self.sock_dir is not None:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
            self.sock_dir = None

    # -- processes --------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        assert self.proxy is not None and self.adapter_kubeconfig is not None
        proxy = f"http://127.0.0.1:{self.proxy.server_address[1]}"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": str(self.adapter_kubeconfig),
            "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
            "CONFIG_LOGGING_NAME": "config-logging",
            "CONFIG_OBSERVABILITY_NAME": "config-observability",
            # Cluster names go to the loopback proxy (relayed into each namespace).
            "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": "127.0.0.1,localhost",
        }

    def _define_system_pods(self, dispatcher_svc: dict[str, Any]) -> None:
        assert self.sock_dir is not None
        base = self.base_env()
        self.pods = {
            "controller": Pod("controller", "controller", {
                **base, "METRICS_DOMAIN": "knative.dev/eventing",
                "BROKER_INGRESS_IMAGE": INGRESS_IMAGE, "BROKER_FILTER_IMAGE": FILTER_IMAGE,
                "BROKER_INGRESS_SERVICE_ACCOUNT": "eventing-broker-ingress",
                "BROKER_FILTER_SERVICE_ACCOUNT": "eventing-broker-filter",
                "BROKER_IMAGE_PULL_SECRET_NAME": "",
            }),
            "channel-controller": Pod("channel-controller", "channel_controller", {
                **base, "METRICS_DOMAIN": "knative.dev/inmemorychannel-controller",
            }),
            "dispatcher": Pod("dispatcher", "channel_dispatcher", {
                **base, "METRICS_DOMAIN": "knative.dev/inmemorychannel-dispatcher",
            }, sock=self.sock_dir / "imc-dispatcher.sock"),
        }

    def _spawn(self, pod: Pod) -> None:
        """Start ``pod`` through the netns launcher. Call from the main thread or the
        mini-kubelet's (long-lived) thread: PR_SET_PDEATHSIG fires when the forking thread
        exits (REAL-KNATIVE.md §7)."""
        assert self.assets_dir is not None and self.log_dir is not None
        assert self.sock_dir is not None and self.adapter is not None and self.proxy is not None
        pod.starts += 1
        name = pod.key.replace("/", "-")
        env = {"POD_NAME": f"{name}-local-{pod.starts}", **pod.env}
        spec = {
            "argv": [str(self.assets_dir / pod.binary)], "env": env, "cwd": str(self.log_dir),
            "inbound": [[self.adapter.port, str(self.sock_dir / "api.sock")],
                        [self.proxy.server_address[1], str(self.sock_dir / "proxy.sock")]],
            "outbound": [[str(pod.sock), POD_PORT]] if pod.sock else [],
        }
        if self.trace_names:
            spec["hosts"] = self._own_names(env)
        spec_path = self.log_dir / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        pod.log = self.log_dir / f"{name}.log"
        if pod.sock is not None:
            with contextlib.suppress(FileNotFoundError):
                pod.sock.unlink()
        with pod.log.open("ab") as f:
            f.write(f"--- {time.strftime('%H:%M:%S')} start #{pod.starts}\n".encode())
            f.flush()
            pod.proc = subprocess.Popen(
                ["unshare", "-n", "--", sys.executable, str(NETNS_LAUNCHER), str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                cwd=self.log_dir, preexec_fn=_die_with_parent)

    @staticmethod
    def _own_names(env: dict[str, str]) -> list[str]:
        """The service names a v0.12 process traces under (pkg/tracing/names.go; the IMC
        dispatcher's "imc-dispatcher"), which its Zipkin exporter resolves at setup."""
        names = ["imc-dispatcher"]
        if env.get("BROKER") and env.get("NAMESPACE"):
            names += [f"{env['BROKER']}-broker.{env['NAMESPACE']}",
                      f"{env['BROKER']}-broker-filter.{env['NAMESPACE']}"]
        return names

    def _await_http(self, pod: Pod, path: str = "/healthz",
                    timeout: float | None = None) -> None:
        """Wait until ``pod`` answers HTTP on its :8080 (through its Unix socket)."""
        assert pod.sock is not None
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while not (pod.sock.exists() and _http_ok(pod.sock, path)):
            if not pod.running or time.monotonic() > deadline:
                raise RuntimeError(
                    f"knative v0.12: {pod.key} does not answer on :{POD_PORT} (exit code "
                    f"{pod.proc.poll() if pod.proc else None}); last lines of {pod.log}:\n"
                    f"{tail(pod.log)}")
            time.sleep(POLL)

    @staticmethod
    def _terminate(pod: Pod, sig: int = signal.SIGTERM) -> None:
        proc = pod.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=POD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, key: str, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.pods[key].log, lines)

    def rss_bytes(self) -> dict[str, int]:
        """Resident set size of each running Knative binary (the launcher's child)."""
        out: dict[str, int] = {}
        for key, pod in list(self.pods.items()):
            if not (pod.running and pod.proc is not None):
                continue
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{pod.proc.pid}/task/{pod.proc.pid}/children")
                for pid in children.read_text().split():
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            out[key] = int(line.split()[1]) * 1024
        return out

    # -- fault helpers --------------------------------------------------------------------------

    def kill_pod(self, ns: str, deployment: str, *, hold: bool = False) -> None:
        """SIGKILL a broker pod's process (``default-broker-ingress``/``-filter``): the
        mini-kubelet notices, empties its Endpoints, writes Available=False and (unless
        ``hold``) restarts it."""
        with self._lock:
            pod = self.pods[f"{ns}/{deployment}"]
            pod.held = hold
            if pod.proc is not None and pod.proc.poll() is None:
                pod.proc.kill()

    def hold_pod(self, ns: str, deployment: str, held: bool = True) -> None:
        """Keep a broker pod down (``held``) or let the mini-kubelet start it again."""
        with self._lock:
            self.pods[f"{ns}/{deployment}"].held = held

    def stop_dispatcher(self) -> None:
        """SIGKILL the IMC dispatcher (its Deployment and Endpoints are left as they were)."""
        with self._lock:
            self._terminate(self.pods["dispatcher"], signal.SIGKILL)

    def start_dispatcher(self) -> None:
        """Restart the IMC dispatcher and wait until it answers."""
        with self._lock:
            pod = self.pods["dispatcher"]
            if not pod.running:
                self._spawn(pod)
        self._await_http(pod, "/")

    # -- what kube-controller-manager / the endpoints controller would write ---------------

    def set_deployment_available(self, ns: str, name: str, available: bool,
                                 rolled_out: bool = False) -> None:
        dep = self.client.get(Deployment, name, namespace=ns)
        generation = dep.metadata.generation if dep.metadata else None
        self.client.patch(Deployment.Status, name,
                          {"status": deployment_status(generation, available, rolled_out)},
                          namespace=ns, patch_type=PatchType.MERGE)

    def fake_port(self, pod: Pod) -> int:
        """The Endpoints port standing for ``pod`` (the proxy dials its Unix socket)."""
        assert self.proxy is not None and pod.sock is not None
        with self._lock:
            for port, path in self.proxy.unix_sockets.items():
                if path == str(pod.sock):
                    return port
            port = self._fake_port
            self._fake_port += 1
            self.proxy.unix_sockets[port] = str(pod.sock)
            return port

    def write_endpoints(self, ns: str, service: str, pod: Pod, ready: bool) -> None:
        """The Endpoints of ``service``: ``pod`` (at the placeholder address, each Service
        port's name with the pod's fake port) or none (``subsets: []``)."""
        svc = self.client.get(Service, service, namespace=ns)
        port = self.fake_port(pod)
        ports = [{"name": p.name, "port": port, "protocol": "TCP"}
                 for p in (svc.spec.ports if svc.spec else None) or []]
        subsets = [{"addresses": [{"ip": PLACEHOLDER_IP}], "ports": ports}] if ready else []
        body = {"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": service, "namespace": ns}, "subsets": subsets}
        try:
            self.client.create(from_dict(Endpoints, body))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            self.client.patch(Endpoints, service, {"subsets": subsets}, namespace=ns,
                              patch_type=PatchType.MERGE)

    # -- namespaces, objects --------------------------------------------------------------------

    def new_namespace(self, stem: str = "test", labels: dict[str, str] | None = None) -> str:
        stem = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:40].strip("-") or "test"
        name = f"{stem}-{uuid.uuid4().hex[:6]}"
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = labels
        self.client.create(from_dict(Namespace, {"metadata": meta}))
        return name

    def create(self, kind: str, ns: str, name: str, spec: dict[str, Any], *,
               labels: dict[str, str] | None = None) -> dict[str, Any]:
        group, version, _ = KINDS[kind]
        meta: dict[str, Any] = {"name": name, "namespace": ns}
        if labels:
            meta["labels"] = labels
        obj = self.client.create(from_dict(resource(kind), {
            "apiVersion": f"{group}/{version}", "kind": kind, "metadata": meta, "spec": spec}))
        return dict(obj.to_dict())

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        return dict(self.client.get(resource(kind), name, namespace=ns).to_dict())

    def list(self, kind: str, ns: str) -> list[dict[str, Any]]:
        return [dict(o.to_dict()) for o in self.client.list(resource(kind), namespace=ns)]

    def default_broker(self, ns: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for Broker ``default``, made by the v0.12 namespace reconciler for a namespace
        labelled ``knative-eventing-injection=enabled``, and set what the webhook would have
        defaulted: ``spec.channelTemplateSpec`` (InMemoryChannel, default-ch-webhook's)."""
        broker = self.wait_until("Broker", ns, "default", lambda o: True, timeout,
                                 "Broker default created by the namespace reconciler")
        if not (broker.get("spec") or {}).get("channelTemplateSpec"):
            self.client.patch(resource("Broker"), "default",
                              {"spec": {"channelTemplateSpec": dict(IMC_TEMPLATE)}},
                              namespace=ns, patch_type=PatchType.MERGE)
        return self.get("Broker", ns, "default")

    def wait_pods_available(self, ns: str, timeout: float = 30.0,
                            names: tuple[str, ...] = ("default-broker-ingress",
                                                      "default-broker-filter")) -> None:
        """Wait until the mini-kubelet runs each broker pod of ``ns`` and has written its
        Deployment Available=True. (The v0.12 Broker reads a Deployment without status as
        available, so "Broker Ready" alone can come before any pod runs.)"""
        deadline = time.monotonic() + timeout
        while True:
            pending = []
            for name in names:
                pod = self.pods.get(f"{ns}/{name}")
                try:
                    dep = self.client.get(Deployment, name, namespace=ns)
                    conds = {c.type: c.status for c in
                             ((dep.status.conditions if dep.status else None) or [])}
                except ApiError:
                    conds = {}
                if pod is None or not pod.running or conds.get("Available") != "True":
                    pending.append(f"{name}: running={pod is not None and pod.running} "
                                   f"Available={conds.get('Available')}")
            if not pending:
                return
            if time.monotonic() > deadline:
                events = self.kubelet.events[-10:] if self.kubelet else []
                raise AssertionError(f"knative v0.12: broker pods of {ns} not available in "
                                     f"{timeout:.0f}s: {pending}; kubelet: {events}")
            time.sleep(POLL)

    @staticmethod
    def send_event(url: str, type_: str, *, source: str, proxy: str, data: Any = None,
                   extra_headers: dict[str, str] | None = None,
                   timeout: float = 10.0) -> httpx.Response:
        """POST a binary-mode CloudEvent (its id in ``response.request.headers["ce-id"]``) to
        a cluster URL through the mesh's proxy."""
        headers = {"ce-specversion": "0.3", "ce-id": uuid.uuid4().hex, "ce-type": type_,
                   "ce-source": source, "content-type": "application/json",
                   **(extra_headers or {})}
        with httpx.Client(trust_env=False, timeout=timeout, proxy=proxy) as http_:
            return http_.post(url, headers=headers, content=json.dumps(data or {}).encode())


class MiniKubelet:
    """Runs the Deployments the v0.12 Broker reconciler makes as processes (see module doc).

    A long-lived thread: it is the thread that forks the pods, so PR_SET_PDEATHSIG (which
    fires when the forking THREAD exits) only fires when the kubelet stops.
    """

    def __init__(self, mesh: KnativeV012Mesh) -> None:
        self.mesh = mesh
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rolled_out: set[str] = set()
        self._available: dict[str, bool] = {}
        self.events: list[str] = []
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mini-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)
            self._thread = None

    def _log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.events.append(line)
        assert self.mesh.log_dir is not None
        with (self.mesh.log_dir / "kubelet.log").open("a") as f:
            f.write(line + "\n")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep running; the next pass retries
                self.error = exc
                self._log(f"sync failed: {type(exc).__name__}: {exc}")
            self._stop.wait(KUBELET_POLL)
        with self.mesh._lock:
            for key, pod in self.mesh.pods.items():
                if "/" in key:
                    pod.held = True
                    self.mesh._terminate(pod)

    def _sync(self) -> None:
        mesh = self.mesh
        seen: set[str] = set()
        for dep in mesh.client.list(Deployment, namespace="*"):
            meta, spec = dep.metadata, dep.spec
            if meta is None or spec is None or spec.template.spec is None:
                continue
            containers = spec.template.spec.containers
            role = IMAGES.get(containers[0].image or "") if containers else None
            if role is None:
                continue
            ns, name = str(meta.namespace), str(meta.name)
            key = f"{ns}/{name}"
            seen.add(key)
            if meta.deletionTimestamp is not None:
                continue
            self._sync_pod(key, ns, name, role, dep)
        for key, pod in list(mesh.pods.items()):
            if "/" in key and key not in seen and pod.running:
                self._log(f"{key}: Deployment gone, stopping its pod")
                pod.held = True
                mesh._terminate(pod)

    def _sync_pod(self, key: str, ns: str, name: str, role: str, dep: Deployment) -> None:
        mesh = self.mesh
        assert mesh.sock_dir is not None and dep.metadata is not None
        with mesh._lock:
            pod = mesh.pods.get(key)
            if pod is None:
                pod = mesh.pods[key] = Pod(key, role, {}, sock=mesh.sock_dir / f"{ns}.{name}.sock")
            generation = dep.metadata.generation
            status = dep.status
            observed = status.observedGeneration if status else None
            if not pod.running:
                if self._available.get(key, True) or observed != generation:
                    # Never seen yet, or just exited: as the Deployment controller would.
                    self._set(key, ns, name, False)
                    self._endpoints(ns, dep, pod, False)
                    if pod.proc is not None:
                        self._log(f"{key}: exited rc={pod.proc.returncode}: Endpoints emptied, "
                                  "Available=False")
                if pod.held:
                    return
                pod.env = self._pod_env(ns, dep)
                mesh._spawn(pod)
                self._log(f"{key}: started #{pod.starts} ({role})")
                return
        assert pod.sock is not None
        ready = pod.sock.exists() and _http_ok(pod.sock, "/healthz")
        if ready:
            self._endpoints(ns, dep, pod, True)
        if ready != self._available.get(key) or observed != generation:
            self._set(key, ns, name, ready)
            if ready:
                self._log(f"{key}: answers /healthz: Endpoints ready, Available=True")

    def _set(self, key: str, ns: str, name: str, available: bool) -> None:
        if available:
            self._rolled_out.add(key)
        self.mesh.set_deployment_available(ns, name, available, key in self._rolled_out)
        self._available[key] = available

    def _endpoints(self, ns: str, dep: Deployment, pod: Pod, ready: bool) -> None:
        """Endpoints for every Service in ``ns`` whose selector matches the pod's labels."""
        mesh = self.mesh
        assert dep.spec is not None
        labels = (dep.spec.template.metadata.labels if dep.spec.template.metadata else None) or {}
        for svc in mesh.client.list(Service, namespace=ns):
            selector = (svc.spec.selector if svc.spec else None) or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            assert svc.metadata is not None and svc.metadata.name is not None
            try:
                current = mesh.client.get(Endpoints, svc.metadata.name, namespace=ns)
                has = bool(current.subsets)
            except ApiError:
                has = None
            if has is None or has != ready:
                mesh.write_endpoints(ns, svc.metadata.name, pod, ready)

    def _pod_env(self, ns: str, dep: Deployment) -> dict[str, str]:
        """The pod template's env, fieldRefs resolved, plus what a pod in a cluster has
        (the API server, through the adapter; the proxy for cluster names)."""
        assert dep.spec is not None and dep.spec.template.spec is not None
        env = self.mesh.base_env()
        container = dep.spec.template.spec.containers[0]
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.valueFrom is not None and var.valueFrom.fieldRef is not None:
                path = var.valueFrom.fieldRef.fieldPath
                if path == "metadata.namespace":
                    env[var.name] = ns
                # metadata.name: the launcher's POD_NAME (a new name per start)
            else:
                env[var.name] = ""
        env.pop("POD_NAME", None)
        return env


def kyma_objects_from_example(example: Path) -> list[dict[str, Any]]:
    """Every object of an example dump (``examples/<name>/*.yaml``), as dicts."""
    objects: list[dict[str, Any]] = []
    for path in sorted(example.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                objects += [copy.deepcopy(o) for o in doc.get("items", [doc])
                            if isinstance(o, dict)]
    return objects
