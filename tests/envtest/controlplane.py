"""A real kube-apiserver + etcd for tests, like controller-runtime's envtest.

The binaries come from ``hack/envtest/build.sh`` (which honours ``KUBEBUILDER_ASSETS``, or
builds them once from pinned Go modules into a cache outside the repo). Everything else lives in
a private temp dir: certificates (ECDSA P-256), etcd's data, the audit log, the process logs and
kubeconfigs. No controller manager runs: nothing garbage-collects, namespaces never finish
terminating, and status is whatever a test writes through the ``/status`` subresource.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "envtest" / "build.sh"

READY_POLL_INTERVAL = 0.1
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 30
TMP_PREFIX = "eventmesh-envtest-"
OWNER_FILE = "owner.pid"

# One audit event per request (stage ResponseComplete; long-running requests such as watches
# also log ResponseStarted), at level Metadata: verb, user, resource, response code, no bodies.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
- RequestReceived
rules:
- level: Metadata
"""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: ask Linux to SIGKILL the child when the parent dies (e.g. pytest is killed)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run_build_script(build_script: Path, who: str, remedy: str) -> Path:
    """Run a ``hack/*/build.sh`` and return the folder its last stdout line names.

    Its progress (stderr) is echoed as it comes, since a cold build takes minutes. Raises
    RuntimeError when the script is missing, fails or names nothing, with `who` (a message
    prefix), `remedy` (what to set or fix) and its last stderr lines: the tests that need
    what it builds fail, never skip.
    """
    if not build_script.is_file():
        raise RuntimeError(f"{who}: {build_script} not found (is the repo checkout complete?)")
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(
            ["bash", str(build_script)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
        rc = proc.wait()
        out.seek(0)
        stdout_lines = [ln.strip() for ln in out.read().splitlines() if ln.strip()]
    if rc != 0:
        raise RuntimeError(
            f"{who}: {build_script.relative_to(REPO_ROOT)} failed (exit {rc}); {remedy} "
            "Last stderr lines:\n" + "\n".join(tail)
        )
    if not stdout_lines:
        raise RuntimeError(f"{who}: {build_script} printed no folder")
    return Path(stdout_lines[-1])


def find_binaries(build_script: Path = BUILD_SCRIPT) -> Path:
    """Return the folder holding ``kube-apiserver`` and ``etcd`` (runs ``hack/envtest/build.sh``).

    Honours ``KUBEBUILDER_ASSETS`` (through the script). Raises RuntimeError with the reason when
    it fails: never skips.
    """
    folder = run_build_script(
        build_script, "envtest", "cannot get kube-apiserver/etcd. Set KUBEBUILDER_ASSETS to a "
        "folder holding both, or fix the build.")
    for name in ("kube-apiserver", "etcd"):
        exe = folder / name
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise RuntimeError(f"envtest: {exe} is missing or not executable")
    return folder


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


def _name(common_name: str, organizations: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations or []]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _new_cert(
    subject: x509.Name,
    issuer: KeyPair | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = issuer.key if issuer else key
    return KeyPair(builder.sign(signer, hashes.SHA256()), key)


def _kubeconfig(server: str, ca_pem: bytes, client: KeyPair, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "envtest",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert_pem),
                    "client-key-data": b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": user}}],
        "current-context": "envtest",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


# --- processes ------------------------------------------------------------------------------

_RUNNING: weakref.WeakSet[ControlPlane] = weakref.WeakSet()
_HOOKS_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _stop_all_running() -> None:
    for cp in list(_RUNNING):
        with contextlib.suppress(Exception):
            cp.stop()


def _install_exit_hooks() -> None:
    """atexit cleanup, and turn SIGTERM into SystemExit (so finally/atexit run) if unhandled."""
    global _HOOKS_INSTALLED
    with _HOOKS_LOCK:
        if _HOOKS_INSTALLED:
            return
        _HOOKS_INSTALLED = True
        atexit.register(_stop_all_running)
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):

            def _on_sigterm(signum: int, frame: object) -> None:
                raise SystemExit(128 + signum)

            signal.signal(signal.SIGTERM, _on_sigterm)


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp_dirs() -> None:
    """Remove temp dirs left by control planes whose Python process was SIGKILLed."""
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        try:
            pid = int((path / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("r", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, with RBAC, client-cert auth and an audit log.

    Usage::

        with ControlPlane() as cp:          # or cp = ControlPlane().start(); ...; cp.stop()
            client = lightkube.Client(lightkube.KubeConfig.from_file(cp.kubeconfig_path))

    Attributes after :meth:`start`: ``url``, ``kubeconfig_path`` (admin, ``system:masters``),
    ``ca_path`` (serving CA), ``audit_log_path``, ``admin_cert_paths`` (cert, key), ``tmp_dir``,
    ``binaries_dir``, ``etcd_url``. Process logs: ``tmp_dir/etcd.log`` and
    ``tmp_dir/kube-apiserver.log``.
    """

    def __init__(
        self,
        binaries_dir: Path | str | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        extra_apiserver_flags: list[str] | None = None,
        extra_etcd_flags: list[str] | None = None,
        audit_policy: str = AUDIT_POLICY,
    ) -> None:
        self.binaries_dir: Path | None = Path(binaries_dir) if binaries_dir else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_apiserver_flags = list(extra_apiserver_flags or [])
        self.extra_etcd_flags = list(extra_etcd_flags or [])
        self.audit_policy = audit_policy
        self.tmp_dir: Path | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._etcd_port = 0
        self._user_seq = 0

    # -- public properties ----------------------------------------------------------------

    @property
    def url(self) -> str:
        self._require_started()
        return f"https://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        self._require_started()
        return self._port

    @property
    def etcd_url(self) -> str:
        self._require_started()
        return f"http://127.0.0.1:{self._etcd_port}"

    @property
    def kubeconfig_path(self) -> Path:
        return self._path("admin.kubeconfig")

    @property
    def ca_path(self) -> Path:
        return self._path("certs", "serving-ca.crt")

    @property
    def audit_log_path(self) -> Path:
        return self._path("audit.log")

    @property
    def admin_cert_paths(self) -> tuple[Path, Path]:
        """(client certificate, private key) of the ``system:masters`` admin user."""
        return self._path("certs", "admin.crt"), self._path("certs", "admin.key")

    def pids(self) -> dict[str, int]:
        """The process ids of the running ``etcd`` and ``kube-apiserver``."""
        return {name: proc.pid for name, proc in
                (("etcd", self._etcd), ("kube-apiserver", self._apiserver))
                if proc is not None and proc.poll() is None}

    @property
    def apiserver_running(self) -> bool:
        return self._apiserver is not None and self._apiserver.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Find the binaries, write certs, start etcd then kube-apiserver, wait for ``/readyz``."""
        if self.tmp_dir is not None:
            raise RuntimeError("envtest: control plane already started")
        _install_exit_hooks()
        if self.binaries_dir is None:
            self.binaries_dir = find_binaries()
        _remove_stale_tmp_dirs()
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        (self.tmp_dir / OWNER_FILE).write_text(str(os.getpid()))
        _RUNNING.add(self)
        try:
            self._write_certs()
            self._start_etcd()
            self._port = free_port()
            (self.tmp_dir / "audit-policy.yaml").write_text(self.audit_policy)
            self.kubeconfig_path.write_text(
                _kubeconfig(self.url, self._serving_ca.cert_pem, self._admin, "admin")
            )
            self.start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate kube-apiserver and etcd (SIGTERM, then SIGKILL) and remove the temp dir."""
        _terminate(self._apiserver, self.stop_timeout)
        _terminate(self._etcd, self.stop_timeout)
        self._apiserver = self._etcd = None
        if self.tmp_dir is not None:
            if os.environ.get("ENVTEST_KEEP_TMPDIR"):
                sys.stderr.write(f"envtest: kept {self.tmp_dir} (ENVTEST_KEEP_TMPDIR)\n")
            else:
                shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir = None
        _RUNNING.discard(self)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (etcd keeps running): an API outage for tests."""
        self._require_started()
        _terminate(self._apiserver, self.stop_timeout)
        self._apiserver = None

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port and certs, and wait until it is ready."""
        self._require_started()
        if self.apiserver_running:
            return
        if threading.current_thread() is not threading.main_thread():
            # PR_SET_PDEATHSIG fires when the forking *thread* exits: an API server started
            # from asyncio.to_thread died when the test's loop shut its executor down, and the
            # next test, seeing it still alive, got "connection refused" (CI, 2026-12-06).
            raise RuntimeError("envtest: start kube-apiserver from the main thread")
        assert self.tmp_dir is not None and self.binaries_dir is not None
        certs = self.tmp_dir / "certs"
        args = [
            str(self.binaries_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={certs}",
            f"--secure-port={self._port}",
            "--bind-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{self._port}/",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            f"--client-ca-file={certs / 'client-ca.crt'}",
            f"--tls-cert-file={certs / 'serving.crt'}",
            f"--tls-private-key-file={certs / 'serving.key'}",
            f"--audit-policy-file={self.tmp_dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log_path}",
            *self.extra_apiserver_flags,
        ]
        log = self.tmp_dir / "kube-apiserver.log"
        self._apiserver = self._spawn(args, log)
        self._wait(
            "kube-apiserver",
            self._apiserver,
            log,
            self._apiserver_ready,
        )

    def _apiserver_ready(self, client: httpx.Client) -> tuple[bool, str]:
        resp = client.get(f"{self.url}/readyz")
        return resp.status_code == 200, f"/readyz {resp.status_code}: {resp.text[-500:]}"

    def _etcd_ready(self, client: httpx.Client) -> tuple[bool, str]:
        resp = client.get(f"{self.etcd_url}/health")
        return resp.json().get("health") == "true", f"/health {resp.status_code}: {resp.text}"

    def make_user_kubeconfig(self, user: str, groups: list[str] | None = None) -> Path:
        """A kubeconfig for ``user`` in ``groups`` (a client cert signed by the client CA)."""
        self._require_started()
        assert self.tmp_dir is not None
        self._user_seq += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", user)[:60]
        stem = f"user-{self._user_seq}-{safe}"
        pair = _new_cert(
            _name(user, list(groups or [])),
            self._client_ca,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        pair.write(self.tmp_dir / "certs", stem)
        path = self.tmp_dir / f"{stem}.kubeconfig"
        path.write_text(_kubeconfig(self.url, self._serving_ca.cert_pem, pair, user))
        return path

    def http_client(self, timeout: float = 10.0) -> httpx.Client:
        """An httpx client authenticated as the admin, trusting the serving CA."""
        return httpx.Client(
            base_url=self.url, verify=self._ssl_context(), timeout=timeout, trust_env=False
        )

    def audit_events(self) -> list[dict[str, object]]:
        """The audit events logged so far (level Metadata; stage RequestReceived omitted).

        Events are written right after the response, so poll briefly when counting a request
        that just returned.
        """
        return list(iter_audit_events(self.audit_log_path))

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _require_started(self) -> None:
        if self.tmp_dir is None:
            raise RuntimeError("envtest: control plane not started (call start())")

    def _path(self, *parts: str) -> Path:
        self._require_started()
        assert self.tmp_dir is not None
        return self.tmp_dir.joinpath(*parts)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        cert, key = self.admin_cert_paths
        ctx.load_cert_chain(str(cert), str(key))
        return ctx

    def _write_certs(self) -> None:
        assert self.tmp_dir is not None
        certs = self.tmp_dir / "certs"
        certs.mkdir(mode=0o700)
        self._serving_ca = _new_cert(_name("envtest-serving-ca"), None, ca=True)
        self._serving_ca.write(certs, "serving-ca")
        serving = _new_cert(
            _name("localhost"),
            self._serving_ca,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        serving.write(certs, "serving")
        self._client_ca = _new_cert(_name("envtest-client-ca"), None, ca=True)
        self._client_ca.write(certs, "client-ca")
        self._admin = _new_cert(
            _name("admin", ["system:masters"]),
            self._client_ca,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        self._admin.write(certs, "admin")
        sa_key = ec.generate_private_key(ec.SECP256R1())
        (certs / "sa.key").write_bytes(
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (certs / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _start_etcd(self) -> None:
        assert self.tmp_dir is not None and self.binaries_dir is not None
        self._etcd_port, peer = free_port(), free_port()
        peer_url = f"http://127.0.0.1:{peer}"
        args = [
            str(self.binaries_dir / "etcd"),
            "--name=envtest",
            f"--data-dir={self.tmp_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=envtest={peer_url}",
            "--unsafe-no-fsync=true",
            *self.extra_etcd_flags,
        ]
        log = self.tmp_dir / "etcd.log"
        self._etcd = self._spawn(args, log)
        self._wait(
            "etcd",
            self._etcd,
            log,
            self._etcd_ready,
        )

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as f:
            f.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(args)}\n".encode())
            f.flush()
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=self.tmp_dir,
                start_new_session=False,
                preexec_fn=_die_with_parent,
            )

    def _wait(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        log: Path,
        ready: Callable[[httpx.Client], tuple[bool, str]],
    ) -> None:
        """Poll ``ready(client)`` every 100 ms until ok; fail fast if the process exits."""
        deadline = time.monotonic() + self.start_timeout
        last_error = "not polled yet"
        with httpx.Client(verify=self._ssl_context(), timeout=2.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"envtest: {name} exited with code {proc.returncode} while starting; "
                        f"last lines of {log}:\n{_tail(log)}"
                    )
                try:
                    ok, detail = ready(client)
                    if ok:
                        return
                    last_error = detail
                except (httpx.HTTPError, ValueError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"envtest: {name} not ready after {self.start_timeout:.0f}s "
                        f"({last_error}); last lines of {log}:\n{_tail(log)}"
                    )
                time.sleep(READY_POLL_INTERVAL)


def iter_audit_events(path: Path) -> Iterator[dict[str, object]]:
    """Parse an audit log (one JSON event per line); skips a partially written last line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            yield json.loads(line)
