"""Unit tests of what counts as a secret in the config, and of the masker that scrubs secrets from any text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_lfs_relay.config import load_config, secret_values, substitute_env
from relay.errors import ConfigError, SecretMasker, is_secret_path

# --- what is a secret --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "sources[0].kafka.sasl.oauthbearer.config",
        "sources[0].kafka.sasl.oauthbearer.assertion.private.key.passphrase",
        "target.kafka.ssl.key.password",
        "target.kafka.sasl.oauthbearer.client.secret",
        "target.lfs.s3.secret_access_key",
        "target.hydrate.s3.session_token",
        "KAFKA_PASSWORD",
        "OAUTH_CLIENT_SECRET",
    ],
)
def test_secret_paths_and_variable_names(path: str) -> None:
    """Key paths (and ${VAR} names, judged alike) that hold credentials are secret."""
    assert is_secret_path(path)


def test_secret_values_of_a_tree_are_every_scalar_under_a_secret_key() -> None:
    """Strings and numbers under a secret key (at any depth) are secrets; booleans and other keys are not."""
    tree = {
        "sources": [{"kafka": {"sasl.username": "relay", "sasl.password": "hunter2-pw", "linger.ms": 5}}],
        "target": {
            "kafka": {"ssl.key.password": 12345678},
            "options": {"credentials": {"user": "u-1", "key": "k-2"}, "token_refresh": True},
        },
    }
    assert secret_values(tree) == {"hunter2-pw", "12345678", "u-1", "k-2"}


# --- ${VAR} values -----------------------------------------------------------------------------

ENV = {
    "KAFKA_PASSWORD": "pw-from-env",
    "OAUTH_SECRET": "oauth-from-env",
    "BROKERS": "kafka-1:9092",
    "PLAIN": "plain-value",
}


def _substituted_secrets(tree: object) -> set[str]:
    found: set[str] = set()
    substitute_env(tree, ENV, secrets=found)
    return found


def test_a_variable_substituted_into_a_secret_key_is_a_secret() -> None:
    """${VAR} into sasl.password is a secret, whatever the variable is called."""
    assert _substituted_secrets({"kafka": {"sasl.password": "${PLAIN}"}}) == {"plain-value"}


def test_a_variable_with_a_secret_name_is_a_secret_in_any_key() -> None:
    """${OAUTH_SECRET} embedded in a key that does not look secret is still a secret (only its value)."""
    tree = {"kafka": {"sasl.oauthbearer.extensions": "clientSecret=${OAUTH_SECRET},scope=all"}}
    assert _substituted_secrets(tree) == {"oauth-from-env"}


def test_ordinary_variables_in_ordinary_keys_are_settings() -> None:
    """${BROKERS} into bootstrap_servers stays visible in errors: it is no secret."""
    assert _substituted_secrets({"bootstrap_servers": "${BROKERS}", "name": "${PLAIN}"}) == set()


def test_the_default_of_a_secret_variable_is_a_secret() -> None:
    """${DB_PASSWORD:-fallback} with the variable unset: the fallback is the secret in use."""
    assert _substituted_secrets({"x": "${DB_PASSWORD:-fallback-pw}"}) == {"fallback-pw"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.yml"
    path.write_text(text, encoding="utf-8")
    return path


CONFIG = """
sources:
  - bootstrap_servers: ${BROKERS}
    kafka: {sasl.password: "${KAFKA_PASSWORD}", ssl.key.password: literal-key-pw}
topics: [{source: orders}]
target:
  bootstrap_servers: ${BROKERS}
  kafka: {sasl.oauthbearer.extensions: "x=${OAUTH_SECRET}"}
"""


def test_load_config_teaches_the_masker_every_secret(tmp_path: Path) -> None:
    """Literal secrets, ${VAR} secrets and secret-named variables: all scrubbed; the broker address is not."""
    masker = SecretMasker()
    load_config(_write(tmp_path, CONFIG), ENV, masker)
    text = "pw-from-env literal-key-pw oauth-from-env kafka-1:9092"
    assert masker(text) == "*** *** *** kafka-1:9092"


def test_the_masker_learns_the_secrets_even_when_the_config_is_refused(tmp_path: Path) -> None:
    """A missing ${VAR}: the error is raised, and the secrets already known are scrubbed from whatever is printed."""
    masker = SecretMasker()
    with pytest.raises(ConfigError, match="environment variable KAFKA_PASSWORD is not set"):
        load_config(_write(tmp_path, CONFIG), {"BROKERS": "b:9092"}, masker)
    assert masker("literal-key-pw") == "***"


# --- the masker --------------------------------------------------------------------------------


def test_masker_scrubs_every_form_a_secret_takes_in_text() -> None:
    """As is, inside a repr (escaped quote and backslash) and inside a JSON string (escaped quote, non-ASCII)."""
    secret = "pa'ss\\wo\"rd-é"
    masker = SecretMasker([secret])
    assert masker(f"plain {secret} end") == "plain *** end"
    assert masker(repr({"k": secret})) == "{'k': '***'}"
    assert masker(json.dumps({"k": secret})) == '{"k": "***"}'
    assert masker(json.dumps({"k": secret}, ensure_ascii=False)) == '{"k": "***"}'


def test_masker_replaces_the_longest_secret_first() -> None:
    """A secret that contains another is replaced whole, not half."""
    masker = SecretMasker(["secret-1", "secret-1-and-more"])
    assert masker("x secret-1-and-more y secret-1") == "x *** y ***"


def test_masker_leaves_values_too_short_to_tell_from_text() -> None:
    """A one- to three-character value would eat every such letter or digit of a line: it is not scrubbed."""
    masker = SecretMasker(["ab1", "abcd"])
    assert masker("ab1 abcd") == "ab1 ***"


@given(
    secret=st.text(st.characters(blacklist_characters="*"), min_size=SecretMasker.MIN_LENGTH),
    before=st.text(),
    after=st.text(),
)
def test_a_known_secret_never_survives_masking(secret: str, before: str, after: str) -> None:
    """Whatever the secret and the text around it, the secret is gone from the masked text."""
    masker = SecretMasker([secret])
    assert secret not in masker(before + secret + after)
