"""The watch cache's map of one kind (analysis/namemap.py): the same answers as a dict keyed by
(namespace, name) whatever the sequence of puts and pops, names in one namespace or several."""

from __future__ import annotations

import tracemalloc
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmesh_health.analysis.namemap import NameMap


def _obj(namespace: str, name: str, version: int) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": version}}


def _namespace(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["namespace"])


_OPS = st.lists(st.tuples(st.booleans(), st.sampled_from(["", "a", "b", "c"]),
                          st.sampled_from(["x", "y", "default"])), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_answers_as_a_dict_by_namespace_and_name(ops: list[tuple[bool, str, str]]) -> None:
    names = NameMap(_namespace)
    plain: dict[tuple[str, str], dict[str, Any]] = {}
    for version, (put, namespace, name) in enumerate(ops):
        if put:
            obj = _obj(namespace, name, version)
            assert names.put(namespace, name, obj) is plain.get((namespace, name))
            plain[(namespace, name)] = obj
        else:
            assert names.pop(namespace, name) is plain.pop((namespace, name), None)
        assert len(names) == len(plain)
        for ns in ("", "a", "b", "c"):
            for each in ("x", "y", "default", "z"):
                assert names.get(ns, each) is plain.get((ns, each))
        assert sorted((ns, n, id(o)) for ns, n, o in names.items()) == \
            sorted((ns, n, id(o)) for (ns, n), o in plain.items())
        assert sorted(map(id, names.values())) == sorted(map(id, plain.values()))


def test_a_name_in_one_namespace_costs_no_key_of_its_own() -> None:
    objects = [_obj(f"ns{i % 7}", f"name-{i}", i) for i in range(5_000)]
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        names = NameMap(_namespace)
        for obj in objects:
            names.put(_namespace(obj), obj["metadata"]["name"], obj)
        held = tracemalloc.get_traced_memory()[0] - start
        tuples = {(_namespace(o), o["metadata"]["name"]): o for o in objects}
        by_tuple = tracemalloc.get_traced_memory()[0] - start - held
    finally:
        tracemalloc.stop()
    assert len(names) == len(tuples) == 5_000
    assert held < 0.6 * by_tuple, (held, by_tuple)
