"""Real Knative Eventing v1 (knative.dev/eventing v0.48.0) on an envtest kube-apiserver + etcd.

What is real: the upstream Channel, Subscription, MT Broker, Trigger and InMemoryChannel
reconcilers (one process, ``hack/knative/cmd/eventing-controllers``), the IMC dispatcher, the
broker ingress and the broker filter (the upstream mains), the CRDs and ConfigMaps as shipped.
Their conditions and deliveries are Knative's own.

What the test writes, because no kubelet, kube-controller-manager, kube-proxy, cluster DNS or
Knative webhook runs:

- the system Deployments (upstream names and pod templates, image replaced) and their status,
  written through ``/status`` as kube-controller-manager would;
- the Services and Endpoints ``imc-dispatcher``, ``broker-ingress``, ``broker-filter`` and
  ``eventing-webhook``; the
  Endpoints hold the placeholder address 192.0.2.10 (the API server rejects loopback ones), which
  nothing ever dials: only their ports are used, by the loopback proxy (:mod:`.proxy`);
- the fields the Knative defaulting webhook would have set (``create_*`` helpers); no
  validation runs, so a spec a real cluster rejects is accepted here.

The mesh runs on its OWN control plane: Knative v1's CRDs have the same names as the v1alpha1
test CRDs (``tests/crds``) the shared ``control_plane`` serves. One mesh per machine at a time:
the dispatcher's ports 8080/8443 are hard-coded upstream.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Endpoints, Namespace, Service
from lightkube.types import PatchType

from tests.envtest.controlplane import (
    REPO_ROOT,
    ControlPlane,
    _die_with_parent,
    free_port,
    run_build_script,
)
from tests.envtest.fixtures import install_crds, wait_served

from .common import (
    LOG_TAIL_LINES,
    StatusWaiter,
    conditions,
    config_docs,
    describe,
    from_dict,
    tail,
    utc_now,
)
from .proxy import ForwardProxy, ServiceResolver, wait_listening

BUILD_SCRIPT = REPO_ROOT / "hack" / "knative" / "build.sh"
SYSTEM_NAMESPACE = "knative-eventing"
PLACEHOLDER_IP = "192.0.2.10"  # TEST-NET-1 (RFC 5737): written into Endpoints, never dialed
DISPATCHER_HTTP_PORT = 8080  # hard-coded in the upstream dispatcher (httpPort const)
DISPATCHER_HTTPS_PORT = 8443  # hard-coded too (httpsPort const)
MIN_SERVER_VERSION = (1, 33)  # knative.dev/pkg's minimum for v0.48.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL = 0.05

CRD_FILES = ["core/resources/*.yaml", "channels/in-memory-channel/resources/*.yaml"]
CONFIGMAP_FILES = ["core/configmaps/*.yaml", "channels/in-memory-channel/configmaps/*.yaml"]
DEPLOYMENT_FILES = [
    "core/deployments/controller.yaml",
    "core/deployments/webhook.yaml",
    "channels/in-memory-channel/deployments/controller.yaml",
    "channels/in-memory-channel/deployments/dispatcher.yaml",
    "brokers/mt-channel-broker/deployments/controller.yaml",
    "brokers/mt-channel-broker/deployments/broker-ingress.yaml",
    "brokers/mt-channel-broker/deployments/broker-filter.yaml",
]
SERVICE_FILES = [
    "core/deployments/webhook.yaml",
    "channels/in-memory-channel/deployments/dispatcher-service.yaml",
    "brokers/mt-channel-broker/deployments/broker-ingress.yaml",
    "brokers/mt-channel-broker/deployments/broker-filter.yaml",
]

# Knative kinds the helpers know: kind -> (group, version, plural).
KINDS: dict[str, tuple[str, str, str]] = {
    "Broker": ("eventing.knative.dev", "v1", "brokers"),
    "Trigger": ("eventing.knative.dev", "v1", "triggers"),
    "Channel": ("messaging.knative.dev", "v1", "channels"),
    "Subscription": ("messaging.knative.dev", "v1", "subscriptions"),
    "InMemoryChannel": ("messaging.knative.dev", "v1", "inmemorychannels"),
    "EventType": ("eventing.knative.dev", "v1beta3", "eventtypes"),
}
BROKER_CLASS = "MTChannelBasedBroker"


def resource(kind: str) -> Any:
    """The lightkube generic resource class of a Knative v1 kind in :data:`KINDS`."""
    group, version, plural = KINDS[kind]
    return create_namespaced_resource(group, version, kind, plural)


def find_assets(build_script: Path = BUILD_SCRIPT) -> Path:
    """The folder with the four binaries and ``config/`` (runs ``hack/knative/build.sh``).

    Honours ``KNATIVE_ASSETS`` (through the script). Raises RuntimeError with the reason when
    the build fails: the knative tests fail, never skip, without the real components.
    """
    return run_build_script(
        build_script, "knative", "cannot get the Knative binaries. Set KNATIVE_ASSETS to a "
        "folder holding them, or fix the build.")


def _docs(config_dir: Path, patterns: list[str], kind: str) -> list[dict[str, Any]]:
    return config_docs(config_dir, patterns, kind, "knative", "rebuild: make knative")


def _port_taken(port: int) -> bool:
    """True if a listener holds ``port`` (bound like Go does: all addresses, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready=True for the generation the controller last saw (a stale Ready is not ready)."""
    status = obj.get("status") or {}
    return (status.get("observedGeneration") == obj["metadata"].get("generation")
            and conditions(obj).get("Ready", ("",))[0] == "True")


def _acknowledged(channel: dict[str, Any]) -> bool:
    """Every ``spec.subscribers`` entry is ready in ``status.subscribers`` at its generation."""
    acks = {(s.get("uid"), s.get("observedGeneration")): s.get("ready")
            for s in (channel.get("status") or {}).get("subscribers") or []}
    return all(acks.get((s.get("uid"), s.get("generation"))) == "True"
               for s in (channel.get("spec") or {}).get("subscribers") or [])


def _destination(dest: dict[str, Any] | None, uri: str | None, ns: str) -> dict[str, Any] | None:
    """A Destination with the ref namespace the webhook would default, or None."""
    if dest is None and uri is None:
        return None
    out: dict[str, Any] = {}
    if dest is not None:
        out["ref"] = {"namespace": ns, **dest}
    if uri is not None:
        out["uri"] = uri
    return out


def _delivery(delivery: dict[str, Any] | None, ns: str) -> dict[str, Any] | None:
    if delivery is None:
        return None
    out = copy.deepcopy(delivery)
    dls = out.get("deadLetterSink")
    if isinstance(dls, dict) and isinstance(dls.get("ref"), dict):
        dls["ref"] = {"namespace": ns, **dls["ref"]}
    return out


@dataclass
class Component:
    """One Knative process: its binary, env, ports it must listen on, log file and Popen."""

    name: str
    binary: str
    env: dict[str, str]
    listens: tuple[int, ...] = ()
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KnativeMesh(StatusWaiter):
    """A running Knative Eventing v1 on its own kube-apiserver + etcd, with helpers for tests.

    Attributes after :meth:`start`: ``control_plane``, ``client`` (lightkube, admin),
    ``kubeconfig_path``, ``proxy`` (:class:`.proxy.ForwardProxy`), ``proxy_url``,
    ``ingress_port``, ``filter_port``, ``components`` (name → :class:`Component`: "controllers",
    "dispatcher", "ingress", "filter"), ``log_dir``.
    """

    LABEL, CONTROLLER_LOG = "knative", "controllers"
    is_ready = staticmethod(is_ready)

    def __init__(self, assets_dir: Path | str | None = None, *,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.assets_dir = Path(assets_dir) if assets_dir else None
        self.start_timeout = start_timeout
        self.control_plane = ControlPlane(start_timeout=start_timeout)
        self._client: Client | None = None
        self.proxy: ForwardProxy | None = None
        self.components: dict[str, Component] = {}
        self.ingress_port = self.ingress_https_port = 0
        self.filter_port = self.filter_https_port = 0
        self.log_dir: Path | None = None
        self._deployments: dict[str, dict[str, Any]] = {}
        self._services: dict[str, dict[str, Any]] = {}
        self._endpoint_ports: dict[str, list[dict[str, Any]]] = {}
        self.start_seconds = 0.0

    # -- properties ------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("knative: mesh not started")
        return self._client

    @property
    def kubeconfig_path(self) -> Path:
        return self.control_plane.kubeconfig_path

    @property
    def proxy_url(self) -> str:
        """``http://127.0.0.1:<port>``: what the Knative processes have as HTTP(S)_PROXY."""
        if self.proxy is None:
            raise RuntimeError("knative: mesh not started")
        return self.proxy.url

    def ingress_url(self, ns: str, broker: str) -> str:
        """Loopback URL of a Broker at the real broker ingress (which routes by path)."""
        return f"http://127.0.0.1:{self.ingress_port}/{ns}/{broker}"

    def channel_url(self, ns: str, name: str) -> str:
        """Loopback URL of a Channel at the real IMC dispatcher.

        The dispatcher routes by Host header, or by path ``/<ns>/<imc>`` when the path is not
        ``/``; a messaging Channel's backing InMemoryChannel has the Channel's name.
        """
        return f"http://127.0.0.1:{DISPATCHER_HTTP_PORT}/{ns}/{name}"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> KnativeMesh:
        """Control plane, CRDs, ConfigMaps, system objects, proxy, then the four processes."""
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
            raise RuntimeError("knative: start the mesh from the main thread (PR_SET_PDEATHSIG "
                               "kills a child when the thread that forked it exits)")
        for port in (DISPATCHER_HTTP_PORT, DISPATCHER_HTTPS_PORT):
            if _port_taken(port):
                raise RuntimeError(
                    f"knative: port {port} is already in use; the real IMC dispatcher needs "
                    f"{DISPATCHER_HTTP_PORT} and {DISPATCHER_HTTPS_PORT} (hard-coded upstream). "
                    "Stop whatever holds it (another knative test session?).")
        if self.assets_dir is None:
            self.assets_dir = find_assets()
        config = self.assets_dir / "config"
        self.control_plane.start()
        assert self.control_plane.tmp_dir is not None
        self.log_dir = self.control_plane.tmp_dir / "knative"
        self.log_dir.mkdir()
        self._check_server_version()
        self._client = Client(KubeConfig.from_file(self.kubeconfig_path), trust_env=False)

        self.client.create(from_dict(Namespace, {"metadata": {"name": SYSTEM_NAMESPACE}}))
        crds = _docs(config, CRD_FILES, "CustomResourceDefinition")
        for crd in crds:
            # eventtype, pingsource and requestreply declare a conversion webhook to Service
            # eventing-webhook, which does not run: strategy None, so nothing ever calls it.
            crd["spec"].pop("conversion", None)
            if crd["metadata"]["name"] == "eventtypes.eventing.knative.dev":
                # Without that webhook, a v1beta3 EventType (what the ingress creates) stored
                # as v1beta2 (the shipped storage version) would lose spec.attributes to
                # pruning: store v1beta3, the version everything here writes and reads.
                for version in crd["spec"]["versions"]:
                    version["storage"] = version["name"] == "v1beta3"
        install_crds(self.client, crds, self.start_timeout)
        wait_served(self.control_plane, crds, self.start_timeout)
        for cm in _docs(config, CONFIGMAP_FILES, "ConfigMap"):
            self.client.create(from_dict(ConfigMap, cm))

        for dep in _docs(config, DEPLOYMENT_FILES, "Deployment"):
            for container in dep["spec"]["template"]["spec"]["containers"]:
                # Nothing pulls or runs images: any valid reference string does.
                container["image"] = container["image"].removeprefix("ko://")
            self.client.create(from_dict(Deployment, dep))
            self._deployments[dep["metadata"]["name"]] = dep
        for name in self._deployments:
            self.set_deployment_available(name, False)  # as before any pod is ready

        self.ingress_port, self.ingress_https_port = free_port(), free_port()
        self.filter_port, self.filter_https_port = free_port(), free_port()
        process_ports = {
            "imc-dispatcher": (DISPATCHER_HTTP_PORT, DISPATCHER_HTTPS_PORT),
            "broker-ingress": (self.ingress_port, self.ingress_https_port),
            "broker-filter": (self.filter_port, self.filter_https_port),
            # As on a cluster, the webhook's Service has a ready endpoint; nothing listens
            # or calls it (no webhook configuration is registered: REAL-KNATIVE.md §6).
            "eventing-webhook": (free_port(), free_port()),
        }
        for svc in _docs(config, SERVICE_FILES, "Service"):
            name = svc["metadata"]["name"]
            if name not in process_ports:
                continue
            http_port, https_port = process_ports[name]
            ep_ports = []
            for p in svc["spec"]["ports"]:
                if p["port"] in (80, 443):  # the metrics port stays unserved (no metrics)
                    p["targetPort"] = http_port if p["port"] == 80 else https_port
                    ep_ports.append({"name": p["name"], "port": p["targetPort"],
                                     "protocol": "TCP"})
            self.client.create(from_dict(Service, svc))
            self._services[name] = svc
            self._endpoint_ports[name] = ep_ports
            self.set_endpoints(name, True)

        resolver = ServiceResolver(lambda: self.control_plane.http_client(timeout=5))
        self.proxy = ForwardProxy(resolver, log_path=self.log_dir / "proxy.log").start()
        self._define_components()
        for comp in self.components.values():
            self._spawn(comp)
        for comp in self.components.values():
            self._await_listening(comp)
        for name in self._deployments:
            self.set_deployment_available(name, True)

    def stop(self) -> None:
        """Kill the processes, stop the proxy and the control plane (best effort, idempotent)."""
        for comp in self.components.values():
            self._terminate(comp)
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self.control_plane.stop()

    def __enter__(self) -> KnativeMesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_server_version(self) -> None:
        with self.control_plane.http_client() as http:
            info = http.get("/version").json()
        m = re.match(r"v(\d+)\.(\d+)", info.get("gitVersion", ""))
        if not m or (int(m[1]), int(m[2])) < MIN_SERVER_VERSION:
            raise RuntimeError(
                f"knative: kube-apiserver reports {info.get('gitVersion')!r}; Knative v0.48.0 "
                f"needs >= v{MIN_SERVER_VERSION[0]}.{MIN_SERVER_VERSION[1]} (hack/envtest/"
                "build.sh stamps the real version)")

    # -- processes --------------------------------------------------------------------------

    def _define_components(self) -> None:
        assert self.proxy is not None
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": str(self.kubeconfig_path),
            "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
            "CONFIG_LOGGING_NAME": "config-logging",
            "CONFIG_OBSERVABILITY_NAME": "config-observability",
            "PROFILING_PORT": "0",  # sharedmain serves pprof on :8008 otherwise: one per host
            # Cluster names go to the loopback proxy (DNS + kube-proxy stand-in). HTTPS too:
            # the OIDC discovery at https://kubernetes.default.svc would otherwise query the
            # machine's resolver. Go never proxies loopback (the API server, test receivers).
            "HTTP_PROXY": self.proxy.url,
            "HTTPS_PROXY": self.proxy.url,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        self.components = {
            "controllers": Component("controllers", "eventing-controllers", {
                **base, "METRICS_DOMAIN": "knative.dev/eventing",
                "POD_NAME": "eventing-controllers-local", "CONTAINER_NAME": "controller",
                "DISPATCHER_IMAGE": "knative.dev/eventing/cmd/in_memory/channel_dispatcher",
            }),
            "dispatcher": Component("dispatcher", "channel_dispatcher", {
                **base, "METRICS_DOMAIN": "knative.dev/inmemorychannel-dispatcher",
                "CONTAINER_NAME": "dispatcher",
                "MAX_IDLE_CONNS": "1000", "MAX_IDLE_CONNS_PER_HOST": "1000",
            }, (DISPATCHER_HTTP_PORT,),
                # One replica: no leader election. With it, a restarted dispatcher (a new pod
                # identity) waits for the dead one's lease to expire (lease-duration 60 s in
                # config-leader-election) before it routes or acknowledges subscribers.
                ["--disable-ha"]),
            "ingress": Component("ingress", "ingress", {
                **base, "METRICS_DOMAIN": "knative.dev/internal/eventing",
                "CONTAINER_NAME": "ingress",
                "INGRESS_PORT": str(self.ingress_port),
                "INGRESS_PORT_HTTPS": str(self.ingress_https_port),
            }, (self.ingress_port,)),
            "filter": Component("filter", "filter", {
                **base, "METRICS_DOMAIN": "knative.dev/internal/eventing",
                "NAMESPACE": SYSTEM_NAMESPACE, "CONTAINER_NAME": "filter",
                "FILTER_PORT": str(self.filter_port),
                "FILTER_PORT_HTTPS": str(self.filter_https_port),
            }, (self.filter_port,)),
        }

    def _spawn(self, comp: Component) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("knative: start processes from the main thread (PR_SET_PDEATHSIG)")
        assert self.assets_dir is not None and self.log_dir is not None
        comp.starts += 1
        # A new pod name per start, as a restarted pod would have.
        env = {"POD_NAME": f"{comp.name}-local-{comp.starts}", **comp.env}
        comp.log = self.log_dir / f"{comp.name}.log"
        with comp.log.open("ab") as f:
            f.write(f"--- {time.strftime('%H:%M:%S')} start #{comp.starts}\n".encode())
            f.flush()
            comp.proc = subprocess.Popen(
                [str(self.assets_dir / comp.binary), *comp.args], env=env,
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                cwd=self.log_dir, preexec_fn=_die_with_parent)

    def _await_listening(self, comp: Component) -> None:
        assert comp.proc is not None and comp.log is not None
        for port in comp.listens:
            if not wait_listening(port, self.start_timeout, lambda: comp.running):
                raise RuntimeError(
                    f"knative: {comp.name} not listening on 127.0.0.1:{port} "
                    f"(exit code {comp.proc.poll()}); last lines of {comp.log}:\n"
                    f"{tail(comp.log)}")
        if not comp.running:
            raise RuntimeError(f"knative: {comp.name} exited with code {comp.proc.returncode}; "
                               f"last lines of {comp.log}:\n{tail(comp.log)}")

    @staticmethod
    def _terminate(comp: Component, sig: int = signal.SIGTERM) -> None:
        proc = comp.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def stop_component(self, name: str) -> None:
        """SIGKILL one process ("controllers", "dispatcher", "ingress", "filter"): a crashed pod.

        Only the process: its Deployment status and Endpoints stay as they were (as in the
        seconds before kubelet and the endpoints controller notice); change them with
        :meth:`set_deployment_available` / :meth:`set_endpoints`.
        """
        self._terminate(self.components[name], signal.SIGKILL)

    def start_component(self, name: str) -> None:
        """(Re)start one process (new POD_NAME) and wait until it listens again."""
        comp = self.components[name]
        if comp.running:
            return
        self._spawn(comp)
        self._await_listening(comp)

    def stop_dispatcher(self) -> None:
        """Kill the IMC dispatcher (its Deployment and Endpoints are left as they were)."""
        self.stop_component("dispatcher")

    def start_dispatcher(self) -> None:
        """Restart the IMC dispatcher on :8080 and wait until it listens."""
        self.start_component("dispatcher")

    # Data-plane processes that export traces (pkg/observability/otel SetupObservabilityOrDie
    # in the ingress, filter and dispatcher mains); they read config-observability at start.
    TRACED = ("dispatcher", "ingress", "filter")

    def set_tracing(self, endpoint: str | None) -> None:
        """Export every span of the data plane to an OTLP HTTP `endpoint` (e.g. a test Jaeger's
        ``http://127.0.0.1:<port>/v1/traces``), or stop exporting (None: as shipped).

        The keys are knative.dev/pkg's (``observability/tracing/config.go``
        ``NewFromMap``: ``tracing-protocol``, ``tracing-endpoint``, ``tracing-sampling-rate``)
        in ``config-observability``; the processes read it only when they start, so they are
        restarted. The default mesh never traces: only tests that ask pay for it.
        """
        data = {"tracing-protocol": "http/protobuf", "tracing-endpoint": endpoint,
                "tracing-sampling-rate": "1"} if endpoint else {
                "tracing-protocol": "none", "tracing-endpoint": None,
                "tracing-sampling-rate": None}
        self.client.patch(ConfigMap, "config-observability", {"data": data},
                          namespace=SYSTEM_NAMESPACE, patch_type=PatchType.MERGE)
        for name in self.TRACED:
            comp = self.components[name]
            if endpoint:
                # The OTel SDK batches spans for 5 s by default (OTEL_BSP_SCHEDULE_DELAY):
                # a test would wait that long for each trace to be complete.
                comp.env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
            else:
                comp.env.pop("OTEL_BSP_SCHEDULE_DELAY", None)
            # SIGKILL: a graceful stop drains for ~10 s, and nothing here needs it.
            self._terminate(comp, signal.SIGKILL)
            self.start_component(name)

    def rss_bytes(self) -> dict[str, int]:
        """Resident set size of each running process (from /proc), for budget reports."""
        out = {}
        for name, comp in self.components.items():
            if comp.running and comp.proc is not None:
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{comp.proc.pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            out[name] = int(line.split()[1]) * 1024
        return out

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        comp = self.components[name]
        return tail(comp.log, lines) if comp.log else ""

    # -- what kube-controller-manager / endpoints controller would write --------------------

    def set_deployment_available(self, name: str, available: bool) -> None:
        """Write a system Deployment's status as kube-controller-manager would for 1 replica:
        all replicas ready and Available=True, or none available and Available=False."""
        dep = self.client.get(Deployment, name, namespace=SYSTEM_NAMESPACE)
        n = 1 if available else 0
        now = utc_now()
        status = {
            "observedGeneration": dep.metadata.generation if dep.metadata else None,
            "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": n, "availableReplicas": n, "unavailableReplicas": 1 - n,
            "conditions": [
                {"type": "Available", "status": "True" if available else "False",
                 "reason": "MinimumReplicasAvailable" if available
                 else "MinimumReplicasUnavailable",
                 "message": "Deployment has minimum availability." if available
                 else "Deployment does not have minimum availability.",
                 "lastUpdateTime": now, "lastTransitionTime": now},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": f'ReplicaSet "{name}-local" has successfully progressed.',
                 "lastUpdateTime": now, "lastTransitionTime": now},
            ],
        }
        # kube-controller-manager omits zero counts; null deletes them in a merge patch.
        if available:
            status["unavailableReplicas"] = None
        else:
            status["readyReplicas"] = status["availableReplicas"] = None
        self.client.patch(Deployment.Status, name, {"status": status},
                          namespace=SYSTEM_NAMESPACE, patch_type=PatchType.MERGE)

    def set_endpoints(self, name: str, ready: bool) -> None:
        """Endpoints of a system Service: one ready address (the placeholder), or none
        (``subsets: []``, what the endpoints controller writes when no pod is ready).
        Recreates them if they were deleted."""
        self._write_endpoints(SYSTEM_NAMESPACE, name, self._endpoint_ports[name], ready)

    def delete_endpoints(self, name: str) -> None:
        """Delete a system Service's Endpoints object (``set_endpoints(name, True)`` restores)."""
        with contextlib.suppress(ApiError):
            self.client.delete(Endpoints, name, namespace=SYSTEM_NAMESPACE)

    def _write_endpoints(self, ns: str, name: str, ports: list[dict[str, Any]],
                         ready: bool) -> None:
        body = {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": [{"ip": PLACEHOLDER_IP}], "ports": ports}] if ready
            else [],
        }
        try:
            self.client.create(from_dict(Endpoints, body))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            self.client.patch(Endpoints, name, {"subsets": body["subsets"]}, namespace=ns,
                              patch_type=PatchType.MERGE)

    def restore(self) -> None:
        """Undo every fault helper: all processes running, system Deployments Available, system
        Endpoints ready. The mesh is session-scoped; the ``knative_namespace`` fixture calls
        this before and after each test."""
        for name in self.components:
            self.start_component(name)
        for name in self._deployments:
            dep = self.client.get(Deployment, name, namespace=SYSTEM_NAMESPACE)
            conds = {c.type: c.status for c in (dep.status.conditions or [])} if dep.status else {}
            if conds.get("Available") != "True":
                self.set_deployment_available(name, True)
        for name, ports in self._endpoint_ports.items():
            try:
                eps = self.client.get(Endpoints, name, namespace=SYSTEM_NAMESPACE)
                subsets = eps.subsets or []
                ok = bool(subsets) and [p.to_dict() for p in subsets[0].ports or []] == ports
            except ApiError:
                ok = False
            if not ok:
                self._write_endpoints(SYSTEM_NAMESPACE, name, ports, True)

    # -- test namespaces and receivers at cluster names -------------------------------------

    def new_namespace(self, stem: str = "test") -> str:
        """A fresh, uniquely named namespace (never finishes deleting: no controller manager)."""
        stem = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:40].strip("-") or "test"
        name = f"{stem}-{uuid.uuid4().hex[:6]}"
        self.client.create(from_dict(Namespace, {"metadata": {"name": name}}))
        return name

    def delete_namespace(self, ns: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete(Namespace, ns)

    def expose(self, ns: str, name: str, port: int) -> str:
        """Service + Endpoints ``<name>.<ns>`` for a receiver on 127.0.0.1:``port``: the proxy
        routes ``http://<name>.<ns>.svc.cluster.local/`` to it. Returns that URL."""
        ports = [{"name": "http", "port": port, "protocol": "TCP"}]
        self.client.create(from_dict(Service, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port,
                                "protocol": "TCP"}]},
        }))
        self._write_endpoints(ns, name, ports, True)
        return f"http://{name}.{ns}.svc.cluster.local/"

    def unexpose(self, ns: str, name: str) -> None:
        """Delete the Service and its Endpoints (as the endpoints controller would)."""
        for res in (Service, Endpoints):
            with contextlib.suppress(ApiError):
                self.client.delete(res, name, namespace=ns)

    # -- Knative objects, with what the defaulting webhook would have set -------------------

    def create(self, kind: str, ns: str, name: str, spec: dict[str, Any], *,
               labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": ns}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        group, version, _ = KINDS[kind]
        obj = self.client.create(from_dict(resource(kind), {
            "apiVersion": f"{group}/{version}", "kind": kind, "metadata": meta, "spec": spec}))
        return dict(obj.to_dict())

    def create_broker(self, ns: str, name: str = "default",
                      delivery: dict[str, Any] | None = None) -> dict[str, Any]:
        """An MT channel-based Broker: the class annotation (else the MT reconciler ignores it)
        and ``spec.config`` → config-br-default-channel (else ChannelTemplateFailed)."""
        spec: dict[str, Any] = {"config": {"apiVersion": "v1", "kind": "ConfigMap",
                                           "name": "config-br-default-channel",
                                           "namespace": SYSTEM_NAMESPACE}}
        if delivery is not None:
            spec["delivery"] = _delivery(delivery, ns)
        return self.create("Broker", ns, name, spec,
                           annotations={"eventing.knative.dev/broker.class": BROKER_CLASS})

    def create_trigger(self, ns: str, name: str, broker: str = "default", *,
                       subscriber_ref: dict[str, Any] | None = None,
                       subscriber_uri: str | None = None,
                       filter_attributes: dict[str, str] | None = None,
                       delivery: dict[str, Any] | None = None) -> dict[str, Any]:
        """A Trigger with the broker label and a subscriber ref with its namespace."""
        spec: dict[str, Any] = {
            "broker": broker,
            "subscriber": _destination(subscriber_ref, subscriber_uri, ns),
        }
        if spec["subscriber"] is None:
            raise ValueError("create_trigger needs subscriber_ref or subscriber_uri")
        if filter_attributes is not None:
            spec["filter"] = {"attributes": dict(filter_attributes)}
        if delivery is not None:
            spec["delivery"] = _delivery(delivery, ns)
        return self.create("Trigger", ns, name, spec,
                           labels={"eventing.knative.dev/broker": broker})

    def create_channel(self, ns: str, name: str,
                       delivery: dict[str, Any] | None = None) -> dict[str, Any]:
        """A messaging Channel backed by an InMemoryChannel (the webhook's channelTemplate)."""
        spec: dict[str, Any] = {"channelTemplate": {"apiVersion": "messaging.knative.dev/v1",
                                                    "kind": "InMemoryChannel"}}
        if delivery is not None:
            spec["delivery"] = _delivery(delivery, ns)
        return self.create("Channel", ns, name, spec)

    def create_subscription(self, ns: str, name: str, channel: str, *,
                            subscriber_ref: dict[str, Any] | None = None,
                            subscriber_uri: str | None = None,
                            reply_ref: dict[str, Any] | None = None,
                            reply_uri: str | None = None,
                            delivery: dict[str, Any] | None = None) -> dict[str, Any]:
        """A Subscription to a messaging Channel; refs get their namespace."""
        spec: dict[str, Any] = {"channel": {"apiVersion": "messaging.knative.dev/v1",
                                            "kind": "Channel", "name": channel}}
        if (sub := _destination(subscriber_ref, subscriber_uri, ns)) is not None:
            spec["subscriber"] = sub
        if (reply := _destination(reply_ref, reply_uri, ns)) is not None:
            spec["reply"] = reply
        if delivery is not None:
            spec["delivery"] = _delivery(delivery, ns)
        return self.create("Subscription", ns, name, spec)

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any]:
        return dict(self.client.get(resource(kind), name, namespace=ns).to_dict())

    def delete(self, kind: str, ns: str, name: str) -> None:
        self.client.delete(resource(kind), name, namespace=ns)

    def patch_spec(self, kind: str, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch ``spec`` (bumps ``metadata.generation``, so the reconciler must run)."""
        obj = self.client.patch(resource(kind), name, {"spec": spec}, namespace=ns,
                                patch_type=PatchType.MERGE)
        return dict(obj.to_dict())

    # -- waiting ------------------------------------------------------------------------------

    def list(self, kind: str, ns: str) -> list[dict[str, Any]]:
        return [dict(o.to_dict()) for o in self.client.list(resource(kind), namespace=ns)]

    def wait_settled(self, ns: str, timeout: float = 30.0) -> None:
        """Wait until every Knative object in ``ns`` is Ready for its generation and every
        channel's ``status.subscribers`` acknowledges each ``spec.subscribers`` entry at its
        generation (the dispatcher writes those acks). Right after "all Ready" a reconcile can
        still be in flight; a fault injected then hits a moving target."""
        deadline = time.monotonic() + timeout
        while True:
            pending = []
            for kind in KINDS:
                for obj in self.list(kind, ns):
                    if not is_ready(obj):
                        pending.append(describe(obj))
                    elif kind in ("Channel", "InMemoryChannel") and not _acknowledged(obj):
                        pending.append(f"{describe(obj)}; subscribers not acknowledged")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"knative: {ns} not settled in {timeout:.0f}s: {pending}")
            time.sleep(POLL)

    # -- sending ------------------------------------------------------------------------------

    @staticmethod
    def send_event(url: str, type_: str, *, source: str = "/eventmesh-health/tests",
                   data: Any = None, ce_id: str | None = None, timeout: float = 10.0,
                   proxy: str | None = None) -> tuple[str, httpx.Response]:
        """POST a binary-mode CloudEvent; returns (its id, the response). Never uses the
        environment's proxies (``proxy`` routes through the mesh proxy explicitly)."""
        ce_id = ce_id or uuid.uuid4().hex
        headers = {"ce-specversion": "1.0", "ce-id": ce_id, "ce-type": type_,
                   "ce-source": source, "content-type": "application/json"}
        with httpx.Client(trust_env=False, timeout=timeout, proxy=proxy) as http:
            resp = http.post(url, headers=headers, content=json.dumps(data or {}).encode())
        return ce_id, resp


@contextlib.contextmanager
def running_mesh(assets_dir: Path | str | None = None) -> Iterator[KnativeMesh]:
    """``with running_mesh() as mesh:`` for scripts; tests use the ``knative_mesh`` fixture."""
    mesh = KnativeMesh(assets_dir)
    try:
        yield mesh.start()
    finally:
        mesh.stop()
