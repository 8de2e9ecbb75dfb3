"""`eventmesh-health`: check, explain.

Exit codes: 0 the mesh is healthy, 1 it is not, 2 usage or input error,
3 the cluster could not be read.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console

from eventmesh_health.analysis import KYMA_1, Analysis, Thresholds, analyse_graph
from eventmesh_health.outputs.text import print_check
from eventmesh_health.outputs.tree import explain_json, explain_tree
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.sources.files import SnapshotError, load_snapshot

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_INPUT, EXIT_CLUSTER = 0, 1, 2, 3

_DURATION = re.compile(r"^(\d+)(s|m|h)$")


def _duration(_ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    match = _DURATION.match(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration like 90s, 5m or 2h", param=param)
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours"}[unit]: amount})


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _emit(data: Any, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


def _snapshot(path: Path | None) -> Snapshot:
    if path is None:
        _fail(
            "reading a live cluster is not available yet: give a dump with --snapshot PATH",
            EXIT_INPUT,
        )
    try:
        return load_snapshot(path, KYMA_1, now=datetime.now(UTC))
    except SnapshotError as err:
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


def _analysis(path: Path | None, stuck: timedelta, deadline: timedelta) -> Analysis:
    snapshot = _snapshot(path)
    return analyse_graph(snapshot, KYMA_1, Thresholds(stuck_deletion=stuck,
                                                      progress_deadline=deadline))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eventmesh-health")
def main() -> None:
    """Health of a Kyma / Knative event mesh: what is broken, and where."""


@main.command()
@_SNAPSHOT_OPTION
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True)
@_STUCK_OPTION
@_DEADLINE_OPTION
def check(
    snapshot: Path | None, output: str, stuck_deletion_after: timedelta,
    progress_deadline: timedelta,
) -> None:
    """Health per Application and bound namespace, with root causes and their symptoms.

    Exit code 0 when everything is Healthy, 1 when not, 2 on bad input.
    """
    report = _analysis(snapshot, stuck_deletion_after, progress_deadline).report
    if output == "table":
        print_check(report, Console(highlight=False, soft_wrap=False))
    else:
        _emit(report.to_json_dict(), output)
    sys.exit(EXIT_HEALTHY if report.healthy else EXIT_UNHEALTHY)


@main.command()
@click.argument("application")
@_SNAPSHOT_OPTION
@click.option("-o", "--output", type=click.Choice(["tree", "json", "yaml"]), default="tree",
              show_default=True)
@_STUCK_OPTION
@_DEADLINE_OPTION
def explain(
    application: str, snapshot: Path | None, output: str, stuck_deletion_after: timedelta,
    progress_deadline: timedelta,
) -> None:
    """One application's whole chain as a tree: every link, its status, where the flow breaks."""
    analysis = _analysis(snapshot, stuck_deletion_after, progress_deadline)
    pairs = zip(analysis.graph.apps, analysis.report.applications, strict=True)
    found = next(((u, r) for u, r in pairs if u.name == application), None)
    if found is None:
        known = ", ".join(a.name for a in analysis.report.applications) or "none"
        _fail(f"no Application {application!r} in the snapshot (applications: {known})",
              EXIT_INPUT)
    unit, app_report = found
    if output == "tree":
        Console(highlight=False).print(explain_tree(unit, app_report, analysis.causes))
    else:
        _emit(explain_json(unit, app_report, analysis.causes), output)
    sys.exit(EXIT_HEALTHY if app_report.health.value == "Healthy" else EXIT_UNHEALTHY)
