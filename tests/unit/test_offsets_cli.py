"""``kafka-lfs-relay offsets`` on a config it cannot use: one line, its exit code, no secret, no traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kafka_lfs_relay.cli import main

SECRET = "hunter2-offsets-7f3a"


def config(tmp_path: Path, **changes: Any) -> Path:
    tree: dict[str, Any] = {
        "sources": [
            {
                "name": "east",
                "bootstrap_servers": "127.0.0.1:1",
                "kafka": {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                          "sasl.username": "relay", "sasl.password": SECRET},
            }
        ],
        "topics": [{"source": "orders"}],
        "target": {"bootstrap_servers": "127.0.0.1:1"},
        **changes,
    }  # fmt: skip
    path = tmp_path / "relay.yml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["translate", "sync"])
@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"topics": [{"source": "orders", "partition": "key"}]}, "'topics': no topic has partition: preserve"),
        ({"max_in_flight": SECRET}, "'max_in_flight': expected a size like 16MiB, got '***'"),
    ],
)
def test_a_config_offsets_cannot_use_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, changes: dict[str, Any], fragment: str
) -> None:
    """A config without a mirrored topic, or with a bad value, exits 2 with one line naming the key and no secret."""
    code = main(["offsets", command, "--config", str(config(tmp_path, **changes)), "--group", "app"])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("kafka-lfs-relay: ")]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], (code, out, err)
    assert SECRET not in out + err and "Traceback" not in out + err
