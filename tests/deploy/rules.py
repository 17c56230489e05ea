"""deploy/kubernetes/base/prometheusrule.yaml, generated from deploy/prometheus-alerts.yml (the one source).

``python -m tests.deploy.rules`` (``make deploy-rules``) writes it; a test fails when the
committed file is not what this makes from the alert rules.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus-alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus-alerts.yml by `make deploy-rules`: edit that file, not this one.
# The alert rules as a prometheus-operator PrometheusRule (tests/deploy checks they are the same).
"""


def prometheus_rule_text() -> str:
    """The PrometheusRule manifest holding the groups of deploy/prometheus-alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "kafka-lfs-relay"},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=1000, allow_unicode=True)


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(prometheus_rule_text(), encoding="utf-8")
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
