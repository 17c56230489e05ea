"""A ``${VAR}`` value takes the type of the key it is substituted into (a number, a boolean, a size...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kafka_lfs_relay.config import RelayConfig, load_config
from relay.errors import ConfigError, SecretMasker
from relay.settings import MIB

BASE: dict[str, Any] = {
    "name": "typed",
    "sources": [{"name": "east", "bootstrap_servers": "localhost:9092"}],
    "topics": [{"source": "orders"}],
    "target": {"bootstrap_servers": "localhost:9093"},
}


def _write(tmp_path: Path, extra: str) -> Path:
    """BASE with the sections of ``extra`` (YAML) merged in, as a config file."""
    tree = {**BASE, "target": dict(BASE["target"])}
    for key, value in yaml.safe_load(extra).items():
        if key == "target":
            tree["target"].update(value)
        else:
            tree[key] = value
    path = tmp_path / "relay.yml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def _load(tmp_path: Path, extra: str, env: dict[str, str], masker: SecretMasker | None = None) -> RelayConfig:
    return load_config(_write(tmp_path, extra), env, masker=masker)


def _lfs(value: str) -> str:
    return f"target: {{type: lfs, lfs: {{s3: {{bucket: b}}, upload_concurrency: '{value}'}}}}\n"


# (YAML added to BASE, the environment, what the loaded config holds there)
CASES: list[tuple[str, dict[str, str], Any]] = [
    ("target: {batch: {max_records: '${MAX}'}}\n", {"MAX": "20000"}, ("batch", 20000)),
    ("target: {batch: {max_records: '${MAX:-20000}'}}\n", {}, ("batch", 20000)),
    ("stop_at_end: ${STOP:-false}\n", {}, ("stop_at_end", False)),
    ("stop_at_end: ${STOP}\n", {"STOP": "TRUE"}, ("stop_at_end", True)),
    ("fast_path: ${FAST}\n", {"FAST": " false "}, ("fast_path", False)),
    ("max_in_flight: ${MIF:-64MiB}\n", {}, ("max_in_flight", 64 * MIB)),
    ("max_in_flight: ${MIF}\n", {"MIF": "1048576"}, ("max_in_flight", MIB)),
    ("source_pool: {request_timeout: '${RT}', lag_checks: '${LC}'}\n", {"RT": "1500ms", "LC": "4"}, ("pool", (1.5, 4))),
    ("topics: [{source: orders, partition: '${P}'}]\n", {"P": "3"}, ("partition", 3)),
    ("topics: [{source: orders, partition: '${P}'}]\n", {"P": "key"}, ("partition", "key")),
    ("workers: ${W}\n", {"W": "2"}, ("workers", 2)),
    (_lfs("${UC:-8}"), {}, ("upload_concurrency", 8)),
    ("target: {batch: {max_records: '${A}${B}'}}\n", {"A": "12", "B": "34"}, ("batch", 1234)),
]


def _observed(config: RelayConfig, what: str) -> Any:
    kafka = config.target.kafka
    assert kafka is not None
    return {
        "batch": lambda: kafka.batch.max_records,
        "stop_at_end": lambda: config.stop_at_end,
        "fast_path": lambda: config.fast_path,
        "max_in_flight": lambda: config.max_in_flight,
        "pool": lambda: (config.source_pool.request_timeout, config.source_pool.lag_checks),
        "partition": lambda: config.topics[0].partition,
        "workers": lambda: config.workers,
        "upload_concurrency": lambda: config.target.settings.lfs.upload_concurrency,
    }[what]()


@pytest.mark.parametrize(("extra", "env", "expected"), CASES)
def test_a_substituted_value_takes_its_keys_type(
    tmp_path: Path, extra: str, env: dict[str, str], expected: Any
) -> None:
    """The substituted text is read as the number, boolean, size or duration its key takes."""
    config = _load(tmp_path, extra, env)
    what, value = expected
    observed = _observed(config, what)
    assert observed == value and (isinstance(value, str) or type(observed) is type(value))


# (YAML, environment, key path the error names, words of the reason)
REFUSED: list[tuple[str, dict[str, str], str, str]] = [
    ("target: {batch: {max_records: '${MAX}'}}\n", {"MAX": "20k"}, "target.batch.max_records", "whole number"),
    ("target: {batch: {max_records: '${MAX}'}}\n", {"MAX": "2.5"}, "target.batch.max_records", "whole number"),
    ("target: {batch: {max_records: '${MAX}'}}\n", {"MAX": ""}, "target.batch.max_records", "whole number"),
    ("stop_at_end: ${STOP}\n", {"STOP": "yes please"}, "stop_at_end", "true or false"),
    ("stop_at_end: ${STOP}\n", {"STOP": "1"}, "stop_at_end", "true or false"),
    ("max_in_flight: ${MIF}\n", {"MIF": "64 MiB"}, "max_in_flight", "size"),
    ("topics: [{source: orders, partition: '${P}'}]\n", {"P": "-1"}, "topics[0].partition", "partition number"),
]


@pytest.mark.parametrize(("extra", "env", "path", "reason"), REFUSED)
def test_a_substituted_value_of_the_wrong_type_names_the_key(
    tmp_path: Path, extra: str, env: dict[str, str], path: str, reason: str
) -> None:
    """Text that is not of the key's type is refused with the key's path and what it expected."""
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, extra, env)
    assert err.value.path == path and reason in err.value.message


def test_a_quoted_number_written_in_the_file_is_still_a_string() -> None:
    """Only substitution types text: `max_records: "20000"` in the file is refused, as quoting it asks."""
    from kafka_lfs_relay.config import parse_config

    tree = {**BASE, "target": {**BASE["target"], "batch": {"max_records": "20000"}}}
    with pytest.raises(ConfigError, match="whole number"):
        parse_config(tree)


def test_librdkafka_properties_and_secrets_keep_their_exact_text(tmp_path: Path) -> None:
    """A `kafka:` property stays the text it was (leading zeros kept), and a secret is still masked."""
    extra = "target: {kafka: {sasl.password: '${PW}', linger.ms: '${LINGER}'}}\n"
    masker = SecretMasker()
    config = _load(tmp_path, extra, {"PW": "0071", "LINGER": "05"}, masker)
    kafka = config.target.kafka
    assert kafka is not None
    assert kafka.cluster.kafka["sasl.password"] == "0071" and kafka.cluster.kafka["linger.ms"] == "05"
    assert masker("password is 0071") == "password is ***"


def test_a_filter_reads_substituted_numbers_and_booleans() -> None:
    """Built-in filters read ${VAR} text as their option's type too: a fraction, a flag, epoch milliseconds."""
    from filters._options import flag, fraction, timestamp_ms
    from kafka_lfs_relay.config.env import substitute_env

    env = {"RATE": "0.25", "NEG": "true", "AFTER": "1714521600000"}
    options = substitute_env({"fraction": "${RATE}", "negate": "${NEG}", "after": "${AFTER}"}, env)
    assert isinstance(options, dict)
    assert fraction(options, "fraction") == 0.25
    assert flag(options, "negate", False) is True
    assert timestamp_ms(options, "after") == 1714521600000
