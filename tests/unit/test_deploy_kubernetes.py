"""deploy/kubernetes/ agrees with the code: command line, config path, ${VAR}s, probes, ports, memory."""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from kafka_lfs_relay import commands
from kafka_lfs_relay.cli import build_parser
from kafka_lfs_relay.config import RelayConfig, load_config, validate
from relay.metrics import RelayMetrics
from relay.relay import _DRAIN_TIMEOUT
from relay.settings import MIB

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_UNITS = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


OBJECTS = _objects()
WORKLOADS = [key for key in OBJECTS if key[0] in ("Deployment", "Job")]


def _pod(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = OBJECTS[(kind, name)]["spec"]["template"]["spec"]
    return spec


def _container(kind: str, name: str) -> dict[str, Any]:
    (container,) = _pod(kind, name)["containers"]
    return container  # type: ignore[no-any-return]


def _quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


def _config_text(kind: str, name: str) -> tuple[str, str]:
    """(the config file text the workload runs with, the path it is mounted at) from its ConfigMap."""
    container = _container(kind, name)
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in _pod(kind, name)["volumes"] if v["name"] == mount["name"]]
    data = OBJECTS[("ConfigMap", volume["configMap"]["name"])]["data"]
    key = str(args.config).removeprefix(mount["mountPath"] + "/")
    assert key in data, f"{kind} {name}: --config {args.config} is not a key of the ConfigMap mounted there"
    return data[key], str(args.config)


def _config(kind: str, name: str, tmp_path: Path) -> RelayConfig:
    """The workload's config, loaded as the relay would, with its container's environment names set."""
    text, _ = _config_text(kind, name)
    path = tmp_path / "relay.yml"
    path.write_text(text, encoding="utf-8")
    env = {var["name"]: "x" for var in _container(kind, name).get("env", [])}
    return load_config(path, env)


def test_the_manifests_hold_a_group_deployment_its_config_secret_and_pdb_and_a_backfill_job() -> None:
    """The set the README describes: Deployment, ConfigMap, Secret, PodDisruptionBudget; a Job with its ConfigMap;
    the lfs gc CronJob with its ConfigMap (tests/unit/test_deploy_lfs_gc.py)."""
    kinds = sorted(kind for kind, _ in OBJECTS)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "CronJob",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "Secret",
    ]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_the_command_line_is_the_relays(kind: str, name: str) -> None:
    """command + args parse with the real CLI into ``run`` (with --stop-at-end for the Job)."""
    container = _container(kind, name)
    assert container["command"] == ["kafka-lfs-relay"]
    # The console script of that name is the relay's entry point (pyproject.toml).
    scripts = re.search(r'^kafka-lfs-relay = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert scripts is not None and scripts.group(1) == "kafka_lfs_relay.cli:main"
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.func is commands.cmd_run
    assert args.stop_at_end is (kind == "Job")


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_the_config_is_valid_and_every_var_comes_from_the_secret(kind: str, name: str, tmp_path: Path) -> None:
    """The mounted config loads; its ${VAR}s are exactly the container's env, each a key of the Secret."""
    text, _ = _config_text(kind, name)
    config = _config(kind, name, tmp_path)
    env = _container(kind, name)["env"]
    assert {var["name"] for var in env} == set(_VAR.findall(text))
    for var in env:
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] in OBJECTS[("Secret", ref["name"])]["stringData"], var
    if kind == "Deployment":
        assert config.group is not None, "the Deployment runs in group mode"
    else:
        validate(dataclasses.replace(config, stop_at_end=True))  # what --stop-at-end does


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_probes_and_scrape_annotations_point_at_the_relays_listener(kind: str, name: str, tmp_path: Path) -> None:
    """Probe paths and ports, and the Prometheus annotations, are what the relay serves where its config says."""
    config = _config(kind, name, tmp_path)
    container = _container(kind, name)
    assert config.metrics_listen is not None
    host, port = config.metrics_listen
    assert host in ("0.0.0.0", "::"), "the kubelet and Prometheus reach the pod from outside it"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {key: container[key]["httpGet"] for key in ("livenessProbe", "readinessProbe") if key in container}
    assert probes["livenessProbe"]["path"] == "/healthz"
    if kind == "Deployment":
        assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert ports[probe["port"]] == port
    annotations = OBJECTS[(kind, name)]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port

    # The paths are served by the relay's own listener, JSON for the probes, Prometheus text for the scrape.
    served = RelayMetrics().serve("127.0.0.1", 0)
    for path in [probe["path"] for probe in probes.values()] + [annotations["prometheus.io/path"]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{served}{path}", timeout=5) as resp:
                status, body = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        assert status in (200, 503), path
        if path == annotations["prometheus.io/path"]:
            assert "kafka_lfs_relay_records_relayed" in body
        else:
            assert "status" in json.loads(body)


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_memory_is_derived_from_max_in_flight(kind: str, name: str, tmp_path: Path) -> None:
    """request = 128Mi + 1.5 x max_in_flight, limit = 128Mi + 2 x max_in_flight (see deployment.yaml)."""
    config = _config(kind, name, tmp_path)
    resources = _container(kind, name)["resources"]
    m = config.max_in_flight
    assert _quantity(resources["requests"]["memory"]) == 128 * MIB + m * 3 // 2
    assert _quantity(resources["limits"]["memory"]) == 128 * MIB + 2 * m


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_a_stop_has_time_to_drain(kind: str, name: str) -> None:
    """SIGTERM drains for up to the relay's drain timeout, then leaves the group: the grace period covers both."""
    assert _pod(kind, name)["terminationGracePeriodSeconds"] > _DRAIN_TIMEOUT


def test_the_deployment_runs_several_replicas_that_the_pdb_selects(tmp_path: Path) -> None:
    """N replicas, rolled one at a time behind readiness; the PDB selects exactly them and lets one go at a time."""
    ((_, deployment),) = [key for key in OBJECTS if key[0] == "Deployment"]
    spec = OBJECTS[("Deployment", deployment)]["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    ((_, pdb),) = [key for key in OBJECTS if key[0] == "PodDisruptionBudget"]
    budget = OBJECTS[("PodDisruptionBudget", pdb)]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1


def test_the_backfill_has_its_own_name_so_its_own_transactional_id(tmp_path: Path) -> None:
    """Only one relay may write with a transactional id: the Job's relay name differs from the Deployment's."""
    ((_, deployment),) = [key for key in OBJECTS if key[0] == "Deployment"]
    ((_, job),) = [key for key in OBJECTS if key[0] == "Job"]
    live = _config("Deployment", deployment, tmp_path)
    backfill = _config("Job", job, tmp_path)
    assert live.name != backfill.name
    assert _pod("Job", job)["restartPolicy"] == "OnFailure"
