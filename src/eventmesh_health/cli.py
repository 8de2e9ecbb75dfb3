"""`eventmesh-health`: check, explain, dump.

Exit codes: 0 the mesh is healthy, 1 it is not, 2 usage, input or permission error
(bad dump or kubeconfig; the API server refused our credentials or RBAC denied a
`list`), 3 the cluster could not be read (unreachable, timed out, failing).
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console

from eventmesh_health import compiled
from eventmesh_health.analysis import Analysis, Thresholds, analyse_graph
from eventmesh_health.outputs.text import print_check
from eventmesh_health.outputs.tree import (
    explain_flow_json,
    explain_flow_tree,
    explain_json,
    explain_tree,
)
from eventmesh_health.serve.ratelimit import DEFAULT_BURST, DEFAULT_QPS
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.sources.cluster import (
    ClusterConfigError,
    ClusterError,
    ClusterForbidden,
    ClusterRead,
    ClusterUnauthorized,
    Connection,
    read_cluster,
    served_resources,
)
from eventmesh_health.sources.dump import DumpError, check_target, write_dump
from eventmesh_health.sources.files import RawDump, SnapshotError, read_dump, snapshot_of
from eventmesh_health.topology import Profile
from eventmesh_health.topology.registry import (
    AUTO,
    CHOICES,
    PROFILES,
    ProfileError,
    detect,
    lookup,
)

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_INPUT, EXIT_CLUSTER = 0, 1, 2, 3

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
# No threshold or timeout of this tool is meaningful beyond this; larger ones overflow.
_LONGEST = timedelta(days=3650)


def _duration(_ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    match = _DURATION.match(value.strip())
    if match is None:
        raise click.BadParameter(
            f"{value[:40]!r} is not a duration like 500ms, 90s, 1.5m or 2h", param=param)
    amount, unit = float(match.group(1)), match.group(2)
    units = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}
    try:
        result = timedelta(**{units[unit]: amount})
    except OverflowError:
        result = _LONGEST + _LONGEST
    if result > _LONGEST:
        raise click.BadParameter(f"{value[:40]!r}: longer than {_LONGEST.days} days",
                                 param=param)
    return result


def _positive_duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    duration = _duration(ctx, param, value)
    if duration <= timedelta(0):
        raise click.BadParameter(f"{value!r}: the duration must be positive", param=param)
    return duration


def _optional_duration(ctx: click.Context, param: click.Parameter,
                       value: str | None) -> timedelta | None:
    return None if value is None else _positive_duration(ctx, param, value)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _emit(data: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


_TIMEOUT = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)?$")


def _timeout(_ctx: click.Context, param: click.Parameter, value: str) -> float:
    match = _TIMEOUT.match(value.strip())
    seconds = 0.0
    if match is not None:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    if not 0 < seconds <= _LONGEST.total_seconds():
        raise click.BadParameter(f"{value[:40]!r} is not a timeout like 10s, 30 or 1m",
                                 param=param)
    return seconds


def _cluster_failure(err: Exception) -> NoReturn:
    """A failure reading the cluster: one line on stderr and an exit code."""
    if isinstance(err, ClusterConfigError | ClusterForbidden | ClusterUnauthorized):
        _fail(str(err), EXIT_INPUT)
    if isinstance(err, ClusterError):
        _fail(f"cannot read the cluster: {err}", EXIT_CLUSTER)
    _fail(f"cannot read the cluster: {type(err).__name__}: {err}", EXIT_CLUSTER)


def _read_cluster(connection: Connection, profile: Profile) -> ClusterRead:
    """Read the live cluster; every failure is one line on stderr and an exit code."""
    try:
        return read_cluster(profile, connection)
    except Exception as err:  # never a traceback, never a report from a partial read
        _cluster_failure(err)


def _live_profile(name: str, connection: Connection) -> Profile:
    """`--profile NAME`, or for `auto` the profile whose marker kinds the cluster serves."""
    try:
        if name != AUTO:
            return lookup(name)
        markers = [kind for profile in PROFILES.values() for kind in profile.markers]
        try:
            served = served_resources(connection, markers)
        except Exception as err:
            _cluster_failure(err)
        return detect(served, "the resources the cluster serves")
    except ProfileError as err:
        _fail(str(err), EXIT_INPUT)


def _dump_profile(name: str, raw: RawDump, path: Path) -> Profile:
    """`--profile NAME`; for `auto` the profile the dump names (`dump` writes it into
    snapshot.yaml), else the one whose marker kinds are in the dump."""
    if name != AUTO:
        return lookup(name)
    named = raw.profile_name()
    if named is not None:
        try:
            return lookup(named)
        except ProfileError as err:
            raise ProfileError(f"{raw.info_file}: SnapshotInfo.profile: {err}") from None
    try:
        return detect(raw.kinds(), f"the dump {path}")
    except ProfileError:
        if raw.info is not None:  # a malformed SnapshotInfo says more: report it first
            for profile in PROFILES.values():
                snapshot_of(raw, profile, datetime.now(UTC))
        raise


def _snapshot(
    path: Path | None, connection: Connection | None = None, profile_name: str = AUTO
) -> tuple[Snapshot, Profile]:
    if path is None:
        connection = connection or Connection()
        profile = _live_profile(profile_name, connection)
        return _read_cluster(connection, profile).snapshot, profile
    if connection is not None and (connection.kubeconfig or connection.context):
        _fail("--snapshot reads a dump: --kubeconfig and --context only apply to a cluster",
              EXIT_INPUT)
    try:
        raw = read_dump(path)
        profile = _dump_profile(profile_name, raw, path)
        return snapshot_of(raw, profile, datetime.now(UTC)), profile
    except (SnapshotError, ProfileError) as err:
        _fail(str(err), EXIT_INPUT)


_SNAPSHOT_OPTION = click.option(
    "--snapshot",
    type=click.Path(path_type=Path),
    help="A dump to analyse: a file or folder of .yaml/.yml/.json (kubectl get -o yaml output).",
)
_STUCK_OPTION = click.option(
    "--stuck-deletion-after", default="5m", show_default=True, callback=_duration,
    help="An object whose finalizers outlive deletion this long is stuck.",
)
_DEADLINE_OPTION = click.option(
    "--progress-deadline", default="10m", show_default=True, callback=_duration,
    help="A controller that has not reported within this long is not progressing any more.",
)


_PROFILE_HELP = (
    "The topology to judge by: " + "; ".join(f"{p.name}: {p.description}"
                                             for p in PROFILES.values())
    + f". {AUTO}: detected from the dump's kinds, or from the kinds the cluster serves "
    "(an error if no known profile's kinds are present)."
)
_PROFILE_OPTION = click.option(
    "--profile", "profile_name", default=AUTO, show_default=True,
    type=click.Choice(CHOICES), help=_PROFILE_HELP,
)


_KUBECONFIG_OPTION = click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False),
    help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else the in-cluster "
    "service account).",
)
_CONTEXT_OPTION = click.option("--context", help="Kubeconfig context (default: current-context).")
_TIMEOUT_OPTION = click.option(
    "--request-timeout", default="10s", show_default=True, callback=_timeout,
    help="Give up on an API request after this long (10s, 30, 1m).",
)


def _cluster_options(command: Any) -> Any:
    return _KUBECONFIG_OPTION(_CONTEXT_OPTION(_TIMEOUT_OPTION(command)))


def _input_options(command: Any) -> Any:
    """--profile and the cluster options (check, explain, dump)."""
    return _PROFILE_OPTION(_cluster_options(command))


def _connection(kubeconfig: Path | None, context: str | None, timeout: float) -> Connection:
    return Connection(kubeconfig=kubeconfig, context=context, timeout=timeout)


def _analysis(
    path: Path | None, stuck: timedelta, deadline: timedelta,
    connection: Connection | None = None, profile_name: str = AUTO,
) -> Analysis:
    snapshot, profile = _snapshot(path, connection, profile_name)
    return analyse_graph(snapshot, profile, Thresholds(stuck_deletion=stuck,
                                                       progress_deadline=deadline))


def _console(width: int = 160) -> Console:
    """Colour and the terminal's width on a terminal; plain, uncut lines into a pipe."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=width, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventmesh-health",
                      message=f"%(prog)s, version %(version)s; analysis {compiled.BUILD}")
def main() -> None:
    """Health of a Kyma / Knative event mesh: what is broken, and where."""


@main.command()
@_SNAPSHOT_OPTION
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True)
@_STUCK_OPTION
@_DEADLINE_OPTION
@_input_options
def check(
    snapshot: Path | None, output: str, stuck_deletion_after: timedelta,
    progress_deadline: timedelta, kubeconfig: Path | None, context: str | None,
    request_timeout: float, profile_name: str = AUTO,
) -> None:
    """Health per Application and bound namespace, with root causes and their symptoms.

    Reads the dump given with --snapshot, else the cluster (--kubeconfig, --context,
    $KUBECONFIG or the in-cluster service account, as kubectl), which needs `list` on the
    resources in deploy/rbac/clusterrole-reader.yaml. A kind whose CRD is not installed is
    reported as a finding.

    \b
    Exit codes:
      0  everything is Healthy
      1  something is not Healthy
      2  bad usage or input (dump, kubeconfig), or a permission error: the API server
         rejected the credentials, or RBAC forbids a `list` (the message names it)
      3  the cluster could not be read: API server unreachable, timed out or failing
    """
    connection = _connection(kubeconfig, context, request_timeout)
    # Millions of containers are made and none is garbage until the end: the cyclic GC
    # would only scan them again and again (~10 % of a check of 550,000 objects).
    collecting = gc.isenabled()
    gc.disable()
    try:
        analysis = _analysis(snapshot, stuck_deletion_after, progress_deadline, connection,
                             profile_name)
        report = analysis.report
        if output == "table":
            print_check(report, _console())
        elif output == "json":
            # pydantic-core writes what json.dumps(indent=2, ensure_ascii=False) of
            # to_json_dict() would (tests/test_lean_read.py), without the Python dicts between
            click.echo(report.model_dump_json(indent=2, by_alias=True))
        else:
            _emit(report.to_json_dict(), output)
        _exit_unfreed(EXIT_HEALTHY if report.healthy else EXIT_UNHEALTHY)
    finally:
        if collecting:
            gc.enable()


_PROGRAM = False  # set by `run`: the process is this command and nothing else


def run() -> None:
    """The `eventmesh-health` program (console script, `python -m eventmesh_health`): the
    command line, in a process of its own. Embedders and tests call `main`."""
    global _PROGRAM
    _PROGRAM = True
    main()


def _exit_unfreed(code: int) -> NoReturn:
    """Exit without freeing what the process holds, one object at a time (the graph and the
    objects of a large dump: ~1.5 s at 550,000 objects), when this is the program itself
    (`run`); called through `main` (embedded, or by the tests) it raises SystemExit."""
    if _PROGRAM and sys.stdout is not None and sys.stderr is not None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)  # as without: the interpreter reports it at exit
        os._exit(code)
    sys.exit(code)


@main.command()
@click.argument("name")
@_SNAPSHOT_OPTION
@click.option("-o", "--output", type=click.Choice(["tree", "json", "yaml"]), default="tree",
              show_default=True)
@_STUCK_OPTION
@_DEADLINE_OPTION
@_input_options
def explain(
    name: str, snapshot: Path | None, output: str, stuck_deletion_after: timedelta,
    progress_deadline: timedelta, kubeconfig: Path | None, context: str | None,
    request_timeout: float, profile_name: str = AUTO,
) -> None:
    """One application's or flow's whole chain as a tree: every link, its status, where
    events stop. NAME is an application, or a flow as NAMESPACE/NAME (KIND/NAMESPACE/NAME
    when a Broker and a Channel share the name).

    Reads --snapshot, else the cluster; exit codes as for `check`.
    """
    connection = _connection(kubeconfig, context, request_timeout)
    analysis = _analysis(snapshot, stuck_deletion_after, progress_deadline, connection,
                         profile_name)
    if "/" in name:
        _explain_flow(analysis, name, output)
    pairs = zip(analysis.graph.apps, analysis.report.applications, strict=True)
    found = next(((u, r) for u, r in pairs if u.name == name), None)
    if found is None:
        known = ", ".join(a.name for a in analysis.report.applications) or "none"
        flows = f"; flows are named NAMESPACE/NAME ({len(analysis.report.flows)} here)" \
            if analysis.report.flows else ""
        _fail(f"no Application {name[:200]!r} in the snapshot (applications: {known}){flows}",
              EXIT_INPUT)
    unit, app_report = found
    if output == "tree":
        _console(width=1000).print(explain_tree(unit, app_report, analysis.causes))
    else:
        _emit(explain_json(unit, app_report, analysis.causes), output)
    sys.exit(EXIT_HEALTHY if app_report.health.value == "Healthy" else EXIT_UNHEALTHY)


def _explain_flow(analysis: Analysis, name: str, output: str) -> NoReturn:
    parts = name.split("/")
    kind = parts[0] if len(parts) == 3 else None
    namespace, flow_name = parts[-2], parts[-1]
    pairs = zip(analysis.graph.flows, analysis.report.flows, strict=True)
    found = [(u, r) for u, r in pairs if (u.namespace, u.name) == (namespace, flow_name)
             and (kind is None or u.kind == kind)]
    if len(found) != 1:
        what = "no flow" if not found else "several flows: prefix the kind, e.g. " + \
            ", ".join(f"{u.kind}/{namespace}/{flow_name}" for u, _ in found) + ";"
        known = ", ".join(f"{u.kind}/{u.namespace}/{u.name}"
                          for u in analysis.graph.flows[:20]) or "none"
        _fail(f"{what} {name[:200]!r} in the snapshot (flows: {known})", EXIT_INPUT)
    unit, flow_report = found[0]
    if output == "tree":
        _console(width=1000).print(explain_flow_tree(unit, flow_report, analysis.causes))
    else:
        _emit(explain_flow_json(unit, flow_report, analysis.causes), output)
    sys.exit(EXIT_HEALTHY if flow_report.health.value == "Healthy" else EXIT_UNHEALTHY)


@main.command()
@click.option("-o", "--output-dir", required=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="New or empty folder to write the dump into.")
@_input_options
def dump(output_dir: Path, kubeconfig: Path | None, context: str | None,
         request_timeout: float, profile_name: str = AUTO) -> None:
    """Save what `check` reads from the cluster, for `check --snapshot DIR` elsewhere.

    Writes one `<resource>.yaml` per kind the analysis reads (a `v1 List`, as
    `kubectl get -o yaml` prints it; no Secrets, no managedFields) and `snapshot.yaml`
    (when it was taken, which kinds were read, which could not be and why).
    Exit codes: 0 written, 2 bad usage / permission error, 3 cluster unreadable.
    """
    try:
        check_target(output_dir)  # before reading: fail fast
    except DumpError as err:
        _fail(str(err), EXIT_INPUT)
    connection = _connection(kubeconfig, context, request_timeout)
    profile = _live_profile(profile_name, connection)
    read = _read_cluster(connection, profile)
    source = (f"eventmesh-health {_version()} dump of context {read.context} ({read.server}), "
              f"profile {profile.name}")
    try:
        files = write_dump(read.snapshot, profile, output_dir, source)
    except DumpError as err:
        _fail(str(err), EXIT_INPUT)
    snapshot = read.snapshot
    kinds = len(files) - 1
    click.echo(f"wrote {len(snapshot.objects)} objects of {kinds} kinds to {output_dir}", err=True)
    for _key, message in sorted(snapshot.unavailable.items()):
        click.echo(f"warning: not read: {message}", err=True)
    sys.exit(EXIT_HEALTHY)


EXIT_TRACE_UNKNOWN = 4


@main.command()
@click.argument("event_id", required=False)
@click.option("--trace-id", default=None, metavar="ID",
              help="The trace (32 or 16 hex digits, or the event's traceparent).")
@click.option("--backend", type=click.Choice(["jaeger", "zipkin"]), default="jaeger",
              show_default=True, envvar="EVENTMESH_HEALTH_TRACE_BACKEND",
              help="Jaeger's query API (port 16686) or Zipkin's v2 API (port 9411).")
@click.option("--url", default=None, envvar="EVENTMESH_HEALTH_TRACE_URL", metavar="URL",
              help="The backend's base URL, e.g. http://tracing-jaeger-query.kyma-system:16686.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--request-timeout", default="10s", show_default=True, callback=_timeout,
              help="Give up on a backend request after this long.")
def trace(event_id: str | None, trace_id: str | None, backend: str, url: str | None,
          output: str, request_timeout: float) -> None:
    """Where did an event stop: its trace mapped to the mesh's hops.

    Give the CloudEvent id (found through the span tags a Knative release records it in) or
    --trace-id. Prints each hop with its timing and, when the event did not arrive, the hop
    where it stopped and why. Exit codes: 0 delivered, 1 stopped, 2 usage error or no such
    trace, 3 the backend could not be read, 4 the trace cannot tell.
    """
    from eventmesh_health.analysis.trace import diagnose, verdict_json
    from eventmesh_health.outputs.trace import trace_lines
    from eventmesh_health.sources.tracing import (
        TraceBackend,
        TraceBackendError,
        TraceNotFound,
        normalise_trace_id,
    )

    if (event_id is None) == (trace_id is None):
        _fail("give either EVENT_ID or --trace-id ID", EXIT_INPUT)
    if url is None:
        _fail("--url (or EVENTMESH_HEALTH_TRACE_URL) names the tracing backend", EXIT_INPUT)
    try:
        client = TraceBackend(backend, url, timeout=request_timeout)  # type: ignore[arg-type]
        wanted = normalise_trace_id(trace_id) if trace_id is not None else None
    except ValueError as err:
        _fail(str(err), EXIT_INPUT)
    try:
        if wanted is None:
            assert event_id is not None
            found = client.find_by_event_id(event_id)
            if not found:
                _fail(f"{backend} at {client.url} has no span tagged messaging.message_id or "
                      f"cloudevents.id = {event_id[:80]!r}. Knative records the event id only "
                      "in v0.14-1.18; Kyma 1.x (Knative 0.12, OpenCensus) and Knative >= 1.19 "
                      "(OpenTelemetry) do not: look the event up by --trace-id (its "
                      "traceparent extension)", EXIT_INPUT)
            if len(found) > 1:
                click.echo(f"note: {len(found)} traces carry event id {event_id[:80]!r}; "
                           f"showing the newest ({', '.join(found[1:4])} too)", err=True)
            wanted = found[0]
        spans = client.trace(wanted)
    except TraceNotFound as err:
        _fail(str(err), EXIT_INPUT)
    except TraceBackendError as err:
        _fail(str(err), EXIT_CLUSTER)
    verdict = diagnose(wanted, spans)
    if output == "json":
        click.echo(json.dumps(verdict_json(verdict), indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(trace_lines(verdict)))
    sys.exit({"delivered": EXIT_HEALTHY, "stopped": EXIT_UNHEALTHY}.get(
        verdict.outcome, EXIT_TRACE_UNKNOWN))


def _version() -> str:
    try:
        return version("eventmesh-health")
    except PackageNotFoundError:
        return "(unknown version)"


def _env(name: str) -> str:
    return f"EVENTMESH_HEALTH_{name}"


@main.command()
@_cluster_options
@click.option("--profile", "profile_name", default=AUTO, show_default=True,
              type=click.Choice(CHOICES), envvar=_env("PROFILE"), help=_PROFILE_HELP)
@click.option("--host", default="0.0.0.0", show_default=True, envvar=_env("HOST"),
              help="Address the REST API and /metrics listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              envvar=_env("PORT"))
@click.option("--receiver-port", default=None, type=click.IntRange(1, 65535),
              envvar=_env("RECEIVER_PORT"),
              help="Serve the heartbeat receiver on this port of its own (default: on --port, "
              "beside the API), so a NetworkPolicy can admit the mesh there and the "
              "scrapers on --port.")
@click.option("--leader-election/--no-leader-election", default=True, show_default=True,
              envvar=_env("LEADER_ELECTION"),
              help="Only the holder of a Lease writes; every replica serves reads.")
@click.option("--lease-namespace", default="kyma-system", show_default=True,
              envvar=_env("LEASE_NAMESPACE"))
@click.option("--lease-name", default="eventmesh-health-serve", show_default=True,
              envvar=_env("LEASE_NAME"))
@click.option("--identity", default=None, envvar=["POD_NAME", _env("IDENTITY")],
              help="This replica's name in the Lease (default: $POD_NAME, else the host name).")
@click.option("--lease-duration", default="15s", show_default=True, callback=_duration,
              envvar=_env("LEASE_DURATION"))
@click.option("--events-namespace", default="default", show_default=True,
              type=click.Choice(["default", "kube-system"]), envvar=_env("EVENTS_NAMESPACE"),
              help="Where Events about Applications go: the API server accepts Events about "
              "cluster-scoped objects only in these namespaces.")
@click.option("--write/--no-write", default=True, show_default=True, envvar=_env("WRITE"),
              help="Write health objects, Application annotations and Events.")
@click.option("--kube-api-qps", default=DEFAULT_QPS, show_default=True,
              type=click.FloatRange(0, min_open=True), envvar=_env("KUBE_API_QPS"),
              help="Write requests per second to the API server, on average (client-side "
              "token bucket, as kube-controller-manager's flag of this name). The first sync "
              "writes 3 per Application: for 10,000, 25 minutes at 20.")
@click.option("--kube-api-burst", default=DEFAULT_BURST, show_default=True, type=click.IntRange(1),
              envvar=_env("KUBE_API_BURST"),
              help="Write requests sent at once before --kube-api-qps applies.")
@click.option("--outage-after", default="30s", show_default=True, callback=_duration,
              envvar=_env("OUTAGE_AFTER"),
              help="Watches disconnected this long make every health Unknown.")
@_STUCK_OPTION
@_DEADLINE_OPTION
@click.option("--probe/--no-probe", default=False, show_default=True, envvar=_env("PROBE"),
              help="Heartbeat probing of the data plane (the leader manages heartbeat "
              "Triggers and sends heartbeats; verdicts are merged into the report). Off by "
              "default until it has run in a real cluster.")
@click.option("--probe-interval", default="30s", show_default=True,
              callback=_positive_duration,
              envvar=_env("PROBE_INTERVAL"), help="Heartbeat interval per application.")
@click.option("--probe-secret", default="kyma-system/eventmesh-health-heartbeat-keys",
              show_default=True, envvar=_env("PROBE_SECRET"),
              help="NAMESPACE/NAME of the Secret holding the HMAC keys (re-read every "
              "minute: rotation without restart).")
@click.option("--probe-latency-slo", default="2s", show_default=True,
              callback=_positive_duration,
              envvar=_env("PROBE_LATENCY_SLO"),
              help="Degraded when the newest two heartbeats of a hop are both slower.")
@click.option("--probe-max-loss", default=0.05, show_default=True,
              type=click.FloatRange(0, 1, max_open=True), envvar=_env("PROBE_MAX_LOSS"),
              help="Degraded when more of the sends in the window are lost (outside outages).")
@click.option("--probe-grace", default=None, callback=_optional_duration,
              envvar=_env("PROBE_GRACE"),
              help="How long a heartbeat may take before it is overdue and confirmed "
              "(default: 2 x the latency SLO, at least 1s, at most 0.4 x the interval).")
@click.option("--probe-window", default=None, callback=_optional_duration,
              envvar=_env("PROBE_WINDOW"),
              help="Window of the loss and latency figures (default: max(5m, 10 intervals)).")
@click.option("--receiver-url-template", default=None, envvar=_env("RECEIVER_URL_TEMPLATE"),
              help="Subscriber URI of the heartbeat Triggers, with {namespace} and "
              "{application}, and {replica} for this replica's --advertise-address, which "
              "makes the Triggers deliver to the leader (needed with several replicas: "
              "http://{replica}/heartbeat/{namespace}/{application}; default: "
              "http://eventmesh-health.kyma-system.svc.cluster.local:8080/heartbeat/"
              "{namespace}/{application}, for one replica).")
@click.option("--advertise-address", default=None, envvar=_env("ADVERTISE_ADDRESS"),
              help="HOST:PORT at which the mesh reaches this replica's heartbeat receiver: "
              "{replica} in --receiver-url-template (default: $POD_IP:<port>, else "
              "<host>:<port>).")
@click.option("--event-service-url-template", default=None,
              envvar=_env("EVENT_SERVICE_URL_TEMPLATE"),
              help="Legacy event-service endpoint, with {app} (default: http://{app}-event-"
              "service.kyma-integration.svc.cluster.local:8081/{app}/v1/events).")
@click.option("--adapter-url-template", default=None, envvar=_env("ADAPTER_URL_TEMPLATE"),
              help="If set, heartbeats go as binary CloudEvents to this HTTP adapter URL "
              "({app}) instead of the legacy event-service.")
@click.option("--broker-url-template", default=None, envvar=_env("BROKER_URL_TEMPLATE"),
              help="Broker ingress, with {namespace} (default: http://default-broker."
              "{namespace}.svc.cluster.local).")
@click.option("--channel-url-template", default=None, envvar=_env("CHANNEL_URL_TEMPLATE"),
              help="Application Channel address, with {app} (default: the Channel's "
              "status.address.url).")
@click.option("--flow-url-template", "flow_url_templates", multiple=True, metavar="HOP=TEMPLATE",
              envvar=_env("FLOW_URL_TEMPLATE"),
              help="Flows (knative-v1): where heartbeats of flows probed at HOP (broker, "
              "channel) are posted, with {namespace}, {name} and {kind} of the flow's root "
              "(default: the root's status.address.url). Repeatable.")
@click.option("--notify-url", "notify_urls", multiple=True, metavar="URL",
              envvar=_env("NOTIFY_URL"),
              help="Post every health transition of an Application or flow as JSON (with a "
                   "Slack-compatible text field) to URL. Repeatable. The URL is never printed "
                   "or logged (it may hold a token); prefer --notify-secret.")
@click.option("--notify-secret", default=None, metavar="NAMESPACE/NAME",
              envvar=_env("NOTIFY_SECRET"),
              help="A Secret whose every data value is one notification URL (re-read every "
                   "minute).")
@click.option("--notify-link-base", default="http://eventmesh-health.kyma-system.svc:8080",
              show_default=True, envvar=_env("NOTIFY_LINK_BASE"),
              help="Where the REST API is reached, for the link in each notification.")
@click.option("--notify-min-interval", default="1m", show_default=True, callback=_duration,
              envvar=_env("NOTIFY_MIN_INTERVAL"),
              help="At most one notification per Application or flow this often; "
                   "transitions in between are merged into the next.")
@click.option("--notify-max-attempts", default=5, show_default=True,
              type=click.IntRange(1, 20), envvar=_env("NOTIFY_MAX_ATTEMPTS"),
              help="Posts per notification and target before giving up (logged and counted).")
@click.option("--trace-url", default=None, envvar=_env("TRACE_URL"), metavar="URL",
              help="With --probe: a tracing backend (Jaeger query API or Zipkin) where the "
                   "trace of a hop's newest failed heartbeat is looked up; the hop where it "
                   "stops is attached to the finding.")
@click.option("--trace-backend", type=click.Choice(["jaeger", "zipkin"]), default="jaeger",
              show_default=True, envvar=_env("TRACE_BACKEND"))
def serve(
    kubeconfig: Path | None, context: str | None, request_timeout: float, host: str, port: int,
    receiver_port: int | None,
    leader_election: bool, lease_namespace: str, lease_name: str, identity: str | None,
    lease_duration: timedelta, events_namespace: str, write: bool, kube_api_qps: float,
    kube_api_burst: int, outage_after: timedelta, stuck_deletion_after: timedelta,
    progress_deadline: timedelta,
    probe: bool = False, probe_interval: timedelta = timedelta(seconds=30),
    probe_secret: str = "kyma-system/eventmesh-health-heartbeat-keys",
    probe_latency_slo: timedelta = timedelta(seconds=2), probe_max_loss: float = 0.05,
    probe_grace: timedelta | None = None, probe_window: timedelta | None = None,
    receiver_url_template: str | None = None, event_service_url_template: str | None = None,
    adapter_url_template: str | None = None, broker_url_template: str | None = None,
    channel_url_template: str | None = None, advertise_address: str | None = None,
    profile_name: str = AUTO, flow_url_templates: tuple[str, ...] = (),
    notify_urls: tuple[str, ...] = (), notify_secret: str | None = None,
    notify_link_base: str = "http://eventmesh-health.kyma-system.svc:8080",
    notify_min_interval: timedelta = timedelta(minutes=1), notify_max_attempts: int = 5,
    trace_url: str | None = None, trace_backend: str = "jaeger",
) -> None:
    """Always-on checker: watches the cluster, keeps every Application's health current, and
    serves it (REST API, /metrics, EventMeshHealth objects, annotations, Events).

    Every option can also be set in the environment as EVENTMESH_HEALTH_<OPTION>.
    """
    import asyncio
    import contextlib
    import logging
    import os
    import socket

    import httpx2
    import lightkube

    from eventmesh_health.serve.service import Service, Settings
    from eventmesh_health.sources.cluster import load_config

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    seconds = lease_duration.total_seconds()
    probe_settings = None
    if trace_url and not probe:
        _fail("--trace-url looks up the traces of failed heartbeats: it needs --probe",
              EXIT_INPUT)
    if probe:
        from eventmesh_health.probing.runner import ProbeSettings

        secret_ns, sep, secret_name = probe_secret.partition("/")
        if not sep or not secret_ns or not secret_name:
            _fail(f"--probe-secret must be NAMESPACE/NAME, not {probe_secret!r}", EXIT_INPUT)
        from eventmesh_health.probing.health import ProbeThresholds
        from eventmesh_health.probing.sender import (
            DEFAULT_BROKER_URL_TEMPLATE,
            DEFAULT_EVENT_SERVICE_URL_TEMPLATE,
            DEFAULT_RECEIVER_URL_TEMPLATE,
        )
        from eventmesh_health.probing.triggers import REPLICA_PLACEHOLDER
        from eventmesh_health.serve.service import default_advertise_address, unspecified

        try:
            thresholds = ProbeThresholds(interval=probe_interval, latency_slo=probe_latency_slo,
                                         max_loss_ratio=probe_max_loss)
        except ValueError as err:
            _fail(f"probing thresholds: {err}", EXIT_INPUT)
        if probe_grace is not None and probe_grace >= probe_interval:
            _fail("--probe-grace must be shorter than --probe-interval", EXIT_INPUT)
        receiver = receiver_url_template or DEFAULT_RECEIVER_URL_TEMPLATE
        advertise = (advertise_address or "").strip() or default_advertise_address(
            host, receiver_port or port, os.environ.get("POD_IP"))
        try:
            receiver.format(app="a", application="a", namespace="n", replica=advertise)
        except (KeyError, IndexError, ValueError) as err:
            _fail(f"--receiver-url-template {receiver!r}: {type(err).__name__}: {err} "
                  "(placeholders: {namespace}, {application}, {replica})", EXIT_INPUT)
        if REPLICA_PLACEHOLDER in receiver and unspecified(advertise):
            _fail(f"--receiver-url-template uses {REPLICA_PLACEHOLDER}, which would be "
                  f"{advertise}, an address nobody can reach: set --advertise-address "
                  "(or $POD_IP)", EXIT_INPUT)
        if trace_url:
            from eventmesh_health.sources.tracing import TraceBackend
            try:
                TraceBackend(trace_backend, trace_url)  # type: ignore[arg-type]
            except ValueError as err:
                _fail(f"--trace-url: {err}", EXIT_INPUT)
        flow_templates: list[tuple[str, str]] = []
        for item in flow_url_templates:
            hop, sep, template = item.partition("=")
            try:
                template.format(namespace="n", name="x", kind="K")
            except (KeyError, IndexError, ValueError) as err:
                _fail(f"--flow-url-template {item!r}: {type(err).__name__}: {err} "
                      "(placeholders: {namespace}, {name}, {kind})", EXIT_INPUT)
            if not sep or hop.strip() not in ("ingress", "channel", "broker") or not template:
                _fail(f"--flow-url-template must be HOP=TEMPLATE with HOP one of broker, "
                      f"channel, not {item!r}", EXIT_INPUT)
            flow_templates.append((hop.strip(), template))
        probe_settings = ProbeSettings(
            flow_url_templates=tuple(flow_templates),
            interval=probe_interval, thresholds=thresholds, grace=probe_grace,
            window=probe_window,
            secret_namespace=secret_ns, secret_name=secret_name,
            receiver_url_template=receiver, advertise_address=advertise,
            event_service_url_template=(event_service_url_template
                                        or DEFAULT_EVENT_SERVICE_URL_TEMPLATE),
            broker_url_template=broker_url_template or DEFAULT_BROKER_URL_TEMPLATE,
            adapter_url_template=adapter_url_template or None,
            channel_url_template=channel_url_template or None,
            trace_url=trace_url or None, trace_backend=trace_backend)
    notify_settings = None
    if notify_urls or notify_secret:
        from eventmesh_health.serve.notify import NotifySettings, check_url

        secret = None
        if notify_secret:
            secret_ns, sep, secret_name = notify_secret.partition("/")
            if not sep or not secret_ns or not secret_name:
                _fail("--notify-secret must be NAMESPACE/NAME", EXIT_INPUT)
            secret = (secret_ns, secret_name)
        try:
            check_url(notify_link_base, "--notify-link-base")
            notify_settings = NotifySettings(
                urls=tuple(notify_urls), secret=secret, link_base=notify_link_base,
                min_interval=notify_min_interval, max_attempts=notify_max_attempts)
        except ValueError as err:  # its message never quotes a URL
            _fail(str(err), EXIT_INPUT)
    connection = _connection(kubeconfig, context, request_timeout)
    try:
        config = load_config(connection)
    except ClusterError as err:
        _fail(str(err), EXIT_INPUT)
    profile = _live_profile(profile_name, connection)
    if probe_settings is not None and profile.data_plane is None:
        _fail(f"--probe: profile {profile.name} has no data plane to probe", EXIT_INPUT)
    logging.getLogger("eventmesh_health.serve").info("profile %s", profile.name)
    settings = Settings(
        profile=profile,
        probe=probe_settings,
        notify=notify_settings,
        host=host, port=port, receiver_port=receiver_port,
        leader_election=leader_election, lease_namespace=lease_namespace,
        lease_name=lease_name, identity=identity or socket.gethostname(),
        lease_duration=seconds, renew_deadline=seconds * 2 / 3, retry_period=seconds * 2 / 15,
        events_namespace=events_namespace, write=write, outage_after=outage_after,
        kube_api_qps=kube_api_qps, kube_api_burst=kube_api_burst,
        thresholds=Thresholds(stuck_deletion=stuck_deletion_after,
                              progress_deadline=progress_deadline),
    )

    async def run() -> None:
        client = lightkube.AsyncClient(config, timeout=httpx2.Timeout(request_timeout),
                                       trust_env=True)
        try:
            await Service(client, settings).run()
        finally:
            await client.close()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a clean stop, no traceback
        asyncio.run(run())


def _hop_url(item: str) -> tuple[str, str]:
    hop, sep, url = item.partition("=")
    if not sep or not hop or not url.startswith(("http://", "https://")):
        _fail(f"--hop-url must be HOP=URL with an http(s) URL, not {item[:80]!r}", EXIT_INPUT)
    return hop, url


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        _fail(f"--listen must be HOST:PORT (PORT 0: any free one), not {value[:80]!r}",
              EXIT_INPUT)
    return host.strip("[]") or "0.0.0.0", int(port)


@main.command()
@click.argument("target")
@click.option("-n", "--namespace", default="default", show_default=True,
              help="The flow's namespace, or the namespace an application is bound to.")
@click.option("--timeout", default="30s", show_default=True, callback=_positive_duration,
              help="Deadline for the whole run up to the event's arrival (cleanup comes "
              "after it).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT the run's receiver listens on (in a Pod: 0.0.0.0:PORT).")
@click.option("--receiver-url", default=None, envvar=_env("SMOKE_RECEIVER_URL"),
              help="Base URL the mesh reaches the receiver at (default: http://$POD_IP:PORT "
              "in a Pod, else the --listen address).")
@click.option("--dead-letter-url", default=None,
              help="Base URL for the run's dead letters (default: --receiver-url).")
@click.option("--hop-url", "hop_urls", multiple=True, metavar="HOP=URL",
              help="Post into HOP at URL instead of the address the cluster names "
              "({namespace}, {name}, {app}); HOP: broker, trigger-channel, channel "
              "(Knative v1), ingress, channel, broker (Kyma 1.x). Repeatable.")
@click.option("--trace-url", default=None, envvar=_env("TRACE_URL"), metavar="URL",
              help="A tracing backend (Jaeger query API or Zipkin): the event's trace is "
                   "looked up after the run and where it stops is reported.")
@click.option("--trace-backend", type=click.Choice(["jaeger", "zipkin"]), default="jaeger",
              show_default=True, envvar=_env("TRACE_BACKEND"))
@_input_options
def smoke(
    target: str, namespace: str, timeout: timedelta, output: str, listen: str,
    receiver_url: str | None, dead_letter_url: str | None, hop_urls: tuple[str, ...],
    trace_url: str | None, trace_backend: str,
    kubeconfig: Path | None, context: str | None, request_timeout: float,
    profile_name: str = AUTO,
) -> None:
    """Send one event through the mesh and see where it stops; remove what it made.

    TARGET: a Kyma 1.x Application (in --namespace, a namespace bound to it), or a Knative
    v1 flow as broker/NAME or channel/NAME (a bare NAME: the Broker, else the Channel). A
    temporary Trigger (Subscription) labelled eventmesh-health.kyma-project.io/smoke=<run>
    delivers to this command's receiver; it is deleted on success, failure, timeout,
    SIGINT and SIGTERM, and by the next run once expired after a SIGKILL.

    \b
    Exit codes:
      0  the event arrived
      1  it did not (or not in time): the report names the hop
      2  bad usage or input (unknown target, kubeconfig), or a permission error
      3  the cluster could not be read
      130, 143  interrupted by SIGINT, SIGTERM (after cleaning up)
    """
    try:
        _smoke(target, namespace, timeout, output, listen, receiver_url, dead_letter_url,
               hop_urls, trace_url, trace_backend, kubeconfig, context, request_timeout,
               profile_name)
    except KeyboardInterrupt:  # before the run's own handlers: nothing created yet
        _fail("interrupted before anything was created", 130)


def _smoke(
    target: str, namespace: str, timeout: timedelta, output: str, listen: str,
    receiver_url: str | None, dead_letter_url: str | None, hop_urls: tuple[str, ...],
    trace_url: str | None, trace_backend: str,
    kubeconfig: Path | None, context: str | None, request_timeout: float, profile_name: str,
) -> NoReturn:
    import asyncio

    import httpx2
    import lightkube

    from eventmesh_health.smoke.command import (
        SmokeInputError,
        SmokeSettings,
        execute,
        print_text,
    )
    from eventmesh_health.sources.cluster import load_config
    from eventmesh_health.sources.tracing import TraceBackend

    host, port = _listen(listen)
    backend = None
    if trace_url:
        try:
            backend = TraceBackend(trace_backend, trace_url)  # type: ignore[arg-type]
        except ValueError as err:
            _fail(f"--trace-url: {err}", EXIT_INPUT)
    settings = SmokeSettings(trace_backend=backend,
        target=target, namespace=namespace, timeout=timeout.total_seconds(),
        listen_host=host, listen_port=port, receiver_url=receiver_url,
        dead_letter_url=dead_letter_url, hop_urls=tuple(_hop_url(h) for h in hop_urls))
    connection = _connection(kubeconfig, context, request_timeout)
    try:
        config = load_config(connection)
    except ClusterError as err:
        _fail(str(err), EXIT_INPUT)
    profile = _live_profile(profile_name, connection)

    async def run() -> tuple[Any, int]:
        client = lightkube.AsyncClient(config, timeout=httpx2.Timeout(request_timeout),
                                       trust_env=True)
        try:
            return await execute(client, profile, settings,
                                 on_signal=lambda text: click.echo(text, err=True))
        finally:
            await client.close()

    try:
        result, code = asyncio.run(run())
    except SmokeInputError as err:
        _fail(str(err), EXIT_INPUT)
    except OSError as err:  # the receiver's port
        _fail(f"the receiver cannot listen on {listen}: {err.strerror or err}", EXIT_INPUT)
    except Exception as err:  # the API server refused or could not be reached
        _smoke_cluster_failure(err)
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        print_text(result)
    sys.exit(code)


def _smoke_cluster_failure(err: Exception) -> NoReturn:
    from lightkube import ApiError

    if isinstance(err, ApiError):
        code = err.status.code or 0
        message = f"the API server answered {code}: {err.status.message}"
        _fail(message, EXIT_INPUT if code in (401, 403, 404, 422) else EXIT_CLUSTER)
    _cluster_failure(err)
