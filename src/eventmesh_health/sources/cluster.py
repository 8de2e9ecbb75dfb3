"""Read a live cluster: every kind the profile needs, listed cluster-wide, page by page.

The result is a `Snapshot`, exactly like a dump on disk, so the analysis never knows
where the objects came from. Only `list` is used (no `get`, no `watch`), on exactly
the resources of the profile: `deploy/rbac/clusterrole-reader.yaml` grants that.

Connection settings are found as kubectl finds them: `--kubeconfig`, else the
`KUBECONFIG` variable (a list of files, merged), else `~/.kube/config`, else the
in-cluster service account.

Everything that can go wrong becomes one of three exceptions, each a one-line message:

- `ClusterConfigError`: the kubeconfig cannot be used (input error);
- `ClusterForbidden` / `ClusterUnauthorized`: the API server refused us (permission error);
- `ClusterUnreachable`: the API server cannot be reached, timed out or failed.

A kind the API server does not serve (its CRD is not installed) is not an error: it
goes to `Snapshot.unavailable`, and the analysis reports it as a finding.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import yaml
from lightkube import ALL_NS, ApiError, Client, ConfigError, KubeConfig, SingleConfig
from lightkube.config.models import User
from lightkube.generic_resource import (
    Generic,
    GenericGlobalResource,
    GenericNamespacedResource,
    create_api_info,
    create_global_resource,
    create_namespaced_resource,
)

from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology import Kind, Profile
from eventmesh_health.topology.core import CORE_KINDS

DEFAULT_TIMEOUT = 10.0
CHUNK_SIZE = 500
MAX_RETRIES = 5  # attempts of a list answered 429 Too Many Requests
MAX_RETRY_AFTER = 5.0  # seconds
DEFAULT_KUBECONFIG = Path("~/.kube/config")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RBAC_HINT = "see deploy/rbac/clusterrole-reader.yaml for the ClusterRole eventmesh-health needs"

# Where a missing kind usually comes from, by API group (only used in messages).
_INSTALL_HINTS: Mapping[str, str] = {
    "eventing.knative.dev": "Knative Eventing CRDs missing?",
    "messaging.knative.dev": "Knative Eventing CRDs missing?",
    "serving.knative.dev": "Knative Serving CRDs missing?",
    "knativekafka.kyma-project.io": "Kafka channel not installed?",
    "applicationconnector.kyma-project.io": "Kyma application-connector CRDs missing?",
    "sources.kyma-project.io": "Kyma event-sources CRDs missing?",
    "servicecatalog.k8s.io": "Service Catalog not installed?",
}
_BUILT_IN_GROUPS = frozenset(kind.group for kind in CORE_KINDS)


class ClusterError(Exception):
    """The cluster could not be read. `str()` is a one-line message for the user."""


class ClusterConfigError(ClusterError):
    """No usable kubeconfig / context / in-cluster configuration."""


class ClusterUnreachable(ClusterError):
    """The API server could not be reached, did not answer in time, or failed."""


class ClusterUnauthorized(ClusterError):
    """The API server did not accept our credentials (401)."""


class ClusterForbidden(ClusterError):
    """RBAC denied a request (403)."""

    def __init__(self, message: str, *, verb: str, resource: str, user: str | None) -> None:
        super().__init__(message)
        self.verb = verb
        self.resource = resource
        self.user = user


@dataclass(frozen=True)
class Connection:
    """How to reach the cluster: kubectl's `--kubeconfig`, `--context`, `--request-timeout`."""

    kubeconfig: Path | None = None
    context: str | None = None
    timeout: float = DEFAULT_TIMEOUT


# --- configuration ------------------------------------------------------------------------

_PATH_FIELDS = {
    "clusters": ("cluster", ("certificate-authority",)),
    "users": ("user", ("client-certificate", "client-key", "tokenFile")),
}


def _read_kubeconfig_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ClusterConfigError(f"kubeconfig {path}: cannot read: {err.strerror or err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ClusterConfigError(f"kubeconfig {path}: invalid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClusterConfigError(f"kubeconfig {path}: not a kubeconfig (a YAML map is expected)")
    return data


def _absolute_paths(config: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative file references absolute, relative to the file they came from
    (as kubectl does), so that entries of several merged files keep working."""
    for section, (inner, keys) in _PATH_FIELDS.items():
        for entry in config.get(section) or []:
            body = entry.get(inner) if isinstance(entry, dict) else None
            if not isinstance(body, dict):
                continue
            for key in keys:
                value = body.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute():
                    body[key] = str(base / value)
    return config


def _merge(files: list[Path]) -> dict[str, Any]:
    """kubectl's merge of a KUBECONFIG list: the first file to define a name wins."""
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    for path in files:
        config = _absolute_paths(_read_kubeconfig_file(path), path.parent)
        if merged.get("current-context") is None and config.get("current-context"):
            merged["current-context"] = config["current-context"]
        for section in ("clusters", "contexts", "users"):
            entries = config.get(section) or []
            if not isinstance(entries, list):
                raise ClusterConfigError(f"kubeconfig {path}: {section} must be a list")
            known = {e.get("name") for e in merged[section]}
            for entry in entries:
                if isinstance(entry, dict) and entry.get("name") not in known:
                    merged[section].append(entry)
                    known.add(entry.get("name"))
    return merged


def _kubeconfig_files(explicit: Path | None) -> tuple[list[Path], str]:
    """The kubeconfig files to use, and how they were chosen (for messages)."""
    if explicit is not None:
        path = explicit.expanduser()
        if not path.is_file():
            raise ClusterConfigError(f"kubeconfig {explicit}: no such file")
        return [path], f"kubeconfig {explicit}"
    env = os.environ.get("KUBECONFIG", "")
    if env.strip():
        listed = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
        existing = [p for p in listed if p.is_file()]
        if not existing:
            raise ClusterConfigError(f"KUBECONFIG={env}: no such file")
        return existing, f"KUBECONFIG={env}"
    default = DEFAULT_KUBECONFIG.expanduser()
    if default.is_file():
        return [default], f"kubeconfig {DEFAULT_KUBECONFIG}"
    return [], "in-cluster service account"


def load_config(connection: Connection) -> SingleConfig:
    """The cluster, user and context to use, chosen as kubectl chooses them."""
    files, origin = _kubeconfig_files(connection.kubeconfig)
    try:
        if files:
            merged = _merge(files) if len(files) > 1 else _absolute_paths(
                _read_kubeconfig_file(files[0]), files[0].parent
            )
            config = KubeConfig.from_dict(
                {"clusters": [], "contexts": [], **merged}, fname=files[0]
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT_DIR.is_dir():
            config = KubeConfig.from_service_account(SERVICE_ACCOUNT_DIR)
        else:
            raise ClusterConfigError(
                "no cluster configuration: give --kubeconfig, set KUBECONFIG, create "
                f"{DEFAULT_KUBECONFIG}, run in a Pod, or analyse a dump with --snapshot"
            )
        contexts = ", ".join(sorted(config.contexts)) or "none"
        if connection.context is not None and connection.context not in config.contexts:
            raise ClusterConfigError(
                f"{origin}: context {connection.context!r} not found (contexts: {contexts})"
            )
        if connection.context is None and config.current_context is None:
            raise ClusterConfigError(
                f"{origin}: no current-context; choose one with --context (contexts: {contexts})"
            )
        name = connection.context or config.current_context
        context = config.contexts.get(name or "")
        if context is None:
            raise ClusterConfigError(
                f"{origin}: current-context {name!r} not found (contexts: {contexts})"
            )
        if context.cluster not in config.clusters:
            raise ClusterConfigError(
                f"{origin}: context {name!r} names cluster {context.cluster!r}, "
                "which is not defined"
            )
        if context.user is not None and context.user not in config.users:
            raise ClusterConfigError(
                f"{origin}: context {name!r} names user {context.user!r}, which is not defined"
            )
        single = config.get(name)
        if single is not None and single.user is None:  # no user: anonymous, as kubectl
            single = single._replace(user=User())
    except ClusterConfigError:
        raise
    except Exception as err:  # ConfigError, msgspec validation, KeyError: all bad input
        raise ClusterConfigError(f"{origin}: {_describe(err)}") from None
    if single is None:  # pragma: no cover - get() with a name never returns None
        raise ClusterConfigError(f"{origin}: no context")
    return single


def connect(connection: Connection) -> Client:
    """A lightkube client for the chosen context, with the request timeout applied."""
    config = load_config(connection)
    try:
        return Client(config, timeout=httpx2.Timeout(connection.timeout), trust_env=True)
    except Exception as err:  # unreadable certificates, unsupported auth, ...
        where = f"context {config.context_name!r}"
        if config.fname is not None:
            where = f"kubeconfig {config.fname}, {where}"
        raise ClusterConfigError(f"{where}: {_describe(err)}") from None


def _describe(err: BaseException) -> str:
    if isinstance(err, KeyError):
        return f"missing entry {err}"
    if isinstance(err, AssertionError):
        return str(err) or "incomplete configuration"
    text = " ".join(str(err).split())
    return text or type(err).__name__


# --- reading ------------------------------------------------------------------------------


def resource_class(kind: Kind) -> type[Any]:
    """The lightkube generic resource for a kind: objects come back as plain dicts, exactly
    as the API server sent them (built-in kinds too, so no model drops a field)."""
    create = create_namespaced_resource if kind.namespaced else create_global_resource
    try:
        res: type[Any] | None = create(kind.group, kind.version, kind.kind, kind.plural)
    except ValueError:  # registered before with another signature
        res = None
    if res is not None and issubclass(res, Generic):
        return res
    # Another class (e.g. a typed model) is registered for this kind: use a private one.
    base: type[Any] = GenericNamespacedResource if kind.namespaced else GenericGlobalResource

    class Private(base):  # type: ignore[misc]
        _api_info = create_api_info(kind.group, kind.version, kind.kind, kind.plural)

    Private.__name__ = Private.__qualname__ = kind.kind
    return Private


def _plain(item: Any, kind: Kind) -> dict[str, Any]:
    """A listed item as `kubectl get -o yaml` shows it: apiVersion and kind first, no
    managedFields (list responses of built-in kinds leave apiVersion/kind out)."""
    body = item.to_dict() if hasattr(item, "to_dict") else dict(item)
    obj: dict[str, Any] = {"apiVersion": kind.api_version, "kind": kind.kind}
    obj.update((k, v) for k, v in body.items() if k not in ("apiVersion", "kind"))
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    return obj


@dataclass(frozen=True)
class ClusterRead:
    """What was read, plus where from (for a dump's SnapshotInfo)."""

    snapshot: Snapshot
    server: str
    context: str


def read_cluster(
    profile: Profile,
    connection: Connection,
    now: Callable[[], datetime] | None = None,
) -> ClusterRead:
    """List every kind of the profile; kinds the server does not serve go to `unavailable`."""
    client = connect(connection)
    config = client.config
    try:
        objects: list[dict[str, Any]] = []
        collected: set[str] = set()
        unavailable: dict[str, str] = {}
        for kind in profile.kinds:
            try:
                objects.extend(_list(client, kind))
            except _NotServed as err:
                unavailable[kind.key] = _not_served_message(client, kind, err.code)
            else:
                collected.add(kind.key)
        taken_at = (now or _utcnow)()  # after the reads: no object is newer
    finally:
        client.close()
    snapshot = Snapshot(
        objects=objects,
        taken_at=taken_at,
        collected=frozenset(collected),
        unavailable=unavailable,
    )
    return ClusterRead(snapshot, config.cluster.server, config.context_name)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _NotServed(Exception):
    """404 (or 503 from an aggregated API) on a list: the API server does not serve it."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _TooManyRequests(Exception):
    """429 (e.g. "storage is (re)initializing", or API priority and fairness): retry later."""

    def __init__(self, seconds: float, message: str) -> None:
        super().__init__(message)
        self.seconds = seconds


def _list(
    client: Client, kind: Kind, sleep: Callable[[float], None] = time.sleep
) -> list[dict[str, Any]]:
    """All objects of a kind; retries a 429 after its Retry-After, as client-go does."""
    for _attempt in range(MAX_RETRIES):
        try:
            return _list_once(client, kind)
        except _TooManyRequests as err:
            last = err
            sleep(err.seconds)
    raise ClusterUnreachable(
        f"the API server at {client.config.cluster.server} kept answering 429 Too Many "
        f"Requests while listing {kind.resource}: {last}"
    )


def _list_once(client: Client, kind: Kind) -> list[dict[str, Any]]:
    res = resource_class(kind)
    server = client.config.cluster.server
    try:
        if kind.namespaced:
            items = list(client.list(res, namespace=ALL_NS, chunk_size=CHUNK_SIZE))
        else:
            items = list(client.list(res, chunk_size=CHUNK_SIZE))
    except httpx2.HTTPStatusError as err:  # ApiError: with a Status body
        code = err.response.status_code
        message = err.response.text
        if isinstance(err, ApiError):
            code = int(err.status.code or code)
            message = str(err.status.message or "")
        if code == 429:
            raise _TooManyRequests(_retry_after(err.response), message) from None
        raise _status_error(code, message, kind, server) from None
    except httpx2.TimeoutException:
        raise ClusterUnreachable(
            f"the API server at {server} did not answer within the request timeout while "
            f"listing {kind.resource} (--request-timeout)"
        ) from None
    except httpx2.TransportError as err:
        raise ClusterUnreachable(f"cannot reach the API server at {server}: "
                                 f"{_transport_reason(err)}") from None
    except (ConfigError, OSError) as err:  # e.g. an exec credential plugin failed
        raise ClusterConfigError(f"credentials for {server}: {_describe(err)}") from None
    except ValueError as err:  # not a Kubernetes answer (msgspec decode error, ...)
        raise ClusterUnreachable(
            f"unexpected answer from {server} while listing {kind.resource}: {_describe(err)}"
        ) from None
    return [_plain(item, kind) for item in items]


def _transport_reason(err: httpx2.TransportError) -> str:
    text = " ".join(str(err).split())
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"TLS certificate verification failed ({text})"
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (is the API server running? is the address right?)"
    return text or type(err).__name__


_USER = re.compile(r'User "([^"]*)"')


def _retry_after(response: httpx2.Response, cap: float = MAX_RETRY_AFTER) -> float:
    """How long a 429 asks us to wait, within [0.1 s, cap]."""
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), cap)


def _status_error(code: int, message: str, kind: Kind, server: str) -> Exception:
    message = " ".join(message.split())
    if code == 404:
        return _NotServed(404)
    if code == 403:
        match = _USER.search(message)
        user = match.group(1) if match else None
        who = f"user {user!r}" if user is not None else "the current user"
        return ClusterForbidden(
            f"forbidden: {who} may not list {kind.resource} at the cluster scope "
            f"(RBAC: verb 'list' on resource {kind.resource!r} is missing; {RBAC_HINT})",
            verb="list", resource=kind.resource, user=user,
        )
    if code == 401:
        return ClusterUnauthorized(
            f"unauthorized: the API server at {server} does not accept these credentials "
            "(token or client certificate expired or wrong?)"
        )
    if code == 503 and kind.group not in _BUILT_IN_GROUPS:
        # An aggregated API server (e.g. the service catalog's) that is down: the kind is
        # unreadable, which is a finding like a missing CRD, not a failure of the cluster.
        return _NotServed(503)
    detail = f": {message}" if message else ""
    return ClusterUnreachable(
        f"the API server at {server} failed while listing {kind.resource} (HTTP {code}){detail}"
    )


def _not_served_message(client: Client, kind: Kind, code: int) -> str:
    """Why a kind could not be listed; for a 404, asks discovery (which every user may read)
    whether the group or only this version is missing."""
    return not_served_message(kind, code, lambda: _served_versions(client, kind))


def not_served_message(
    kind: Kind, code: int, served_versions: Callable[[], list[str] | None]
) -> str:
    """Why a kind could not be read (a 404, or a 503 from an aggregated API), in one line.

    `served_versions` says which versions of the kind's resource are served (None: none, the
    CRD is not installed); it is only called for a custom resource's 404, and when it raises,
    the message leaves open whether the CRD or only the version is missing. `read_cluster`
    asks discovery; the informer of `serve` answers from its watch of the CRDs."""
    hint = _INSTALL_HINTS.get(kind.group, "its CRD missing?")
    if code == 503:
        return (f"{kind.resource} cannot be read: the API server answered 503 Service "
                f"Unavailable (its aggregated API server is down? {hint})")
    if kind.group in _BUILT_IN_GROUPS:
        return f"the API server does not serve {kind.resource} {kind.api_version}"
    missing = f"CustomResourceDefinition {kind.resource} is not installed ({hint})"
    try:
        versions = served_versions()
    except Exception:  # only used to sharpen the message
        return (f"CustomResourceDefinition {kind.resource} is not installed, or does not "
                f"serve {kind.version} ({hint})")
    if versions is None or kind.version in versions:
        return missing
    return (f"{kind.resource} is installed but does not serve {kind.version} (it serves "
            f"{', '.join(versions) or 'no version'}); this profile reads {kind.api_version}")


def _served_versions(client: Client, kind: Kind) -> list[str] | None:
    """The versions discovery lists for the kind's group and resource; None: no such group.
    A version is listed only if it serves the resource (another CRD may share the group)."""
    http: httpx2.Client = client._client._client  # lightkube has no raw GET
    answer = http.get(f"/apis/{kind.group}")
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    served = []
    for entry in answer.json().get("versions") or []:
        version = str(entry.get("version"))
        listing = http.get(f"/apis/{kind.group}/{version}")
        listing.raise_for_status()
        names = {str(r.get("name")) for r in listing.json().get("resources") or []}
        if kind.plural in names:
            served.append(version)
    return served or None


def served_resources(connection: Connection, kinds: Iterable[Kind]) -> frozenset[str]:
    """Which of `kinds` the API server serves, as resources (`plural.group`, and
    `plural.group/version` for each version served):
    what `--profile auto` looks at on a live cluster. Asks discovery, which every
    authenticated user may read (no RBAC beyond the reader role)."""
    client = connect(connection)
    server = client.config.cluster.server
    served: set[str] = set()
    try:
        for kind in kinds:
            versions = _served_versions(client, kind)
            if versions is not None:
                served.add(kind.resource)
                served.update(f"{kind.resource}/{version}" for version in versions)
    except httpx2.HTTPStatusError as err:
        code = err.response.status_code
        if code == 401:
            raise ClusterUnauthorized(
                f"unauthorized: the API server at {server} does not accept these credentials "
                "(token or client certificate expired or wrong?)") from None
        raise ClusterUnreachable(f"the API server at {server} failed during API discovery "
                                 f"(HTTP {code})") from None
    except httpx2.TimeoutException:
        raise ClusterUnreachable(f"the API server at {server} did not answer within the request "
                                 "timeout during API discovery (--request-timeout)") from None
    except httpx2.TransportError as err:
        raise ClusterUnreachable(f"cannot reach the API server at {server}: "
                                 f"{_transport_reason(err)}") from None
    except (ConfigError, OSError) as err:
        raise ClusterConfigError(f"credentials for {server}: {_describe(err)}") from None
    except ValueError as err:
        raise ClusterUnreachable(f"unexpected discovery answer from {server}: "
                                 f"{_describe(err)}") from None
    finally:
        client.close()
    return frozenset(served)
