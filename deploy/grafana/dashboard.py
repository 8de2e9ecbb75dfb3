"""The Grafana dashboard of eventmesh-health, as code (grafana-foundation-sdk).

    .venv/bin/python deploy/grafana/dashboard.py            # writes eventmesh-health.json
    .venv/bin/python deploy/grafana/dashboard.py --check    # exit 1 if it is not current

It lives beside its output, not in the package: only this generator needs the SDK (a
development dependency), the image and `serve` never do. tests/test_dashboard.py holds the
committed JSON to what this writes and every query to the metrics `serve` exposes.

Every replica of `serve` exports the same health and only the leader probes, so health
queries take `max without (instance, pod)` and heartbeat ones `sum`. A health state set is
turned into one number per subject, 0 Healthy, 1 Progressing, 2 Unknown, 3 Degraded,
4 Unhealthy (the order of `model.Health` by severity), which the value mappings colour.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import (
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).with_name("eventmesh-health.json")
UID = "eventmesh-health"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Health ranks and their colours (Grafana's named palette).
HEALTH = (("Healthy", "green"), ("Progressing", "blue"), ("Unknown", "purple"),
          ("Degraded", "orange"), ("Unhealthy", "red"))
APP = 'application=~"$application"'


def rank(metric: str, by: str, selector: str = "") -> str:
    """A state set as one number per `by`: the rank of its current health."""
    parts = [
        f'{i} * max by ({by}) ({metric}{{health="{name}"{"," + selector if selector else ""}}})'
        for i, (name, _) in enumerate(HEALTH) if i
    ]
    return "\n  + ".join(parts)


def health_mappings() -> list[model.ValueMapping]:
    return [model.ValueMap(options={
        str(i): model.ValueMappingResult(text=name, color=colour, index=i)
        for i, (name, colour) in enumerate(HEALTH)})]


def health_thresholds() -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps([
        model.Threshold(value=None if i == 0 else float(i), color=colour)
        for i, (_, colour) in enumerate(HEALTH)])


def query(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
          table_format: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def grid(x: int, y: int, w: int, h: int) -> model.GridPos:
    return model.GridPos(x=x, y=y, w=w, h=h)


def overview(y: int) -> list[object]:
    return [
        stat.Panel().title("Mesh").description(
            "eventmesh_mesh_healthy: the whole mesh (system and every application) Healthy?")
        .with_target(query("min(eventmesh_mesh_healthy)", instant=True))
        .mappings([model.ValueMap(options={
            "1": model.ValueMappingResult(text="Healthy", color="green", index=0),
            "0": model.ValueMappingResult(text="Not healthy", color="red", index=1)})])
        .color_mode(common.BigValueColorMode.BACKGROUND).grid_pos(grid(0, y, 4, 4)),
        stat.Panel().title("System components").description(
            "eventmesh_system_health: the mesh's own components (dispatchers, controllers, "
            "brokers' data plane).")
        .with_target(query(rank("eventmesh_system_health", ""), instant=True))
        .mappings(health_mappings()).thresholds(health_thresholds())
        .color_mode(common.BigValueColorMode.BACKGROUND).grid_pos(grid(4, y, 4, 4)),
        stat.Panel().title("Applications by health").description(
            "How many applications are in each health now.")
        .with_target(query(
            "count by (health) (max without (instance, pod) "
            "(eventmesh_application_health) == 1)", "{{health}}", instant=True))
        .grid_pos(grid(8, y, 8, 4)),
        stat.Panel().title("Flows by health").description(
            "How many flows (Broker, Channel, source with what they deliver to) are in each "
            "health now.")
        .with_target(query(
            "count by (health) (max without (instance, pod) (eventmesh_flow_health) == 1)",
            "{{health}}", instant=True))
        .grid_pos(grid(16, y, 8, 4)),
    ]


def over_time(y: int) -> list[object]:
    return [
        statetimeline.Panel().title("Application health over time").description(
            "Per application: Healthy, Progressing, Unknown, Degraded, Unhealthy.")
        .with_target(query(rank("eventmesh_application_health", "application", APP),
                           "{{application}}"))
        .mappings(health_mappings()).thresholds(health_thresholds())
        .color_scheme(db.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER).grid_pos(grid(0, y, 12, 10)),
        statetimeline.Panel().title("Flow health over time").description(
            "Per flow (its root object): Healthy, Progressing, Unknown, Degraded, Unhealthy.")
        .with_target(query(rank("eventmesh_flow_health", "flow, kind, namespace, name"),
                           "{{kind}} {{namespace}}/{{name}}"))
        .mappings(health_mappings()).thresholds(health_thresholds())
        .color_scheme(db.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER).grid_pos(grid(12, y, 12, 10)),
    ]


def root_causes(y: int) -> list[object]:
    def causes(title: str, expr: str, description: str, x: int, w: int,
               below: int = 0) -> object:
        return (table.Panel().title(title).description(description)
                .with_target(query(expr, instant=True, table_format=True))
                .with_transformation(model.DataTransformerConfig(
                    id_val="organize", options={"excludeByName": {"Time": True}}))
                .grid_pos(grid(x, y + below, w, 8)))

    return [
        causes("Applications: root cause now",
               f"max without (instance, pod) (eventmesh_application_root_cause{{{APP}}})",
               "eventmesh_application_root_cause: each broken application's first root cause "
               "(reason, object); Value = how many root causes it has.", 0, 12),
        causes("Flows: root cause now",
               "max without (instance, pod) (eventmesh_flow_root_cause)",
               "eventmesh_flow_root_cause: each broken flow's first root cause.", 12, 12),
        causes("System components down",
               "max without (instance, pod) (eventmesh_system_root_cause)",
               "eventmesh_system_root_cause: mesh components that are a root cause now.",
               0, 12, 8),
        timeseries.Panel().title("Root causes by reason").description(
            "eventmesh_findings{root_cause=\"true\"}: how many root-cause findings, by reason "
            "code.")
        .with_target(query(
            "sum by (reason) (max without (instance, pod) "
            "(eventmesh_findings{root_cause=\"true\"}))", "{{reason}}"))
        .grid_pos(grid(12, y + 8, 12, 8)),
    ]


def heartbeats(y: int) -> list[object]:
    bucket = ("sum by (application, namespace, le) "
              f"(rate(eventmesh_heartbeat_latency_seconds_bucket{{{APP}}}[$__rate_interval]))")
    latency = timeseries.Panel().title("Heartbeat latency (end to end)").description(
        "Percentiles of eventmesh_heartbeat_latency_seconds, per application and namespace, "
        "and the objective (--probe-latency-slo) the checker judges by.").unit("s")
    for ref, q in (("A", "0.5"), ("B", "0.9"), ("C", "0.99")):
        latency = latency.with_target(query(
            f"histogram_quantile({q}, {bucket})",
            f"p{q[2:].ljust(2, '0')} {{{{application}}}} {{{{namespace}}}}", ref))
    latency = latency.with_target(query(
        "max(eventmesh_heartbeat_latency_objective_seconds)", "objective", "D"))
    return [
        latency.grid_pos(grid(0, y, 12, 9)),
        timeseries.Panel().title("Heartbeat availability").description(
            "eventmesh_heartbeat_availability_ratio: share of the window's heartbeats that "
            "arrived.").unit("percentunit").min(0).max(1)
        .with_target(query(
            f"max without (instance, pod) (eventmesh_heartbeat_availability_ratio{{{APP}}})",
            "{{application}} {{namespace}}"))
        .grid_pos(grid(12, y, 12, 9)),
        timeseries.Panel().title("Heartbeats lost, duplicated, dead-lettered").description(
            "Per second, by application, namespace and hop.").unit("ops")
        .with_target(query(
            f"sum by (application, namespace, hop) "
            f"(rate(eventmesh_heartbeats_lost_total{{{APP}}}[$__rate_interval]))",
            "lost {{application}} {{namespace}} {{hop}}", "A"))
        .with_target(query(
            f"sum by (application, namespace, hop) "
            f"(rate(eventmesh_heartbeats_duplicated_total{{{APP}}}[$__rate_interval]))",
            "duplicated {{application}} {{namespace}} {{hop}}", "B"))
        .with_target(query(
            f"sum by (application, namespace, hop) "
            f"(rate(eventmesh_heartbeats_dead_lettered_total{{{APP}}}[$__rate_interval]))",
            "dead-lettered {{application}} {{namespace}} {{hop}}", "C"))
        .grid_pos(grid(0, y + 9, 12, 8)),
        timeseries.Panel().title("Heartbeats sent and received").description(
            "Per second: sent per injection hop, received per namespace and hop.").unit("ops")
        .with_target(query(
            f"sum by (application, hop) "
            f"(rate(eventmesh_heartbeats_sent_total{{{APP}}}[$__rate_interval]))",
            "sent {{application}} {{hop}}", "A"))
        .with_target(query(
            f"sum by (application, namespace, hop) "
            f"(rate(eventmesh_heartbeats_received_total{{{APP}}}[$__rate_interval]))",
            "received {{application}} {{namespace}} {{hop}}", "B"))
        .with_target(query(
            "sum by (reason) (rate(eventmesh_heartbeats_rejected_total[$__rate_interval])) > 0",
            "rejected {{reason}}", "C"))
        .grid_pos(grid(12, y + 9, 12, 8)),
    ]


def checker(y: int) -> list[object]:
    return [
        stat.Panel().title("Replicas scraped").description(
            "Replicas of serve that Prometheus scrapes (eventmesh_cache_synced present).")
        .with_target(query("count(eventmesh_cache_synced)", instant=True))
        .grid_pos(grid(0, y, 4, 4)),
        stat.Panel().title("Caches synced").description(
            "Replicas whose watch caches have all synced.")
        .with_target(query("sum(eventmesh_cache_synced)", instant=True))
        .grid_pos(grid(4, y, 4, 4)),
        stat.Panel().title("Leader").description(
            "Replicas holding the leader lease: exactly 1 writes and probes.")
        .with_target(query("sum(eventmesh_is_leader)", instant=True))
        .thresholds(db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps([
            model.Threshold(value=None, color="red"), model.Threshold(value=1.0, color="green"),
            model.Threshold(value=2.0, color="red")]))
        .color_mode(common.BigValueColorMode.BACKGROUND).grid_pos(grid(8, y, 4, 4)),
        timeseries.Panel().title("Analysis duration").description(
            "eventmesh_analysis_duration_seconds: one analysis of the cached objects.")
        .unit("s")
        .with_target(query(
            "histogram_quantile(0.5, sum by (instance, le) "
            "(rate(eventmesh_analysis_duration_seconds_bucket[$__rate_interval])))",
            "p50 {{instance}}", "A"))
        .with_target(query(
            "histogram_quantile(0.99, sum by (instance, le) "
            "(rate(eventmesh_analysis_duration_seconds_bucket[$__rate_interval])))",
            "p99 {{instance}}", "B"))
        .grid_pos(grid(12, y, 12, 8)),
        timeseries.Panel().title("Watch restarts and relists").description(
            "Per 15 minutes and kind. A watch resumes every 5 to 10 minutes by design "
            "(1.5 to 3 per 15 minutes); EventMeshHealthWatchesRestarting fires above 10.")
        .with_target(query(
            "sum by (kind) (increase(eventmesh_watch_restarts_total[15m]))",
            "restarts {{kind}}", "A"))
        .with_target(query(
            "sum by (kind) (increase(eventmesh_relists_total[15m]))", "relists {{kind}}",
            "B"))
        .grid_pos(grid(0, y + 4, 12, 8)),
        timeseries.Panel().title("Writes to the API server").description(
            "eventmesh_api_writes_total per resource and verb: zero in a steady state.")
        .unit("ops")
        .with_target(query(
            "sum by (resource, verb) (rate(eventmesh_api_writes_total[$__rate_interval]))",
            "{{verb}} {{resource}}"))
        .grid_pos(grid(12, y + 8, 12, 8)),
        timeseries.Panel().title("Objects in the watch cache").description(
            "eventmesh_cache_objects per kind (the leader's).")
        .with_target(query("max by (kind) (eventmesh_cache_objects)", "{{kind}}"))
        .grid_pos(grid(0, y + 12, 12, 8)),
    ]


def build() -> model.Dashboard:
    rows = [("Mesh overview", overview), ("Health over time", over_time),
            ("Root causes now", root_causes), ("Heartbeats", heartbeats),
            ("Checker", checker)]
    board = (
        db.Dashboard("Event mesh health").uid(UID).tags(["eventmesh-health", "kyma", "knative"])
        .description("Health of the event mesh as eventmesh-health serve sees it: what is "
                     "broken, where, since when; heartbeat delivery; the checker itself.")
        .readonly().refresh("30s").time("now-6h", "now").timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus")
                       .type("prometheus"))
        .with_variable(db.QueryVariable("application").label("Application")
                       .datasource(DATASOURCE)
                       .query("label_values(eventmesh_application_health, application)")
                       .multi(True).include_all(True).all_value(".*")
                       .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(model.VariableSort.ALPHABETICAL_ASC))
    )
    y = 0
    for title, section in rows:
        board = board.with_row(db.Row(title).grid_pos(grid(0, y, 24, 1)))
        bottom = y + 1
        for panel in section(y + 1):
            board = board.with_panel(panel)  # type: ignore[arg-type]
            pos = panel.build().grid_pos  # type: ignore[attr-defined]
            bottom = max(bottom, pos.y + pos.h)
        y = bottom
    return board.build()


def render() -> str:
    """The dashboard JSON as committed: sorted keys, two-space indent, one final newline."""
    return json.dumps(build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is not current: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
