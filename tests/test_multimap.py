"""OneOrMany against a dict of sets, the structure it replaces in the incremental analysis."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from eventmesh_health.analysis.multimap import OneOrMany

_OPS = st.lists(st.tuples(st.booleans(), st.sampled_from("abc"), st.sampled_from("xyz")),
                max_size=60)


@given(_OPS)
def test_holds_what_a_dict_of_sets_holds(ops: list[tuple[bool, str, str]]) -> None:
    multimap: OneOrMany[str, str] = OneOrMany()
    model: dict[str, set[str]] = defaultdict(set)
    for add, key, value in ops:
        if add:
            multimap.add(key, value)
            model[key].add(value)
        else:
            multimap.discard(key, value)
            model[key].discard(value)
            if not model[key]:
                del model[key]
        for k in "abc":
            assert multimap.get(k) == model.get(k, set())
            assert (k in multimap) == (k in model)
        assert len(multimap) == len(model)
        assert set(multimap) == set(model)


def test_one_value_is_held_alone_and_a_set_only_for_several() -> None:
    multimap: OneOrMany[str, tuple[str, str]] = OneOrMany()
    multimap.add("k", ("a", "1"))
    multimap.add("k", ("a", "1"))
    assert multimap._held["k"] == ("a", "1")
    multimap.add("k", ("b", "2"))
    assert multimap._held["k"] == {("a", "1"), ("b", "2")}
    multimap.discard("k", ("a", "1"))
    assert multimap._held["k"] == ("b", "2")  # back to the value alone
    multimap.discard("k", ("c", "3"))  # not held: nothing changes
    assert multimap._held["k"] == ("b", "2")
    multimap.discard("k", ("b", "2"))
    assert "k" not in multimap
    multimap.discard("k", ("b", "2"))  # nothing under the key: nothing to do


def test_get_gives_a_set_the_caller_may_change() -> None:
    multimap: OneOrMany[str, str] = OneOrMany()
    multimap.add("k", "a")
    multimap.add("k", "b")
    got = multimap.get("k")
    got.add("c")
    alone = OneOrMany[str, str]()
    alone.add("k", "a")
    alone.get("k").add("z")
    assert multimap.get("k") == {"a", "b"} and alone.get("k") == {"a"}
