"""Unit tests of kafka_lfs_relay.config.clients: every librdkafka property and the S3 settings, checked at load time."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kafka_lfs_relay.config import RelayConfig, check_clients, clients, parse_config
from relay.errors import ConfigError
from relay.settings import ClusterConfig


def _tree(
    source: dict[str, str] | None = None, target_kafka: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "sources": [{"name": "east", "bootstrap_servers": "127.0.0.1:1", "kafka": source or {}}],
        "topics": [{"source": "orders"}],
        "target": {"bootstrap_servers": "127.0.0.1:1", "kafka": target_kafka or {}},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return tree


def _refused(tree: dict[str, Any]) -> ConfigError:
    config = parse_config(tree)
    with pytest.raises(ConfigError) as info:
        check_clients(config)
    return info.value


@pytest.mark.parametrize(
    ("source", "target", "path", "fragment"),
    [
        (
            {"security.protocol": "SASL_SSLX"},
            None,
            "sources[0].kafka.security.protocol",
            'the consumer of source east: Invalid value "SASL_SSLX" for configuration property "security.protocol"',
        ),
        (
            None,
            {"acks": "most"},
            "target.kafka.acks",
            "the target's admin client: Invalid value for configuration property \"request.required.acks\", got 'most'",
        ),
        (
            {"linger.ms": "soon"},
            None,
            "sources[0].kafka.linger.ms",
            "Invalid value for configuration property \"queue.buffering.max.ms\", got 'soon'",
        ),
        ({"queued.min.messages": "0"}, None, "sources[0].kafka.queued.min.messages", "outside allowed range 1.."),
        ({"enable.auto.commit.typo": "x"}, None, "sources[0].kafka.enable.auto.commit.typo", "No such configuration"),
        ({"socket.keepalive.enable": "maybe"}, None, "sources[0].kafka.socket.keepalive.enable", "Expected bool"),
        ({"fetch.max.bytes": "1000"}, None, "sources[0].kafka.fetch.max.bytes", "must be >= `message.max.bytes`"),
        (
            {"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"},
            None,
            "sources[0].kafka.ssl.ca.location",
            "ssl.ca.location failed",
        ),
        ({"error_cb": "report"}, None, "sources[0].kafka.error_cb", "expected error_cb property as a callable"),
        (
            None,
            {"max.in.flight.requests.per.connection": "10"},
            "target.kafka.max.in.flight.requests.per.connection",
            "the target's transactional producer: `max.in.flight` must be set <= 5 when `enable.idempotence` is true",
        ),
        (
            None,
            {"message.timeout.ms": "900000"},
            "target.kafka.message.timeout.ms",
            "`message.timeout.ms` must be set <= `transaction.timeout.ms`",
        ),
    ],
)
def test_a_refused_property_is_named_with_librdkafkas_reason(
    source: dict[str, str] | None, target: dict[str, str] | None, path: str, fragment: str
) -> None:
    """Bad enum, unknown name, bad number (by its alias), range, boolean, combinations, files: key path and reason."""
    error = _refused(_tree(source, target))
    assert error.path == path
    assert fragment in str(error)
    assert "\n" not in str(error)


def test_the_value_of_an_unknown_property_is_never_shown() -> None:
    """A misspelled secret key is unknown to librdkafka and to the secret rules: its value stays out of the message."""
    error = _refused(_tree({"sasl.pasword": "typo-secret-value"}))
    assert error.path == "sources[0].kafka.sasl.pasword"
    assert "typo-secret-value" not in str(error)


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ({"group": {"id": "g", "session_timeout": "2h"}}, "sources[0]", '"session.timeout.ms" value 7200000'),
        ({"target": {"transaction_timeout": "500ms"}}, "target", '"transaction.timeout.ms" value 500'),
    ],
)
def test_a_property_the_relay_derives_out_of_range_names_the_cluster(
    extra: dict[str, Any], path: str, fragment: str
) -> None:
    """A setting the relay turns into a librdkafka property, out of librdkafka's range: the cluster and the reason."""
    error = _refused(_tree(**extra))
    assert error.path == path
    assert fragment in str(error)


def test_properties_of_another_client_kind_and_sasl_ssl_pass() -> None:
    """A producer property on a source and a consumer one on the target are librdkafka warnings, not errors."""
    sasl = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "relay",
        "sasl.password": "hunter2-pw",
    }
    check_clients(parse_config(_tree({**sasl, "linger.ms": "10"}, {**sasl, "fetch.wait.max.ms": "100"})))


def test_a_custom_target_has_no_target_clients_to_check() -> None:
    """Only the sources are checked when the target is a class of the user's."""
    tree = _tree()
    tree["target"] = {"type": "mypackage.mod:Target", "options": {"acks": "most"}}
    check_clients(parse_config(tree))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on loopback, to see whether anything connects."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        yield server


def _connected(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


def test_checking_connects_to_no_broker(listener: socket.socket) -> None:
    """The clients are created without bootstrap servers: a broker listening there sees no connection."""
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    tree = _tree({"security.protocol": "PLAINTEXT"})
    tree["sources"][0]["bootstrap_servers"] = address
    tree["target"]["bootstrap_servers"] = address
    check_clients(parse_config(tree))
    assert not _connected(listener)


def test_checking_fetches_no_oidc_token(listener: socket.socket) -> None:
    """With sasl.oauthbearer.method oidc librdkafka would fetch a token on creation: the check hands it a dummy one."""
    oidc = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "relay",
        "sasl.oauthbearer.client.secret": "oidc-secret-value",
        "sasl.oauthbearer.token.endpoint.url": f"http://127.0.0.1:{listener.getsockname()[1]}/token",
    }
    started = time.monotonic()
    check_clients(parse_config(_tree(oidc, oidc)))
    assert not _connected(listener)
    assert time.monotonic() - started < 8, "the clients waiting for a token are checked in parallel"


def test_oidc_settings_are_still_checked() -> None:
    """The dummy token does not hide what librdkafka requires of oidc."""
    oidc = {"sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.client.id": "r"}
    error = _refused(_tree(oidc))
    assert error.path.startswith("sources[0].kafka.")
    assert "sasl.oauthbearer.token.endpoint.url` is mandatory" in str(error)


def _lfs(s3: dict[str, Any]) -> RelayConfig:
    tree = _tree()
    tree["target"] = {**tree["target"], "type": "lfs", "lfs": {"s3": {"bucket": "payloads", **s3}}}
    return parse_config(tree)


@pytest.mark.parametrize(
    ("s3", "path", "fragment"),
    [
        ({"endpoint_url": "not a url"}, "target.lfs.s3.endpoint_url", "boto3 refuses it: Invalid endpoint: not a url"),
        ({"region": "bad region!"}, "target.lfs.s3.region", "doesn't match a supported format"),
    ],
)
def test_s3_settings_boto3_refuses_are_named(s3: dict[str, Any], path: str, fragment: str) -> None:
    """A malformed endpoint or region is a config error naming it, next to a secret that stays hidden."""
    config = _lfs({**s3, "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3-secret-value"})
    with pytest.raises(ConfigError) as info:
        check_clients(config)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert "s3-secret-value" not in str(info.value)


def test_the_rehome_connection_is_checked_too() -> None:
    """target.lfs.rehome.s3 is built like target.lfs.s3: a malformed endpoint there names its key path."""
    tree = _tree()
    lfs = {"s3": {"bucket": "payloads"}, "rehome": {"allowed_buckets": ["east"], "s3": {"endpoint_url": "nope"}}}
    tree["target"] = {**tree["target"], "type": "lfs", "lfs": lfs}
    with pytest.raises(ConfigError) as info:
        check_clients(parse_config(tree))
    assert info.value.path == "target.lfs.rehome.s3.endpoint_url"


def test_s3_settings_are_checked_without_looking_for_credentials() -> None:
    """No keys in the config (the standard AWS chain): the check builds its client with placeholders, asks nothing."""
    check_clients(_lfs({"endpoint_url": "http://127.0.0.1:1", "region": "us-east-1"}))


def test_a_secret_librdkafka_quotes_is_shown_masked_and_once() -> None:
    """If librdkafka's reason quotes the value of a secret key, the line shows '***' there and nowhere else."""
    client = clients._Client(
        "sources[0]",
        "the consumer of source east",
        "consumer",
        ClusterConfig("east", "", {"ssl.key.password": "quoted-secret-1"}),
        ClusterConfig.client_config,
    )
    error = clients._refused(client, 'Invalid value "quoted-secret-1" for configuration property "ssl.key.password"')
    assert str(error) == (
        "config key 'sources[0].kafka.ssl.key.password': librdkafka refuses it for the consumer of source east: "
        'Invalid value "***" for configuration property "ssl.key.password"'
    )
