"""What `serve` keeps per watched object, measured offline: the watch cache and the incremental
analysis built from the synthetic mesh, without an API server (issue 14 part 3).

    .venv/bin/python benchmarks/bench_serve_memory.py [--apps 1000] [--namespaces 3] [--top 0]

Each object of `synthetic.mesh` goes in as a LIST would bring it (JSON bytes, decoded one at a
time) and is kept as `serve`'s cache keeps it (`informer.cached_form`: slimmed, strings
interned) in the informer's map of its kind; then `IncrementalAnalysis` is built on those
objects as `serve` builds it at its first sync. Two passes over the same
input, each from the same starting point:

- RSS: the process' resident set (`/proc/self/statm`) after the cache, and after the
  analysis, less what it was before (the encoded input is held throughout, so it cancels out);
  the cyclic GC is off while building, as in `serve`.
- tracemalloc: the bytes Python allocated and still holds for each half (slower; exact).
  `--top N` prints the N source lines holding the most of each half.

It prints bytes per object for each half: the goal (serve < 1 GiB at 550,000 objects, with
≈86 MiB for an empty `serve`) needs about 1.7 KiB per object in all.

The synthetic objects repeat much (every condition set at the same second), which the
cache's sharing (`serve/compact.py`) turns into savings a real cluster gives only in part:
`--distinct-times` gives every object's conditions a time of their own (nothing under
`status` repeats then), the case where sharing buys least.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))

import synthetic
from eventmesh_health.analysis.incremental import IncrementalAnalysis
from eventmesh_health.analysis.namemap import NameMap
from eventmesh_health.serve.compact import Compactor
from eventmesh_health.serve.informer import _key, _namespace, cached_form
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology import Kind, Profile, kind_key
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from machine import LoadSampler

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def watched_kind(profile: Profile) -> dict[str, Kind]:
    return {kind.key: kind for kind in profile.kinds}


def encoded_input(apps: int, namespaces: int, profile: Profile,
                  distinct_times: bool = False) -> list[tuple[Kind, bytes]]:
    """The objects a LIST of each watched kind would bring, encoded (kinds `serve` does not
    watch are left out, as it never lists them)."""
    kinds = watched_kind(profile)
    out = []
    for i, obj in enumerate(synthetic.mesh(apps, namespaces)):
        kind = kinds.get(kind_key(obj["apiVersion"], obj["kind"]))
        if kind is not None:
            if distinct_times:
                _distinct_times(obj, i)
            out.append((kind, orjson.dumps(obj)))
    return out


def _distinct_times(obj: dict[str, Any], i: int) -> None:
    """The object's conditions set at a second of its own."""
    when = (datetime.fromisoformat(synthetic.READY) + timedelta(seconds=i)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    status = obj.get("status")
    for condition in (status.get("conditions") or []) if isinstance(status, dict) else []:
        condition["lastTransitionTime"] = when


Cache = dict[str, NameMap]  # kind key -> its objects, as the informer keeps them


def build_cache(encoded: list[tuple[Kind, bytes]]) -> Cache:
    compactor = Compactor()  # as the cache's own
    cache: Cache = {}
    for kind, raw in encoded:
        obj = cached_form(orjson.loads(raw), kind, compactor)
        objects = cache.get(kind.key)
        if objects is None:
            objects = cache[kind.key] = NameMap(_namespace)
        objects.put(*_key(obj), obj)
    return cache


def build_analysis(cache: Cache, profile: Profile) -> IncrementalAnalysis:
    taken_at = datetime.fromisoformat(synthetic.TAKEN_AT)
    collected = frozenset(kind.key for kind in profile.kinds)
    objects = [obj for each in cache.values() for obj in each.values()]  # as `snapshot()`
    return IncrementalAnalysis(Snapshot(objects, taken_at, collected=collected), profile)


def settle() -> None:
    gc.collect()


def measure_rss(encoded: list[tuple[Kind, bytes]], profile: Profile) -> tuple[int, int, bool]:
    settle()
    gc.disable()
    try:
        before = rss()
        cache = build_cache(encoded)
        after_cache = rss()
        analysis = build_analysis(cache, profile)
        after_analysis = rss()
    finally:
        gc.enable()
    healthy = analysis.report().healthy
    del analysis, cache
    settle()
    return after_cache - before, after_analysis - after_cache, healthy


def measure_traced(encoded: list[tuple[Kind, bytes]], profile: Profile,
                   top: int) -> tuple[int, int]:
    settle()
    tracemalloc.start()
    base = tracemalloc.take_snapshot() if top else None
    start = tracemalloc.get_traced_memory()[0]
    cache = build_cache(encoded)
    settle()
    after_cache = tracemalloc.get_traced_memory()[0]
    mid = tracemalloc.take_snapshot() if top else None
    analysis = build_analysis(cache, profile)
    settle()
    after_analysis = tracemalloc.get_traced_memory()[0]
    if top:
        assert base is not None and mid is not None
        end = tracemalloc.take_snapshot()
        for title, old, new in (("cache", base, mid), ("analysis", mid, end)):
            print(f"  {title}: the {top} lines holding most")
            for stat in new.compare_to(old, "lineno")[:top]:
                frame = stat.traceback[0]
                print(f"    {stat.size_diff / 2**20:8.1f} MiB {stat.count_diff:>9,} blocks  "
                      f"{Path(frame.filename).name}:{frame.lineno}")
    tracemalloc.stop()
    del analysis, cache
    return after_cache - start, after_analysis - after_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, nargs="+", default=[1000])
    parser.add_argument("--namespaces", type=int, default=3)
    parser.add_argument("--top", type=int, default=0, help="lines holding most, per half")
    parser.add_argument("--distinct-times", action="store_true",
                        help="every object's conditions set at a second of its own")
    args = parser.parse_args()
    profile = KYMA_1
    print(f"{'apps':>6} {'ns':>3} {'objects':>8} | {'RSS: cache':>10} {'analysis':>9} "
          f"{'total':>9} {'KiB/obj':>8} | {'traced: cache':>13} {'analysis':>9} {'KiB/obj':>8}")
    with LoadSampler() as sampler:
        for apps in args.apps:
            encoded = encoded_input(apps, args.namespaces, profile, args.distinct_times)
            n = len(encoded)
            rss_cache, rss_analysis, healthy = measure_rss(encoded, profile)
            assert healthy, "the synthetic mesh must be healthy"
            traced_cache, traced_analysis = measure_traced(encoded, profile, args.top)

            def per(size: int, n: int = n) -> str:
                return f"{size / n / 1024:.2f}"

            print(f"{apps:>6} {args.namespaces:>3} {n:>8} | "
                  f"{rss_cache / 2**20:>6.0f} MiB {rss_analysis / 2**20:>5.0f} MiB "
                  f"{(rss_cache + rss_analysis) / 2**20:>5.0f} MiB "
                  f"{per(rss_cache + rss_analysis):>8} | "
                  f"{traced_cache / 2**20:>9.0f} MiB {traced_analysis / 2**20:>5.0f} MiB "
                  f"{per(traced_cache + traced_analysis):>8}")
            print(f"{'':>20}   KiB/object: RSS cache {per(rss_cache)}, analysis "
                  f"{per(rss_analysis)}; traced cache {per(traced_cache)}, analysis "
                  f"{per(traced_analysis)}")
    print(f"load average (1 min) during the run: {sampler.summary()}")


if __name__ == "__main__":
    main()
