"""config.example.yml is valid, its commented lfs and hydrate blocks too, and it shows every key the parser knows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kafka_lfs_relay.config import RelayConfig, check_clients, parse_config, substitute_env

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yml"
ENV = {"EAST_PASSWORD": "x", "S3_ACCESS_KEY": "a", "S3_SECRET_KEY": "s", "S3_SESSION_TOKEN": "t", "S3_EXTERNAL_ID": "e"}


def variant(kind: str) -> str:
    """The example as written (``kafka``), or with the commented block of target ``kind`` uncommented."""
    text = EXAMPLE.read_text(encoding="utf-8")
    if kind == "kafka":
        return text
    marker = f"# --- target.type: {kind} "
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("# ---") or not line.startswith("#"):
            break
        if line.startswith("#  "):  # the block itself, indented under target:
            block.append(line[1:])
    text = text.replace("  type: kafka ", f"  type: {kind} ", 1)
    head, sep, tail = text.partition("\n# --- target.type:")
    return head.rstrip("\n") + "\n" + "\n".join(block) + "\n" + sep + tail


def parse(kind: str, asked: set[str] | None = None) -> RelayConfig:
    return parse_config(substitute_env(yaml.safe_load(variant(kind)), ENV), asked)


def test_example_config_parses() -> None:
    """The example validates once its ${VAR} references are set."""
    config = parse("kafka")
    assert config.mode == "failover" and [s.name for s in config.sources] == ["east", "west"]


def test_commented_lfs_block_parses_when_uncommented() -> None:
    """Uncommented under target with type lfs, the lfs block is a valid config."""
    config = parse("lfs")
    assert config.target.type == "lfs" and config.target.settings.lfs.s3.bucket == "kafka-lfs"


def test_commented_hydrate_block_parses_when_uncommented() -> None:
    """Uncommented under target with type hydrate, the hydrate block is a valid config."""
    config = parse("hydrate")
    assert config.target.type == "hydrate"
    assert {rule.bucket for rule in config.target.settings.hydrate.policy.rules} == {"kafka-lfs", "shared-lfs"}


def test_example_librdkafka_properties_and_s3_settings_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every client the example makes, for every target type, takes its properties (checked as at load time)."""
    # The hydrate block names a profile of the shared AWS config; boto3 looks it up when the client is made.
    (tmp_path / "aws-config").write_text("[profile relay-reader]\nregion = eu-west-1\n", encoding="utf-8")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    for kind in ("kafka", "lfs", "hydrate"):
        check_clients(parse(kind))


def test_example_config_shows_every_key() -> None:
    """Every key the parser looks for, for every target type, appears in the example: the docs cannot drift."""
    asked: set[str] = set()
    present: set[str] = set()

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else str(key)
                present.add(child)
                if key not in ("kafka", "config", "tags"):
                    walk(value, child)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    for kind in ("kafka", "lfs", "hydrate"):
        parse(kind, asked)
        walk(yaml.safe_load(variant(kind)), "")
        # Keys shown commented inside an uncommented block (valid only with another setting).
        present |= {f"target.{kind}.{key}" for key in re.findall(r"^    # (\w+):", variant(kind), re.MULTILINE)}
    # The group section is commented out too (it cannot be combined with mode: failover).
    group = re.findall(r"^#\s+(id|session_timeout):", EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE)
    present |= {f"group.{key}" for key in group} | {"group"}
    # So is workers (group mode as well).
    present |= set(re.findall(r"^# (workers):", EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE))

    def norm(paths: set[str]) -> set[str]:
        # target.hydrate.s3 and target.lfs.rehome.s3 are documented "as for s3": their keys are target.lfs.s3's.
        return {
            re.sub(r"\[\d+\]", "[]", p)
            .replace("target.hydrate.s3.", "target.lfs.s3.")
            .replace("target.lfs.rehome.s3.", "target.lfs.s3.")
            for p in paths
        }

    assert norm(asked) - norm(present) - {"target.options"} == set()
