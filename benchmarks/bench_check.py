"""`eventmesh-health check` against kstatus on the same dump, as whole processes.

    make bench          # builds kstatus (hack/kstatus/build.sh), then runs this
    .venv/bin/python benchmarks/bench_check.py [--apps 1000 4545 10000] [--repeat 3] [--skip-yaml]
        [--distinct-times]
    .venv/bin/python benchmarks/bench_check.py --growth [--repeat 1]

For each size, the synthetic healthy mesh (synthetic.mesh: N applications x 3 namespaces,
55 objects per application) is written once as a `kubectl get -o json` List and once as a
`kubectl get -o yaml` List, by a child process. Then, in the same run and interleaved, each of

    eventmesh-health check --snapshot mesh.json -o json
    eventmesh-health check --snapshot mesh.yaml -o json
    kstatus mesh.json      (sigs.k8s.io/cli-utils kstatus/status.Compute over every object;
                            JSON only: the program decodes JSON as kubectl does, kstatus
                            itself reads no files and no YAML)

runs --repeat times as a process of its own; the table shows the best wall time (and every
run's) and the peak RSS of the best run. Wall time and peak RSS come from `/usr/bin/time -v`
if present, else from a fresh, small Python process that runs the one command and reads
getrusage(RUSAGE_CHILDREN). A command whose first run takes longer than --single-run-after
seconds is not repeated (the table says how many runs it had). check must exit 0 (the mesh
is healthy) and kstatus must count every object, else the benchmark fails.

--growth measures only `check --snapshot mesh.json -o json`, at about 1k, 10k, 100k, 250k and
550k objects (18, 182, 1,818, 4,545 and 10,000 applications x 3 namespaces), and prints its
wall time, CPU time and peak RSS against objects, and what each object added since the size
before costs (CPU, RSS): where that stops being about constant, growth is not linear.

kstatus only judges each object on its own; check also links them into chains per
application and names root causes, so the two do not do the same work: the comparison is
"what a user waits for" on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from machine import LoadSampler

ROOT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time"

# Runs one command, prints its wall time and the peak RSS (KiB) of the process that ran it.
# A fresh interpreter (about 10 MiB) so that the RSS a child inherits is small.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], "wb"))
wall = time.perf_counter() - start
print(json.dumps([code, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))
"""


def write_dumps(folder: Path, apps: int, namespaces: int, yaml_too: bool,
                distinct: bool = False) -> None:
    """Write mesh.json (and mesh.yaml): synthetic.mesh(apps, namespaces) as kubectl Lists
    (`distinct`: each object's conditions at a second of their own, synthetic.distinct_times).

    Streamed per application (synthetic.mesh is system() + application(i) for each i), so
    this child stays small even at 10,000 applications. Prints the object count and sizes."""
    import yaml

    import synthetic

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    count = 0
    json_path, yaml_path = folder / "mesh.json", folder / "mesh.yaml"
    yaml_out = yaml_path if yaml_too else Path(os.devnull)
    with json_path.open("w") as js, yaml_out.open("w") as ym:
        # what kubectl prints: a v1 List, JSON indented by 4 spaces, YAML with items unindented
        js.write('{\n    "apiVersion": "v1",\n    "items": [')
        ym.write("apiVersion: v1\nitems:\n")
        chunks = (synthetic.application(i, namespaces) for i in range(apps))
        for chunk in (synthetic.system(), *chunks):
            for obj in chunk:
                if distinct:
                    synthetic.distinct_times(obj, count)
                text = json.dumps(obj, indent=4).replace("\n", "\n        ")
                js.write(("\n        " if count == 0 else ",\n        ") + text)
                count += 1
            if yaml_too:
                yaml.dump(chunk, ym, Dumper=dumper)
        js.write('\n    ],\n    "kind": "List",\n'
                 '    "metadata": {\n        "resourceVersion": ""\n    }\n}\n')
        ym.write('kind: List\nmetadata:\n  resourceVersion: ""\n')
    sizes = {"json": json_path.stat().st_size}
    if yaml_too:
        sizes["yaml"] = yaml_path.stat().st_size
    print(json.dumps({"objects": count, "sizes": sizes}))


@dataclass
class Runs:
    walls: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)  # MiB

    def best(self) -> tuple[float, float]:
        i = min(range(len(self.walls)), key=self.walls.__getitem__)
        return self.walls[i], self.peaks[i]


def measure(command: list[str], out: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS MiB) of `command` run as a process of its own,
    its stdout written to `out`."""
    if os.access(GNU_TIME, os.X_OK):
        with tempfile.NamedTemporaryFile("r", suffix=".time") as report, out.open("wb") as sink:
            code = subprocess.call([GNU_TIME, "-v", "-o", report.name, *command], stdout=sink)
            text = report.read()
        wall_text = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", text)
        peak_text = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        if not wall_text or not peak_text:
            raise RuntimeError(f"cannot read /usr/bin/time -v output:\n{text}")
        wall = 0.0
        for part in wall_text.group(1).split(":"):  # h:mm:ss or m:ss.cc
            wall = wall * 60 + float(part)
        return code, wall, int(peak_text.group(1)) / 1024
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(out), *command],
                            capture_output=True, text=True, check=True)
    code, wall, peak_kib = json.loads(result.stdout)
    return code, wall, peak_kib / 1024


# About 1k, 10k, 100k, 250k and 550k objects (55 per application, 15 for the system).
GROWTH_APPS = (18, 182, 1818, 4545, 10000)


def write_child(folder: Path, apps: int, namespaces: int, yaml_too: bool,
                distinct: bool = False) -> dict[str, Any]:
    """write_dumps in a child: on Linux a process's peak RSS is inherited by the children
    it forks, so this one must stay small for theirs to mean anything."""
    return dict(json.loads(subprocess.run(
        [sys.executable, __file__, "--write", str(folder), "--apps", str(apps),
         "--namespaces", str(namespaces)] + ([] if yaml_too else ["--skip-yaml"])
        + (["--distinct-times"] if distinct else []),
        stdout=subprocess.PIPE, text=True, check=True).stdout))


def growth(check: str, sizes: list[int], namespaces: int, repeat: int) -> None:
    """check's cost against objects (--growth)."""
    rows: list[tuple[int, float, float, float]] = []  # objects, wall, cpu, peak MiB
    print("check --snapshot mesh.json -o json, JSON only; best of "
          f"{repeat} per size; wall time, user+system CPU and peak RSS by {_how()}")
    with LoadSampler() as sampler:
        for apps in sizes:
            with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
                folder = Path(tmp)
                written = write_child(folder, apps, namespaces, yaml_too=False)
                objects = written["objects"]
                best: tuple[float, float, float] | None = None
                for _ in range(repeat):
                    code, wall, peak, cpu = measure_cpu(
                        [check, "check", "--snapshot", str(folder / "mesh.json"), "-o", "json"],
                        folder / "stdout")
                    if code != 0:
                        sys.exit(f"check exited {code} at {apps} applications (expected 0)")
                    if best is None or wall < best[0]:
                        best = (wall, cpu, peak)
                assert best is not None
                rows.append((objects, *best))
                print(f"  {objects:>9,} objects ({written['sizes']['json'] / 2**20:,.0f} MiB): "
                      f"{best[0]:7.2f} s wall, {best[1]:7.2f} s CPU, {best[2]:7,.0f} MiB",
                      flush=True)
    print()
    print("| objects | applications | wall | CPU | peak RSS | CPU per added object "
          "| RSS per added object |")
    print("|---|---|---|---|---|---|---|")
    previous: tuple[int, float, float, float] | None = None
    for row, apps in zip(rows, sizes, strict=True):
        objects, wall, cpu, peak = row
        if previous is None:
            cpu_step = rss_step = "—"
        else:
            added = objects - previous[0]
            cpu_step = f"{(cpu - previous[2]) / added * 1e6:.1f} µs"
            rss_step = f"{(peak - previous[3]) * 1024 / added:.2f} KiB"
        print(f"| {objects:,} | {apps:,} | {wall:.2f} s | {cpu:.2f} s | {peak:,.0f} MiB "
              f"| {cpu_step} | {rss_step} |")
        previous = row
    print(f"load average (1 min) during the run: {sampler.summary()}")


def _how() -> str:
    return "/usr/bin/time -v" if os.access(GNU_TIME, os.X_OK) else "getrusage(RUSAGE_CHILDREN)"


def measure_cpu(command: list[str], out: Path) -> tuple[int, float, float, float]:
    """(exit code, wall seconds, peak RSS MiB, user+system CPU seconds) of `command`."""
    result = subprocess.run([sys.executable, "-c", _MEASURE_CPU, str(out), *command],
                            capture_output=True, text=True, check=True)
    code, wall, peak_kib, cpu = json.loads(result.stdout)
    return code, wall, peak_kib / 1024, cpu


# As _MEASURE, and the child's CPU time (user + system).
_MEASURE_CPU = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], "wb"))
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps([code, wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, nargs="+",
                        help="applications x 3 namespaces (default 1000 4545 10000; with "
                        f"--growth {' '.join(map(str, GROWTH_APPS))})")
    parser.add_argument("--namespaces", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int,
                        help="runs per command; the best counts (default 3; with --growth 1)")
    parser.add_argument("--skip-yaml", action="store_true", help="do not write or check YAML")
    parser.add_argument("--single-run-after", type=float, default=180.0, metavar="SECONDS",
                        help="a command whose first run takes longer is not repeated")
    parser.add_argument("--kstatus", default=os.environ.get("KSTATUS"),
                        help="the kstatus binary (default: built by hack/kstatus/build.sh)")
    parser.add_argument("--growth", action="store_true",
                        help="check's time and memory at 1k to 550k objects (JSON only)")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--distinct-times", action="store_true",
                        help="every object's conditions at a second of their own (nothing "
                        "under status alike: what sharing gets on a less uniform cluster)")
    args = parser.parse_args()
    if args.write:
        write_dumps(args.write, args.apps[0], args.namespaces, not args.skip_yaml,
                    args.distinct_times)
        return
    if args.growth:
        args.apps, args.repeat = args.apps or list(GROWTH_APPS), args.repeat or 1
    args.apps, args.repeat = args.apps or [1000, 4545, 10000], args.repeat or 3

    check = shutil.which("eventmesh-health", path=str(Path(sys.executable).parent)) \
        or shutil.which("eventmesh-health")
    if check is None:
        sys.exit("eventmesh-health is not installed (make bench installs it into .venv)")
    if args.growth:
        growth(check, args.apps, args.namespaces, args.repeat)
        return
    kstatus = args.kstatus or subprocess.run(
        ["bash", str(ROOT / "hack/kstatus/build.sh")], stdout=subprocess.PIPE, text=True,
        check=True).stdout.strip().splitlines()[-1]
    how = _how()
    print(f"whole processes, best of {args.repeat}; wall time and peak RSS by {how}; "
          f"{os.cpu_count()} CPUs")

    rows: list[str] = []
    with LoadSampler() as sampler:
        for apps in args.apps:
            with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
                folder = Path(tmp)
                start = time.perf_counter()
                written = write_child(folder, apps, args.namespaces, not args.skip_yaml,
                                      args.distinct_times)
                objects, sizes = written["objects"], written["sizes"]
                print(f"{apps:,} applications x {args.namespaces} namespaces: {objects:,} objects, "
                      + ", ".join(f"{fmt} {size / 2**20:,.0f} MiB" for fmt, size in sizes.items())
                      + f" (written in {time.perf_counter() - start:.0f} s)", flush=True)
                commands: dict[tuple[str, str], list[str]] = {
                    ("kstatus", "json"): [kstatus, str(folder / "mesh.json")],
                    ("check", "json"): [check, "check", "--snapshot", str(folder / "mesh.json"),
                                        "-o", "json"],
                }
                if not args.skip_yaml:
                    commands["check", "yaml"] = [check, "check", "--snapshot",
                                                 str(folder / "mesh.yaml"), "-o", "json"]
                runs = {key: Runs() for key in commands}
                out = folder / "stdout"
                for attempt in range(args.repeat):
                    for key, command in commands.items():  # interleaved: load hits all alike
                        if attempt and runs[key].walls[0] > args.single_run_after:
                            continue
                        code, wall, peak = measure(command, out)
                        if code != 0:
                            sys.exit(f"{' '.join(command)} exited {code} (the mesh is healthy: "
                                     f"expected 0); its output is lost with {folder}")
                        inside = ""
                        if key[0] == "kstatus":
                            lines = out.read_text().splitlines()
                            if lines[0] != f"{objects} objects":
                                sys.exit(f"kstatus: {lines[0]!r}, expected {objects} objects")
                            inside = f"  (inside: {lines[-1]})"
                        runs[key].walls.append(wall)
                        runs[key].peaks.append(peak)
                        print(f"  {key[0]:8} {key[1]:5} run {attempt + 1}: {wall:7.2f} s "
                              f"{peak:7,.0f} MiB{inside}", flush=True)
                kstatus_wall = runs["kstatus", "json"].best()[0]
                for (tool, fmt), result in runs.items():
                    wall, peak = result.best()
                    every = " ".join(f"{w:.2f}" for w in result.walls)
                    rows.append(f"| {apps:,} x {args.namespaces} | {objects:,} | {fmt} "
                                f"| {sizes[fmt] / 2**20:,.0f} MiB | {tool} | {wall:.2f} s "
                                f"| {wall / kstatus_wall:.1f}x | {peak:,.0f} MiB "
                                f"| {len(result.walls)}: {every} |")
    print()
    print("| applications x namespaces | objects | file | size | process | wall (best) "
          "| vs kstatus | peak RSS (best run) | runs: wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("kstatus reads JSON only (no YAML row): kstatus/status.Compute takes decoded objects.")
    print(f"load average (1 min) during the run: {sampler.summary()}")


if __name__ == "__main__":
    main()
