"""Benchmark the control-plane analysis on synthetic meshes.

    .venv/bin/python benchmarks/bench_analysis.py [--apps 1000 4545 10000] [--namespaces 3]

For each size it prints: objects, reading time (`load_snapshot` of the mesh written to a
temp folder as one `kubectl get -o json` List, CPU time; reported separately), analysis
time (index + graph + report, best of --repeat runs, CPU time of this single-threaded
process), objects analysed per second, and the peak memory the analysis allocates
(tracemalloc, in a separate run: it slows Python down); last, which build of the analysis
ran (`EVENTMESH_HEALTH_PURE=1` runs its pure-Python source where the compiled one is built).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import synthetic
from eventmesh_health import compiled
from eventmesh_health.analysis import analyse
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.sources.files import load_snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from machine import LoadSampler


def parse_time(objects: list[dict[str, object]]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mesh.json"
        # kubectl's layout: keys sorted, indented by 4 spaces
        path.write_text(json.dumps({"apiVersion": "v1", "items": objects, "kind": "List",
                                    "metadata": {"resourceVersion": ""}}, indent=4))
        gc.collect()
        start = time.process_time()
        snapshot = load_snapshot(path, KYMA_1, now=datetime.fromisoformat(synthetic.TAKEN_AT))
        elapsed = time.process_time() - start
        assert len(snapshot.objects) == len(objects)
        del snapshot
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, nargs="+", default=[1000, 4545, 10000])
    parser.add_argument("--namespaces", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-parse", action="store_true", help="do not time reading")
    args = parser.parse_args()

    taken_at = datetime.fromisoformat(synthetic.TAKEN_AT)
    print(f"{'apps':>6} {'ns':>3} {'objects':>9} {'read s':>8} {'analyse s':>10} "
          f"{'objects/s':>10} {'peak MiB':>9}  health")
    with LoadSampler() as sampler:
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
    print(f"load average (1 min) during the run: {sampler.summary()}")
    print(f"analysis {compiled.BUILD}")

if __name__ == "__main__":
    main()
