"""The Grafana dashboard and the alert rules in deploy/ name only metrics the relay really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from relay.metrics import RelayMetrics
from targets.hydrate.target import HydrateMetrics
from targets.lfs.upload import LfsMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_NAME = re.compile(r"\bkafka_lfs_relay_[a-z0-9_]+")
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _exported() -> set[str]:
    metrics = RelayMetrics()
    LfsMetrics(metrics.registry)
    HydrateMetrics(metrics.registry)
    metrics.watch_filters(dict)
    return {family.name for family in metrics.registry.collect()}


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _named(text: str) -> set[str]:
    return {_base(name) for name in _NAME.findall(text)}


def test_alert_rules_name_only_exported_metrics() -> None:
    """Every kafka_lfs_relay_* metric in the alert rules exists in the relay's registry."""
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    exprs = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    named = _named(exprs)
    assert named and named - _exported() == set()


def test_dashboard_names_only_exported_metrics() -> None:
    """Every kafka_lfs_relay_* metric in the Grafana dashboard exists in the relay's registry."""
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    named = _named(exprs)
    assert named and named - _exported() == set()


def test_alerts_cover_the_operational_failures() -> None:
    """There is an alert for relay down, growing lag, a source switch, lost records, a source catching up,
    S3 errors and checksum failures."""
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    wanted = {
        "KafkaLfsRelayDown",
        "KafkaLfsRelayLagGrowing",
        "KafkaLfsRelaySourceSwitched",
        "KafkaLfsRelayRecordsLost",
        "KafkaLfsRelaySourceCatchingUp",
        "KafkaLfsRelayS3Errors",
        "KafkaLfsRelayChecksumFailures",
        "KafkaLfsRelayNotRelaying",
        "KafkaLfsRelayNotReady",
        "KafkaLfsRelayReplicationLagHigh",
    }
    assert wanted <= names


def test_every_alert_links_its_runbook_in_docs_operations() -> None:
    """Each alert's runbook_url is a section of docs/operations.md named after the alert."""
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    operations = (DEPLOY.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    headings = {
        line.removeprefix("### ").strip().lower() for line in operations.splitlines() if line.startswith("### ")
    }
    for rule in (rule for group in rules["groups"] for rule in group["rules"]):
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in headings, f"docs/operations.md has no section for {rule['alert']}"
