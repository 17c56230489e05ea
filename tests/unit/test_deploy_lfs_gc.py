"""deploy/kubernetes/lfs-gc/ agrees with the code: the lfs gc command line, its config, its Secret, its schedule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kafka_lfs_relay.cli import build_parser
from kafka_lfs_relay.config import load_config
from kafka_lfs_relay.lfsgc import cmd_gc
from relay.units import parse_duration
from targets.lfs import LfsTargetConfig

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "lfs-gc" / "cronjob.yaml"
SECRET = ROOT / "deploy" / "kubernetes" / "base" / "secret.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def docs() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8"))}


def container() -> dict[str, Any]:
    (only,) = docs()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def test_the_cronjob_runs_lfs_gc_with_delete_a_grace_and_a_pushgateway() -> None:
    """command + args parse with the real CLI into lfs gc, deleting, with a grace and metrics for Prometheus."""
    c = container()
    args = build_parser().parse_args([*c["command"][1:], *c["args"]])
    assert c["command"] == ["kafka-lfs-relay"] and args.func is cmd_gc
    assert args.delete and args.pushgateway and parse_duration(args.grace, "--grace") >= 3600


def test_its_config_is_an_lfs_relay_whose_transaction_timeout_the_grace_exceeds(tmp_path: Path) -> None:
    """The mounted config loads as an lfs target; --grace exceeds its transaction timeout; ${VAR}s from the Secret."""
    c = container()
    args = build_parser().parse_args([*c["command"][1:], *c["args"]])
    (mount,) = c["volumeMounts"]
    text = docs()["ConfigMap"]["data"][str(args.config).removeprefix(mount["mountPath"] + "/")]
    path = tmp_path / "relay.yml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path, {var["name"]: "x" for var in c["env"]})
    assert isinstance(config.target.settings, LfsTargetConfig)
    assert parse_duration(args.grace, "--grace") > config.target.settings.kafka.transaction_timeout
    secret = yaml.safe_load(SECRET.read_text(encoding="utf-8"))
    assert {var["name"] for var in c["env"]} == set(_VAR.findall(text))
    assert all(var["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"] for var in c["env"])


def test_runs_never_overlap_and_a_failed_pod_is_not_restarted_in_place() -> None:
    """concurrencyPolicy Forbid; the next run, not a restart, retries a failure."""
    spec = docs()["CronJob"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"
