"""One catalogue of our own reasons (`eventmesh_health.reasons`): the README's list is it,
and the source emits no reason as a string literal (so none outside the catalogue)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from eventmesh_health import reasons

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "eventmesh_health"
BLOCK = re.compile(r"<!-- reasons:begin[^>]*-->\n(.*?)<!-- reasons:end -->", re.S)


def test_readme_lists_exactly_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = BLOCK.search(readme)
    assert match, "README.md lost its reasons:begin/end block"
    assert match.group(1) == reasons.markdown(), (
        "README's reason table is stale: python -m eventmesh_health.reasons")
    listed = re.findall(r"^\| `([A-Za-z]+)` \|", match.group(1), re.M)
    assert listed == list(reasons.CATALOGUE)


def test_each_reason_has_a_name_and_a_one_line_meaning() -> None:
    for name, meaning in reasons.CATALOGUE.items():
        assert re.fullmatch(r"[A-Z][A-Za-z]+", name), name
        assert meaning and "\n" not in meaning and "|" not in meaning, name
    constants = {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}
    assert constants == set(reasons.CATALOGUE)
    assert set(reasons.CATALOGUE) >= reasons.DATA_PLANE


def _reason_arguments(tree: ast.AST) -> list[ast.expr]:
    """The expressions in reason position: `Verdict(health, REASON, ...)`,
    `_finding(health, object, REASON, ...)`, `reason=...` of any call, and the first item
    of a returned (reason, message) pair."""
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "Verdict" and len(node.args) > 1:
                found.append(node.args[1])
            if name == "_finding" and len(node.args) > 2:
                found.append(node.args[2])
            found.extend(k.value for k in node.keywords if k.arg == "reason")
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(
                node.value.elts) == 2 and isinstance(node.value.elts[1], ast.JoinedStr):
            found.append(node.value.elts[0])
    return found


def _literals(expr: ast.expr) -> list[ast.Constant]:
    """String literals that can be the value of `expr` (through `or`, `x if c else y` and
    `str(...)`; not the keys of a `.get("reason")`)."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr]
    if isinstance(expr, ast.BoolOp):
        return [c for value in expr.values for c in _literals(value)]
    if isinstance(expr, ast.IfExp):
        return [*_literals(expr.body), *_literals(expr.orelse)]
    if isinstance(expr, ast.Call) and getattr(expr.func, "id", None) == "str":
        return [c for arg in expr.args for c in _literals(arg)]
    return []


def test_the_source_emits_no_literal_reason() -> None:
    literal: list[str] = []
    checked = 0
    for path in sorted(SOURCE.rglob("*.py")):
        if path.name == "reasons.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for expr in _reason_arguments(tree):
            checked += 1
            for sub in _literals(expr):
                literal.append(f"{path.relative_to(ROOT)}:{sub.lineno}: {sub.value!r}")
    assert checked > 40  # the walk does find the rules' verdicts
    assert literal == [], "reasons must come from eventmesh_health.reasons:\n" + "\n".join(
        literal)


def test_catalogue_values_appear_nowhere_else_as_literals() -> None:
    """A reason spelt out anywhere in the source (outside the catalogue) is a second
    definition. Exempt: `Ready`, also a condition type, and the REST API's own error codes
    (serve/api.py: `NotFound` is an HTTP 404 there, not a finding)."""
    names = set(reasons.CATALOGUE) - {reasons.READY}
    spelt: list[str] = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path.name == "reasons.py" or path == SOURCE / "serve" / "api.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                spelt.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert spelt == []
