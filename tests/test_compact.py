"""The watch cache's sharing (serve/compact.py): one copy of each short string across objects
parsed apart, long strings and non-strings untouched; what containers are shared, what never
are, that the table forgets what no object holds, and that nothing reading the cache changes a
shared part (the analysis run on objects whose shared parts refuse any change)."""

from __future__ import annotations

import copy
import gc
import json
import sys
import tracemalloc
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import orjson
import yaml

from eventmesh_health.analysis import analyse
from eventmesh_health.analysis.incremental import IncrementalAnalysis
from eventmesh_health.serve import compact
from eventmesh_health.serve.compact import SHORT, Compactor
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.rulecases import BASE, TAKEN_AT, cases, load_case

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import synthetic

NOW = datetime.fromisoformat(TAKEN_AT)
TRIGGER = {
    "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
    "metadata": {"name": "t", "namespace": "ns", "labels": {"app": "x"}, "generation": 2},
    "status": {"conditions": [{"type": "Ready", "status": "True", "message": "m" * 200}],
               "observedGeneration": 2, "ok": True, "none": None, "ratio": 0.5},
}


def parsed() -> dict[str, Any]:
    return json.loads(json.dumps(TRIGGER))  # new string objects, as each LIST page has


def test_the_value_is_unchanged() -> None:
    assert Compactor().compact(parsed()) == TRIGGER


def test_short_strings_of_separately_parsed_objects_are_one_object() -> None:
    # two caches: nothing shared between them but the interned strings
    a, b = Compactor().compact(parsed()), Compactor().compact(parsed())
    first, second = a["status"]["conditions"][0], b["status"]["conditions"][0]
    assert first is not second
    assert first["status"] is second["status"]
    assert a["apiVersion"] is b["apiVersion"]
    assert next(iter(a["metadata"])) is next(iter(b["metadata"]))  # keys too


def test_long_strings_are_left_alone() -> None:
    a, b = Compactor().compact(parsed()), Compactor().compact(parsed())
    message = a["status"]["conditions"][0]["message"]
    assert len(message) > SHORT
    assert message == b["status"]["conditions"][0]["message"]
    assert message is not b["status"]["conditions"][0]["message"]


def test_containers_are_new_so_the_parsed_object_can_be_freed() -> None:
    source = parsed()
    kept = Compactor().compact(source)
    assert kept["status"] is not source["status"]
    assert kept["status"]["conditions"] is not source["status"]["conditions"]


def test_anything_but_dicts_lists_and_strings_passes_through() -> None:
    for value in (None, True, 3, 0.5, ("a", "b")):
        assert Compactor().compact(value) is value


def _pod(name: str, ready: Any = "True", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                     "labels": {"app": "a"}},
        "status": {"conditions": [{"type": "Ready", "status": ready}], **(extra or {})},
    }


def test_equal_parts_are_kept_once_and_the_objects_stay_equal() -> None:
    compactor = Compactor()
    originals = [_pod("p1"), _pod("p2")]
    one, two = (compactor.compact(copy.deepcopy(o)) for o in originals)
    assert orjson.dumps([one, two]) == orjson.dumps(originals)  # same content, same order
    assert one["status"] is two["status"]
    assert one["metadata"]["labels"] is two["metadata"]["labels"]
    # the object and its metadata hold its name and uid: never shared
    assert one is not two and one["metadata"] is not two["metadata"]


def test_only_strictly_equal_parts_are_shared() -> None:
    compactor = Compactor()
    base = compactor.compact(_pod("p1", extra={"n": 1}))
    assert compactor.compact(_pod("p2", extra={"n": True}))["status"] is not base["status"]
    assert compactor.compact(_pod("p3", extra={"n": 1.0}))["status"] is not base["status"]
    reordered = _pod("p4", extra={"n": 1})
    reordered["status"] = {"n": 1, "conditions": reordered["status"]["conditions"]}
    assert compactor.compact(reordered)["status"] is not base["status"]
    floats = [compactor.compact(_pod(f"f{i}", extra={"x": v}))
              for i, v in enumerate((0.0, -0.0))]
    assert floats[0]["status"] is not floats[1]["status"]
    assert str(floats[1]["status"]["x"]) == "-0.0"
    assert compactor.compact(_pod("p5", extra={"n": 1}))["status"] is base["status"]


def test_the_table_forgets_what_no_object_holds() -> None:
    compactor = Compactor(sweep_from=1 << 30)  # swept only when asked here
    kept = [compactor.compact(_pod(f"p{i}", ready=f"r{i}")) for i in range(50)]
    held = len(compactor)
    assert held >= 50
    del kept[10:]
    gc.collect()
    compactor.sweep()
    assert len(compactor) < held
    # what is still held stays shared
    again = compactor.compact(_pod("q", ready="r3"))
    assert again["status"] is kept[3]["status"]
    kept.clear()
    del again
    compactor.sweep()
    assert len(compactor) == 0


def test_the_table_is_swept_as_it_grows() -> None:
    compactor = Compactor(sweep_from=64)
    for i in range(2_000):  # each object dropped at once
        compactor.compact(_pod(f"p{i}", ready=f"r{i}"))
    assert len(compactor) < 200


def _traced(build: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        built = build()
        return built, tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()


def test_maps_keep_their_keys_once() -> None:
    """The maps that cannot be shared (an object and its metadata, with a name and uid of
    their own) are plain dicts to a reader, in a third less memory than ordinary ones."""
    pods = [_pod(f"p{i}") for i in range(2_000)]
    for i, pod in enumerate(pods):
        pod["metadata"].update(resourceVersion=str(i), generation=1,
                               creationTimestamp="2026-01-01T00:00:00Z")
    compactor = Compactor()
    compactor.compact(copy.deepcopy(pods[0]))  # (its layouts and shared parts made first)
    copies = copy.deepcopy(pods)
    kept, size = _traced(lambda: [compactor.compact(pod) for pod in copies])
    # the same structure as ordinary dicts (the shared parts held apart by `compactor` too)
    plain, plain_size = _traced(lambda: [
        {**p, "metadata": {**p["metadata"]}} for p in kept])
    assert kept == pods == plain
    assert orjson.dumps(kept) == orjson.dumps(pods)
    assert all(type(p) is dict and type(p["metadata"]) is dict for p in kept)
    assert [list(p["metadata"]) for p in kept] == [list(p["metadata"]) for p in pods]
    assert size < 0.7 * plain_size, (size, plain_size)


def test_key_layouts_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(compact, "LAYOUTS", 4)
    compactor = Compactor()
    maps = [{f"k{i}": i} for i in range(10)] + [{1: "not a string key"}]
    kept = [compactor.compact(m) for m in maps]
    assert kept == maps
    assert len(compactor._layouts) == 4


class _FrozenDict(dict[Any, Any]):
    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("a shared part of a cached object was changed")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse


class _FrozenList(list[Any]):
    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("a shared part of a cached object was changed")

    __setitem__ = __delitem__ = append = extend = insert = pop = remove = _refuse
    clear = sort = reverse = __iadd__ = __imul__ = _refuse


# (messages name a wrong type as the reader sees it)
_FrozenDict.__name__, _FrozenList.__name__ = "dict", "list"


def _frozen(cached: Any, depth: int = 0, name: str = "") -> Any:
    """`cached` with every part the cache may share made to refuse changes."""
    shared = depth > 1 or (depth == 1 and name != "metadata")
    if isinstance(cached, dict):
        items = {k: _frozen(v, depth + 1, k) for k, v in cached.items()}
        return _FrozenDict(items) if shared else items
    if isinstance(cached, list):
        items_ = [_frozen(v, depth + 1, name) for v in cached]
        return _FrozenList(items_) if shared else items_
    return cached


def _cached(objects: list[Any]) -> list[Any]:
    compactor = Compactor()
    return [_frozen(compactor.compact(copy.deepcopy(o))) if isinstance(o, dict) else o
            for o in objects]


def test_the_analysis_changes_no_shared_part() -> None:
    """Every rule case (broken and malformed objects included) and the synthetic mesh: the
    same report from cached objects whose shared parts refuse changes."""
    sets = [load_case(path).objects for path in cases()]
    sets.append(synthetic.mesh(3, 2))
    for objects in sets:
        before = orjson.dumps(objects)
        cached = _cached(objects)
        assert analyse(Snapshot(cached, NOW)).to_json_dict() == \
            analyse(Snapshot(objects, NOW)).to_json_dict()
        assert orjson.dumps(objects) == before


def test_the_incremental_analysis_changes_no_shared_part() -> None:
    """Each rule case's objects applied over the base mesh and taken back again."""
    base: list[dict[str, Any]] = list(yaml.safe_load_all(BASE.read_text()))
    by_identity = {_identity(o): o for o in base}
    incremental = IncrementalAnalysis(Snapshot(_cached(base), NOW), KYMA_1)
    for path in cases():
        edits = [o for o in load_case(path).objects
                 if isinstance(o, dict) and isinstance(o.get("metadata"), dict)
                 and "name" in o["metadata"]]
        incremental.apply(_cached(edits), [], NOW)
        incremental.tick(NOW)
        incremental.report()
        incremental.apply(
            _cached([by_identity[_identity(o)] for o in edits if _identity(o) in by_identity]),
            _cached([o for o in edits if _identity(o) not in by_identity]), NOW)
    assert incremental.report().to_json_dict() == analyse(Snapshot(base, NOW)).to_json_dict()


def _identity(obj: dict[str, Any]) -> tuple[str, str, str | None, str]:
    meta = obj["metadata"]
    return (str(obj.get("apiVersion")), str(obj.get("kind")), meta.get("namespace"),
            str(meta.get("name")))
