"""deploy/prometheus: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`, run from that folder), read only metrics `serve` exposes, and each
alert has a runbook section and unit tests with series that fire it and series that do not.

promtool is built by `make tools` (hack/tools/build.sh, tests/tools.py); a missing one fails
these tests with what to do, it never skips them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.served_metrics import promql_metric_names, served_metric_names
from tests.tools import tool

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "deploy" / "prometheus"
RULES = FOLDER / "rules.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def unit_tests() -> list[Path]:
    return sorted(FOLDER.glob("*test*.yaml"))


@pytest.fixture(scope="module")
def promtool() -> Path:
    return tool("promtool")


def promtool_run(promtool: Path, *args: str) -> str:
    done = subprocess.run([str(promtool), *args], cwd=FOLDER, capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_check_rules(promtool: Path) -> None:
    out = promtool_run(promtool, "check", "rules", RULES.name)
    assert f"SUCCESS: {len(alerts())} rules found" in out


def test_promtool_test_rules(promtool: Path) -> None:
    assert unit_tests(), "no deploy/prometheus/*test*.yaml"
    out = promtool_run(promtool, "test", "rules", *(p.name for p in unit_tests()))
    assert "SUCCESS" in out


def test_every_metric_in_the_rules_is_served() -> None:
    served = served_metric_names()
    for rule in alerts():
        used = promql_metric_names(rule["expr"])
        used |= set().union(*(promql_metric_names(v) for v in rule["annotations"].values()))
        assert used, rule["alert"]
        assert used <= served, (rule["alert"], used - served)


def test_every_alert_has_a_runbook_section_severity_and_summary() -> None:
    headings = {line[3:].strip() for line in RUNBOOK.read_text().splitlines()
                if line.startswith("## ")}
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"], name
        assert name in headings, f"docs/runbook.md has no section ## {name}"
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{name.lower()}"
    assert headings <= set(names), headings - set(names)


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert appears in the unit tests with an expected alert (its series fire it) and
    with none (series that must not, or not yet)."""
    firing: set[str] = set()
    silent: set[str] = set()
    for path in unit_tests():
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names <= firing, f"never fired in a test: {sorted(names - firing)}"
    assert names <= silent, f"never tested silent: {sorted(names - silent)}"


def test_the_readme_table_lists_every_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Alerts and the dashboard\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert listed == {rule["alert"] for rule in alerts()}
