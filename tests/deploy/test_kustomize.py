"""deploy/kubernetes: every overlay renders, validates against the API types and agrees with the code.

Rendering and validation need ``kubectl`` and the Go-built ``kubevalidate`` (deploy/tools); the
rest reads the rendered objects: command line, config (loaded with the relay's own parser),
``${VAR}``s, probes, ports, memory, the mode's replicas and rollout strategy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
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
from tests.deploy.rules import PROMETHEUS_RULE, prometheus_rule_text

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS_DIR = ROOT / "deploy" / "kubernetes" / "overlays"
OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").exists())
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_UNITS = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
Objects = dict[tuple[str, str], dict[str, Any]]


@functools.cache
def _rendered(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH; it renders the overlays (kubectl kustomize)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS_DIR / overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _objects(overlay: str) -> Objects:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(_rendered(overlay)) if doc}


def _workload(objects: Objects) -> tuple[str, dict[str, Any]]:
    ((kind, _), obj), *rest = [(key, obj) for key, obj in objects.items() if key[0] in ("Deployment", "Job")]
    assert not rest, "one workload per overlay"
    return kind, obj


def _container(objects: Objects) -> dict[str, Any]:
    (container,) = _workload(objects)[1]["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _config(objects: Objects, tmp_path: Path) -> tuple[RelayConfig, str]:
    """The workload's config, loaded by the relay's parser with its container's environment names set."""
    _, workload = _workload(objects)
    container = _container(objects)
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    data = objects[("ConfigMap", volume["configMap"]["name"])]["data"]
    key = str(args.config).removeprefix(mount["mountPath"] + "/")
    assert key in data, f"--config {args.config} is not a key of the ConfigMap mounted there"
    path = tmp_path / "relay.yml"
    path.write_text(data[key], encoding="utf-8")
    env = {var["name"]: "x" for var in container.get("env", [])}
    return load_config(path, env), data[key]


def _quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


def test_the_overlays_are_the_ones_the_readme_lists() -> None:
    """Group mode, failover mode, LFS offload, hydration and the backfill Job."""
    assert OVERLAYS == ["backfill", "failover", "group", "hydrate", "lfs"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_decodes_strictly_against_the_kubernetes_types(overlay: str, go_tools: Path) -> None:
    """kubevalidate (client-go's scheme and the prometheus-operator types, strict) accepts every rendered object."""
    proc = subprocess.run(
        [str(go_tools / "kubevalidate")], input=_rendered(overlay), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == len(_objects(overlay))


def test_the_validator_refuses_an_unknown_field(go_tools: Path) -> None:
    """A misspelled field (the strict decoding's point) fails validation with a line naming it."""
    bad = _rendered("group").replace("terminationGracePeriodSeconds", "terminationGracePeriodSecond")
    proc = subprocess.run([str(go_tools / "kubevalidate")], input=bad, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "error Deployment/kafka-lfs-relay" in proc.stdout and "terminationGracePeriodSecond" in proc.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_command_line_is_the_relays(overlay: str) -> None:
    """command + args parse with the real CLI into ``run`` (with --stop-at-end for the Job)."""
    container = _container(_objects(overlay))
    assert container["command"] == ["kafka-lfs-relay"]
    scripts = re.search(r'^kafka-lfs-relay = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert scripts is not None and scripts.group(1) == "kafka_lfs_relay.cli:main"
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.func is commands.cmd_run
    assert args.stop_at_end is (overlay == "backfill")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_loads_and_every_var_comes_from_the_secret(overlay: str, tmp_path: Path) -> None:
    """The mounted config loads with the relay's parser; its ${VAR}s are the container's env, each a Secret key."""
    objects = _objects(overlay)
    config, text = _config(objects, tmp_path)
    env = _container(objects)["env"]
    settings = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert {var["name"] for var in env} == set(_VAR.findall(settings))
    for var in env:
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] in objects[("Secret", ref["name"])]["stringData"], var
    expected = {"group": "kafka", "failover": "kafka", "lfs": "lfs", "hydrate": "hydrate", "backfill": "kafka"}
    assert config.target.type == expected[overlay]
    if overlay == "backfill":
        validate(dataclasses.replace(config, stop_at_end=True))  # what --stop-at-end does
    elif overlay == "failover":
        assert config.mode == "failover" and len(config.sources) >= 2 and config.group is None
    else:
        assert config.group is not None, "the Deployment runs in group mode"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_and_rollout_fit_the_mode(overlay: str) -> None:
    """Group modes roll one pod at a time behind readiness; failover runs one pod, replaced with Recreate."""
    objects = _objects(overlay)
    kind, workload = _workload(objects)
    if kind == "Job":
        assert workload["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
        return
    spec = workload["spec"]
    if overlay == "failover":
        # Two pods of one relay share its transactional id and would fence each other.
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    else:
        assert spec["replicas"] >= 2
        assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    budget = objects[("PodDisruptionBudget", "kafka-lfs-relay")]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items() and budget["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_the_pod_monitor_point_at_the_relays_listener(overlay: str, tmp_path: Path) -> None:
    """Probe paths and port, and the PodMonitor's port and job label: what the relay serves, the alerts select."""
    objects = _objects(overlay)
    config, _ = _config(objects, tmp_path)
    kind, workload = _workload(objects)
    container = _container(objects)
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
    monitor = objects[("PodMonitor", "kafka-lfs-relay")]["spec"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == port
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels[monitor["jobLabel"]] == "kafka-lfs-relay", "the alerts select job=kafka-lfs-relay"
    assert "prometheus.io/scrape" not in workload["spec"]["template"]["metadata"].get("annotations", {})

    served = RelayMetrics().serve("127.0.0.1", 0)
    for path in [probe["path"] for probe in probes.values()] + [endpoint["path"]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{served}{path}", timeout=5) as resp:
                status, body = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        assert status in (200, 503), path
        if path == endpoint["path"]:
            assert "kafka_lfs_relay_records_relayed" in body
        else:
            assert "status" in json.loads(body)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_is_derived_from_max_in_flight_and_a_stop_has_time_to_drain(overlay: str, tmp_path: Path) -> None:
    """request = 128Mi + 1.5 x max_in_flight, limit = 128Mi + 2 x max_in_flight; grace > the drain timeout."""
    objects = _objects(overlay)
    config, _ = _config(objects, tmp_path)
    resources = _container(objects)["resources"]
    m = config.max_in_flight
    assert _quantity(resources["requests"]["memory"]) == 128 * MIB + m * 3 // 2
    assert _quantity(resources["limits"]["memory"]) == 128 * MIB + 2 * m
    assert _workload(objects)[1]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > _DRAIN_TIMEOUT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_config_edit_changes_the_config_map_name(overlay: str) -> None:
    """The workload mounts the generated ConfigMap, whose name carries the config's hash: an edit rolls the pods."""
    objects = _objects(overlay)
    _, workload = _workload(objects)
    (volume,) = workload["spec"]["template"]["spec"]["volumes"]
    name = volume["configMap"]["name"]
    assert ("ConfigMap", name) in objects and re.fullmatch(r"kafka-lfs-relay(-backfill)?-[a-z0-9]{10}", name)


def test_relays_apart_have_their_own_names_so_their_own_transactional_ids(tmp_path: Path) -> None:
    """Every overlay's relay has its own name: two of them on one target never fence each other."""
    names = {overlay: _config(_objects(overlay), tmp_path)[0].name for overlay in OVERLAYS}
    assert names["backfill"] not in {names[o] for o in OVERLAYS if o != "backfill"}
    assert len({names["group"], names["lfs"], names["hydrate"]}) == 3


def test_the_prometheus_rule_is_generated_from_the_alert_rules() -> None:
    """base/prometheusrule.yaml holds exactly the groups of deploy/prometheus-alerts.yml (`make deploy-rules`)."""
    assert PROMETHEUS_RULE.read_text(encoding="utf-8") == prometheus_rule_text()
