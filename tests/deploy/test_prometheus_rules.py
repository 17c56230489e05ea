"""deploy/prometheus-alerts.yml and the dashboard's queries, checked by promtool (built from the Go module proxy)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus-alerts.test.yml"


def _promtool(tools: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools / "promtool"), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_alert_rules_are_valid_and_their_promtool_tests_pass(go_tools: Path) -> None:
    """`promtool check rules` accepts the rules and `promtool test rules` passes every case."""
    checked = _promtool(go_tools, "check", "rules", "--lint=all", "--lint-fatal", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool(go_tools, "test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    """Each alert of the rules file is expected to fire in some test case and to stay silent in another."""
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts - fires == set(), "alerts no test expects to fire"
    assert alerts - silent == set(), "alerts no test expects to stay silent"


def test_every_dashboard_query_parses(go_tools: Path, tmp_path: Path) -> None:
    """Each panel's PromQL, as a recording rule, passes `promtool check rules` (the dashboard's lint)."""
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    records = [
        {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": target["expr"]}
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}), encoding="utf-8")
    checked = _promtool(go_tools, "check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(records)} rules found" in checked.stdout
