"""Print what the analysis makes of many inputs, one line per input, for `test_compiled.py`
to compare the compiled build's lines with the pure-Python source's (run once each, in
processes of their own: a process runs one build or the other).

Each line is the input's name and a digest of its report (JSON, `takenAt` included) and of
its graph (every node's role, object, verdicts, values, needs and children, and each
application's and namespace's nodes and state). The inputs: every example and rule case
under each profile, the synthetic mesh, and meshes damaged at random (a fixed seed).

    python -m tests.compiled_reports [--damaged 300]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from eventmesh_health import compiled
from eventmesh_health.analysis import Analysis, Thresholds, analyse_graph
from eventmesh_health.analysis.graph import Node
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.sources.files import SnapshotError, load_snapshot
from eventmesh_health.topology import Profile
from eventmesh_health.topology.registry import AUTO, CHOICES, lookup
from tests.rulecases import BASE, TAKEN_AT, cases, load_case

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import synthetic  # noqa: E402

JUNK: list[Any] = [None, True, 0, 1, -1, "", "x", "True", "False", "Unknown",
                   "2020-06-15T09:00:00Z", [], {}, [{}], {"type": "Ready"}, 2**70]


def _node_line(node: Node, ids: dict[int, int]) -> str:
    return repr((
        node.role, node.description, node.ref.model_dump(), node.verdict, node.absent,
        node.judged, sorted(node.values.items()),
        [ids.get(id(n), -1) for n in node.needs], [ids.get(id(n), -1) for n in node.children],
        ids.get(id(node.parent), -1) if node.parent is not None else None,
    ))


def _digest(analysis: Analysis) -> str:
    graph = analysis.graph
    nodes: list[Node] = [*graph.system]
    units: list[str] = []
    for app in graph.apps:
        nodes.extend(app.nodes)
        units.append(f"app {app.name} {len(app.nodes)}")
        for ns in app.namespaces:
            nodes.extend(ns.nodes)
            units.append(f"ns {ns.name} {len(ns.nodes)} {ns.state}")
    for flow in graph.flows:
        nodes.extend(flow.nodes)
        units.append(f"flow {flow.key} {len(flow.nodes)}")
    ids = {id(node): position for position, node in enumerate(nodes)}
    sha = hashlib.sha256(analysis.report.model_dump_json(by_alias=True).encode())
    for line in [*units, *(_node_line(node, ids) for node in nodes)]:
        sha.update(line.encode() + b"\n")
    return sha.hexdigest()[:20]


def _damaged(objects: list[Any], rng: random.Random) -> list[Any]:
    objects = copy.deepcopy(objects)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(objects))
        parent: Any = None
        key: Any = None
        current = objects[position]
        while isinstance(current, dict | list) and current and rng.random() < 0.8:
            parent = current
            key = rng.choice(list(current)) if isinstance(current, dict) \
                else rng.randrange(len(current))
            current = current[key]
        value = copy.deepcopy(rng.choice(JUNK))
        if parent is None:
            objects[position] = value
        elif isinstance(parent, dict) and rng.random() < 0.3:
            del parent[key]
        else:
            parent[key] = value
    return objects


Input = tuple[str, Snapshot, Thresholds, Profile | None]  # None: by every profile


def inputs(damaged: int, profiles: dict[str, Profile]) -> Iterator[Input]:
    now = datetime.fromisoformat(TAKEN_AT)
    examples = sorted({path.parent for path in (ROOT / "examples").rglob("*.yaml")})
    for example in examples:
        for name, profile in profiles.items():
            try:  # as `check --profile` reads it; a profile may refuse an example's kinds
                snapshot = load_snapshot(example, profile, now)
            except SnapshotError:
                continue
            yield f"example {example.relative_to(ROOT)} {name}", snapshot, Thresholds(), profile
    for path in cases():
        case = load_case(path)
        yield (f"case {case.name}", Snapshot(case.objects, case.now),
               Thresholds(**case.thresholds), None)
    synthetic_now = datetime.fromisoformat(synthetic.TAKEN_AT)
    mesh = synthetic.mesh(20, 3)
    yield "synthetic 20x3", Snapshot(mesh, synthetic_now), Thresholds(), None
    base = list(yaml.safe_load_all(BASE.read_text()))
    small = synthetic.mesh(2, 2)
    rng = random.Random(14)
    for number in range(damaged):
        objects, at = (base, now) if number % 2 else (small, synthetic_now)
        yield (f"damaged {number}", Snapshot(_damaged(objects, rng), at),
               Thresholds(progress_deadline=timedelta(minutes=rng.choice((1, 10, 100000)))), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--damaged", type=int, default=300)
    args = parser.parse_args()
    print(f"build {compiled.BUILD}")
    profiles = {name: lookup(name) for name in CHOICES if name != AUTO}
    for name, snapshot, thresholds, only in inputs(args.damaged, profiles):
        for profile_name, profile in profiles.items():
            if only is None or profile is only:
                analysis = analyse_graph(snapshot, profile, thresholds)
                print(f"{name} / {profile_name} {_digest(analysis)}")

if __name__ == "__main__":
    main()
