"""The relay runs with exactly the Kafka ACLs of docs/operations.md, on a broker that denies everything else."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from kafka_lfs_relay.sandbox import KafkaCluster
from relay.logs import librdkafka_logger
from tests.conftest import ClusterFactory
from tests.integration.harness import (
    RelayProcess,
    assert_same,
    numbered,
    produce,
    read_all,
    records_by_partition,
    relay_config,
    write_config,
)

pytestmark = pytest.mark.integration

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
# The rows of the table that apply to a single-mode relay into a kafka target that creates its topics.
SINGLE_MODE = ("always", "single and failover mode", "`target.create_topics`")


Row = tuple[str, str, str, str, list[str]]
"""(cluster, resource, name, pattern, operations) of a row of the ACL table."""


def documented_acls(needed: tuple[str, ...]) -> list[Row]:
    """(cluster, resource, name, pattern, operations) of each table row whose "needed" starts with one of ``needed``."""
    text = OPERATIONS.read_text(encoding="utf-8")
    table = text[text.index("<!-- acls:") : text.index("<!-- /acls -->")]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("cluster", "---"):
            continue
        cluster, resource, name, pattern, operations, when = cells
        if when.startswith(needed):
            rows.append((cluster, resource, name.strip("`"), pattern, [op.strip() for op in operations.split(",")]))
    return rows


def _upper_snake(name: str) -> str:
    """A name of the table (``DescribeConfigs``, ``TransactionalId``) as confluent-kafka's enums spell it."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _bindings(rows: list[Row], names: dict[str, str], user: str) -> list[AclBinding]:
    out = []
    for _cluster, resource, name, pattern, operations in rows:
        concrete = re.sub(r"<[^>]+>", lambda m: names[m.group(0)], name)
        for op in operations:
            operation = getattr(AclOperation, _upper_snake(op))
            out.append(
                AclBinding(
                    getattr(ResourceType, _upper_snake(resource)),
                    concrete,
                    ResourcePatternType.LITERAL if pattern == "literal" else ResourcePatternType.PREFIXED,
                    f"User:{user}",
                    "*",
                    operation,
                    AclPermissionType.ALLOW,
                )
            )
    return out


def _secured(
    cluster_factory: ClusterFactory, tmp_path: Path, name: str, rows: list[Row], extra: Sequence[AclBinding] = ()
) -> tuple[KafkaCluster, str, str, Path]:
    """A broker that denies all but ``rows`` (and ``extra``) to the relay's user, a source topic of 2
    partitions and a relay config named ``name``: the cluster, source, target and config path."""
    cluster: KafkaCluster = cluster_factory("secured", acls=True)
    admin = AdminClient({**cluster.admin_config(), "logger": librdkafka_logger()})
    source, target = f"acl-src-{uuid.uuid4().hex[:6]}", f"acl-dst-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(source, 2, 1)])[source].result(60)
    names = {
        "<source topic>": source,
        "<target topic>": target,
        "<positions topic>": f"{name}-positions",
        "<transactional_id>": name,
    }
    assert auth_user(cluster) == "relay"
    for future in admin.create_acls([*_bindings(rows, names, "relay"), *extra]).values():
        future.result(60)
    config = relay_config([cluster], cluster, [{"source": source, "target": target}], name=name)
    return cluster, source, target, write_config(tmp_path / "relay.yml", config)


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafka_lfs_relay", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_single_mode_relay_runs_with_exactly_the_documented_acls(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """check passes and run --stop-at-end relays every record once with only the table's rows granted."""
    rows = documented_acls(SINGLE_MODE)
    assert {row[1] for row in rows} == {"Topic", "TransactionalId"}
    cluster, source, target, path = _secured(cluster_factory, tmp_path, "acl-relay", rows)
    records = numbered(300, 2)
    admin_cluster = _AsAdmin(cluster)
    produce([admin_cluster], source, records)
    check = _check(path)
    assert check.returncode == 0 and "PROBLEM" not in check.stdout, check.stdout + check.stderr
    relay = RelayProcess(path, "--stop-at-end").start()
    assert relay.wait(180) == 0, relay.log_tail()
    assert_same(records_by_partition(records, 2), read_all(admin_cluster, target, 2))


def test_check_names_a_missing_describe_configs_and_lists_the_acls_it_may_describe(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """Without DescribeConfigs on the source topic check exits 1 naming it; Describe on the Cluster lists the ACLs."""
    rows = [row for row in documented_acls(SINGLE_MODE) if not (row[0] == "source" and row[4] == ["DescribeConfigs"])]
    assert len(rows) == len(documented_acls(SINGLE_MODE)) - 1, "the table has one row for the source's configs"
    describe_acls = AclBinding(
        ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, "User:relay", "*",
        AclOperation.DESCRIBE, AclPermissionType.ALLOW,
    )  # fmt: skip
    _, source, target, path = _secured(cluster_factory, tmp_path, "acl-check", rows, [describe_acls])
    check = _check(path)
    assert check.returncode == 1, check.stdout + check.stderr
    problems = [line for line in check.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1, check.stdout
    assert f"topic {source!r}: DescribeConfigs is denied" in problems[0], check.stdout
    listed = [line for line in check.stdout.splitlines() if "User:relay holds" in line]
    assert listed and f"ALLOW DESCRIBE_CONFIGS on TOPIC '{target}'" in listed[0], check.stdout


def auth_user(cluster: KafkaCluster) -> str:
    """The user the relay's config connects as."""
    return cluster.client_config()["sasl.username"]


class _AsAdmin:
    """The cluster as seen by its super user: for producing the input and reading the output back."""

    def __init__(self, cluster: KafkaCluster) -> None:
        self._cluster = cluster

    def client_config(self) -> dict[str, str]:
        return self._cluster.admin_config()

    def client_conf(self) -> dict[str, object]:
        from relay.logs import librdkafka_logger

        return {**self._cluster.admin_config(), "logger": librdkafka_logger()}
