"""Benchmark the control-plane analysis on synthetic meshes.

    .venv/bin/python benchmarks/bench_analysis.py [--apps 1000 10000] [--namespaces 3]

For each size it prints: objects, YAML parsing time (loading a dump written to a temp
folder, reported separately), analysis time (index + graph + report, best of --repeat
runs, CPU time of this single-threaded process), objects analysed per second, and the
peak memory the analysis allocates (tracemalloc, in a separate run: it slows Python down).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))

import synthetic
from eventmesh_health.analysis import analyse
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.sources.files import load_snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def parse_time(objects: list[dict[str, object]]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mesh.yaml"
        with path.open("w") as out:
            yaml.dump({"apiVersion": "v1", "kind": "List", "items": objects}, out,
                      Dumper=_Dumper)
        start = time.perf_counter()
        load_snapshot(path, KYMA_1, now=datetime.fromisoformat(synthetic.TAKEN_AT))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--namespaces", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-parse", action="store_true", help="do not time YAML parsing")
    args = parser.parse_args()

    taken_at = datetime.fromisoformat(synthetic.TAKEN_AT)
    print(f"{'apps':>6} {'ns':>3} {'objects':>9} {'parse s':>8} {'analyse s':>10} "
          f"{'objects/s':>10} {'peak MiB':>9}  health")
    for apps in args.apps:
        objects = synthetic.mesh(apps, args.namespaces)
        snapshot = Snapshot(objects, taken_at)
        parse = float("nan") if args.skip_parse else parse_time(objects)
        best = float("inf")
        report = None
        for _ in range(args.repeat):
            gc.collect()
            start = time.process_time()
            report = analyse(snapshot)
            best = min(best, time.process_time() - start)
        gc.collect()
        tracemalloc.start()
        analyse(snapshot)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert report is not None and report.healthy, "the synthetic mesh must be healthy"
        print(f"{apps:>6} {args.namespaces:>3} {len(objects):>9} {parse:>8.2f} {best:>10.2f} "
              f"{len(objects) / best:>10,.0f} {peak:>9.0f}  {report.health.value}")


if __name__ == "__main__":
    main()
