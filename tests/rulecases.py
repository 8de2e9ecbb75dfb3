"""Load rule fixtures: a healthy base mesh, a merge patch, and the findings expected.

Each `tests/fixtures/rules/<case>/case.yaml` holds, side by side:
- `why`: the rule or field failure the case pins down;
- `patch`: objects merged (RFC 7386 JSON merge patch: maps merge, lists and scalars
  replace, null deletes) into the base object of the same kind, namespace and name,
  or added when there is none;
- `remove`: objects of the base to drop, as "Kind namespace/name" or "Kind name";
- `now`, `thresholds`: optional overrides;
- `collected`: `all` (default: as a dump of ours, which lists every kind it read) or
  `infer` (as a plain kubectl dump: a kind with no object counts as not collected);
- `expect`: the mesh health, the states, and every finding, written as
  "[where] Health Kind namespace/name Reason ROOT" or "... <- Kind namespace/name".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from eventmesh_health.model import Finding, MeshReport

RULES = Path(__file__).parent / "fixtures" / "rules"
BASE = RULES / "_base" / "mesh.yaml"
TAKEN_AT = "2020-06-15T10:00:00Z"


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(target.get(key), value)
    return result


def identity(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


@dataclass
class Case:
    name: str
    why: str
    objects: list[Any]
    now: datetime
    thresholds: dict[str, timedelta]
    collected_all: bool
    expect: dict[str, Any]


def _duration(text: str) -> timedelta:
    unit = {"s": "seconds", "m": "minutes", "h": "hours"}[text[-1]]
    return timedelta(**{unit: int(text[:-1])})


def load_case(path: Path) -> Case:
    spec = yaml.safe_load(path.read_text())
    objects: list[Any] = list(yaml.safe_load_all(BASE.read_text()))
    removed = set(spec.get("remove") or [])
    unknown = removed - {identity(o) for o in objects}
    assert not unknown, f"{path}: remove names objects the base does not have: {unknown}"
    objects = [o for o in objects if identity(o) not in removed]
    for patch in spec.get("patch") or []:
        if not isinstance(patch, dict) or not isinstance(patch.get("metadata"), dict):
            objects.append(patch)  # deliberately malformed input
            continue
        key = identity(patch)
        for position, obj in enumerate(objects):
            if isinstance(obj, dict) and identity(obj) == key:
                objects[position] = merge(obj, patch)
                break
        else:
            objects.append(patch)
    thresholds = {k: _duration(v) for k, v in (spec.get("thresholds") or {}).items()}
    now = datetime.fromisoformat(spec.get("now", TAKEN_AT))
    collected = spec.get("collected", "all")
    assert collected in ("all", "infer"), f"{path}: collected must be all or infer"
    return Case(
        path.parent.name, spec["why"], objects, now, thresholds, collected == "all",
        spec["expect"],
    )


def cases() -> list[Path]:
    return sorted(p for p in RULES.glob("*/case.yaml") if not p.parent.name.startswith("_"))


def describe(where: str, finding: Finding) -> str:
    tail = "ROOT" if finding.root_cause else f"<- {finding.caused_by}"
    return f"[{where}] {finding.health.value} {finding.object} {finding.reason} {tail}"


def described_findings(report: MeshReport) -> list[str]:
    lines = [describe("system", f) for f in report.system.findings]
    for app in report.applications:
        lines.extend(describe(app.name, f) for f in app.findings)
        for ns in app.namespaces:
            lines.extend(describe(f"{app.name}/{ns.name}", f) for f in ns.findings)
    return sorted(lines)


def states(report: MeshReport) -> dict[str, int]:
    result = {}
    for app in report.applications:
        result[app.name] = app.state
        for ns in app.namespaces:
            result[f"{app.name}/{ns.name}"] = ns.state
    return result
