"""Broken configs that all hold secrets, through the real command line: one clear line, never a secret.

Each case runs ``run`` and ``check`` as processes, in both log formats, with rich installed (with
it, structlog's console renderer would show each frame's local variables). For each: the exit
code, exactly one line naming the key (or the cluster), no traceback (but the log of a run ended
by a bug), no local variable, and none of the case's secrets anywhere in stdout or stderr (the
relay logs to stderr).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster, KafkaDistribution
from tests.conftest import _factory, create_topic
from tests.integration.harness import cluster_entry, relay_config, write_config
from tests.integration.secrets_support import LOCAL_MARKER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _secret(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


# One value per secret kind, all different, so each is looked for on its own.
SASL_PASSWORD = _secret("sasl-password")
OAUTH_SECRET = _secret("oauth-client-secret")
SSL_KEY_PASSWORD = _secret("ssl-key-password")
S3_SECRET = _secret("s3-secret-access-key")
ENV_PASSWORD = _secret("env-password")
ENV_PROTOCOL = _secret("SASL_SSL-env-protocol")
TYPO_VALUE = _secret("misspelled-key-value")
WRONG_PASSWORD = _secret("wrong-password")
PLUGIN_PASSWORD = _secret("plugin-password")

ENV = {"KLR_TEST_KAFKA_PASSWORD": ENV_PASSWORD, "KLR_TEST_PROTOCOL_SECRET": ENV_PROTOCOL}


@dataclass(frozen=True)
class Clusters:
    plain: KafkaCluster
    secure: Callable[[], KafkaCluster]
    topic: str
    """A topic on ``plain``."""


@dataclass(frozen=True)
class Expect:
    code: int
    fragments: tuple[str, ...]
    stream: str = "stderr"
    """Where the one line is: ``stderr`` (``kafka-lfs-relay: ...``) or ``stdout`` (check's ``PROBLEM ...``)."""


@dataclass(frozen=True)
class Case:
    name: str
    config: Callable[[Clusters], dict[str, Any]]
    secrets: tuple[str, ...]
    run: Expect
    check: Expect | None = None
    """None: the same as ``run``."""
    check_module: str = "kafka_lfs_relay"
    traceback_in_run_log: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _plain(clusters: Clusters, **extra: Any) -> dict[str, Any]:
    return relay_config([clusters.plain], clusters.plain, [{"source": clusters.topic}], **extra)


def _source_kafka(clusters: Clusters, props: dict[str, str]) -> dict[str, Any]:
    config = _plain(clusters)
    config["sources"][0]["kafka"] = props
    return config


def _lfs(clusters: Clusters, s3: dict[str, Any]) -> dict[str, Any]:
    config = _plain(clusters)
    config["target"]["type"] = "lfs"
    config["target"]["lfs"] = {"s3": {"bucket": "payloads", "region": "us-east-1", **s3}}
    return config


def _wrong_password(clusters: Clusters) -> dict[str, Any]:
    secure = clusters.secure()
    config = relay_config([secure], clusters.plain, [{"source": clusters.topic}])
    config["sources"][0]["kafka"]["sasl.password"] = WRONG_PASSWORD
    return config


def _leaky_target(clusters: Clusters) -> dict[str, Any]:
    config = _plain(clusters)
    config["target"] = {
        "type": "tests.integration.secrets_support:LeakyTarget",
        "options": {"url": "https://vault.example", "password": PLUGIN_PASSWORD},
    }
    return config


def _broken_check(clusters: Clusters) -> dict[str, Any]:
    # A password the plain cluster ignores; run relays the (empty) topic and stops.
    config = _source_kafka(clusters, {"sasl.password": SASL_PASSWORD})
    config["stop_at_end"] = True
    return config


CASES = [
    Case(
        "bad enum value",
        lambda c: _source_kafka(c, {"security.protocol": "SASL_SSLX", "sasl.password": SASL_PASSWORD}),
        (SASL_PASSWORD,),
        run=Expect(2, ("config key 'sources[0].kafka.security.protocol'", 'Invalid value "SASL_SSLX"')),
    ),
    Case(
        "unknown property",
        lambda c: {
            **_plain(c),
            "target": {
                **cluster_entry(c.plain, "target"),
                "kafka": {"sasl.pasword": TYPO_VALUE, "sasl.oauthbearer.client.secret": OAUTH_SECRET},
            },
        },
        (OAUTH_SECRET, TYPO_VALUE),
        run=Expect(2, ("config key 'target.kafka.sasl.pasword'", 'No such configuration property: "sasl.pasword"')),
    ),
    Case(
        "bad number",
        lambda c: _source_kafka(c, {"linger.ms": "soon", "ssl.key.password": SSL_KEY_PASSWORD}),
        (SSL_KEY_PASSWORD,),
        run=Expect(2, ("config key 'sources[0].kafka.linger.ms'", "got 'soon'")),
    ),
    Case(
        "missing ${VAR}",
        lambda c: _source_kafka(
            c, {"sasl.password": "${KLR_TEST_UNSET_PASSWORD}", "ssl.key.password": SSL_KEY_PASSWORD}
        ),
        (SSL_KEY_PASSWORD,),
        run=Expect(
            2,
            (
                "config key 'sources[0].kafka.sasl.password'",
                "environment variable KLR_TEST_UNSET_PASSWORD is not set",
            ),
        ),
    ),
    Case(
        "${VAR} secret echoed by librdkafka",
        lambda c: _source_kafka(
            c,
            {"security.protocol": "${KLR_TEST_PROTOCOL_SECRET}", "sasl.password": "${KLR_TEST_KAFKA_PASSWORD}"},
        ),
        (ENV_PROTOCOL, ENV_PASSWORD),
        run=Expect(2, ("config key 'sources[0].kafka.security.protocol'", 'Invalid value "***"')),
        env=ENV,
    ),
    Case(
        "bad S3 endpoint next to its secret",
        lambda c: _lfs(
            c, {"endpoint_url": "not a url", "access_key_id": "AKIAEXAMPLE", "secret_access_key": S3_SECRET}
        ),
        (S3_SECRET,),
        run=Expect(2, ("config key 'target.lfs.s3.endpoint_url'", "Invalid endpoint: not a url")),
    ),
    Case(
        "misspelled S3 secret key",
        lambda c: _lfs(c, {"endpoint_url": "http://127.0.0.1:1", "secret_acess_key": S3_SECRET}),
        (S3_SECRET,),
        run=Expect(2, ("config key 'target.lfs.s3.secret_acess_key'", "did you mean 'secret_access_key'?")),
    ),
    Case(
        "wrong password on the SASL_SSL cluster",
        _wrong_password,
        (WRONG_PASSWORD,),
        run=Expect(1, ("no source cluster is usable (secure: ", "authentication")),
        check=Expect(1, ("PROBLEM source secure", "not reachable", "authentication"), stream="stdout"),
    ),
    Case(
        "bug in a custom target",
        _leaky_target,
        (PLUGIN_PASSWORD,),
        run=Expect(70, ("internal error: RuntimeError: could not log in", "with password ***")),
        check=Expect(0, ()),
        traceback_in_run_log=True,
    ),
    Case(
        "bug in check",
        _broken_check,
        (SASL_PASSWORD,),
        run=Expect(0, ()),
        check=Expect(70, ("internal error: RuntimeError: probe failed with password ***",)),
        check_module="tests.integration.secrets_support",
    ),
]


@pytest.fixture(scope="module")
def secure_cluster(
    tmp_path_factory: pytest.TempPathFactory, kafka_dist: KafkaDistribution
) -> Iterator[Callable[[], KafkaCluster]]:
    """A SASL_SSL sandbox cluster for the whole module, started when a case first asks for it."""
    make, started = _factory(tmp_path_factory.mktemp("secure-kafka"), kafka_dist)

    def get() -> KafkaCluster:
        return started[0] if started else make("secure", auth=True)

    yield get
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="module")
def topic(kafka_cluster: KafkaCluster) -> str:
    return create_topic(kafka_cluster, f"secrets-{uuid.uuid4().hex[:10]}", 1)


def _cli(module: str, command: str, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KLR_TEST_")}
    return subprocess.run(
        [sys.executable, "-m", module, command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**environ, **env, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def _assert_clean(case: Case, command: str, result: subprocess.CompletedProcess[str], expect: Expect) -> None:
    everything = result.stdout + result.stderr
    where = f"{case.name}: {command} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == expect.code, where
    for secret in case.secrets:
        assert secret not in everything, f"secret {secret!r} printed; {where}"
    assert LOCAL_MARKER not in everything, f"a local variable was printed; {where}"
    assert "╭" not in everything, f"rendered by rich; {where}"
    if not (command == "run" and case.traceback_in_run_log):
        assert "Traceback" not in everything, where
    errors = [line for line in result.stderr.splitlines() if line.startswith("kafka-lfs-relay: ")]
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    if expect.code == 0:
        assert not errors and not problems, where
        if command == "check":
            assert result.stdout.strip().endswith("config OK"), where
        return
    lines = errors if expect.stream == "stderr" else problems
    assert len(lines) == 1, f"expected one line; {where}"
    for fragment in expect.fragments:
        assert fragment in lines[0], f"{fragment!r} not in the line; {where}"


def test_rich_is_installed() -> None:
    """The cases prove something only with rich importable by the relay's processes (it is in the test extra)."""
    assert importlib.util.find_spec("rich") is not None


@pytest.mark.parametrize("fmt", ["console", "json"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_broken_config_gives_one_line_and_no_secret(
    case: Case,
    fmt: str,
    tmp_path: Path,
    kafka_cluster: KafkaCluster,
    topic: str,
    secure_cluster: Callable[[], KafkaCluster],
) -> None:
    """run and check on a broken config: the exit code, one line naming the key, no secret, no traceback."""
    config = case.config(Clusters(kafka_cluster, secure_cluster, topic))
    config["log"] = {"level": "info", "format": fmt}
    path = write_config(tmp_path / "relay.yml", config)
    _assert_clean(case, "run", _cli("kafka_lfs_relay", "run", path, case.env), case.run)
    _assert_clean(case, "check", _cli(case.check_module, "check", path, case.env), case.check or case.run)
