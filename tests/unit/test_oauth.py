"""sasl_oauth: AWS MSK IAM tokens for librdkafka's oauth_cb, read from a cluster entry."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from relay.errors import ConfigError
from relay.oauth import OAuthSettings, msk_iam_callback
from relay.options import Section, read_cluster


class _Signer:
    """Stands in for aws_msk_iam_sasl_signer.MSKAuthTokenProvider and records its calls."""

    calls: ClassVar[list[tuple[Any, ...]]] = []

    @classmethod
    def generate_auth_token(cls, region: str) -> tuple[str, int]:
        cls.calls.append(("token", region))
        return "signed-token", 1_900_000_000_123

    @classmethod
    def generate_auth_token_from_role_arn(cls, region: str, role_arn: str, session: str) -> tuple[str, int]:
        cls.calls.append(("role", region, role_arn, session))
        return "role-token", 1_900_000_000_500


def test_the_callback_signs_for_the_region_and_gives_the_expiry_in_seconds() -> None:
    """oauth_cb returns the signer's token and its expiry converted from milliseconds to seconds."""
    _Signer.calls = []
    callback = msk_iam_callback("eu-west-1", None, "relay", signer=_Signer)
    assert callback("") == ("signed-token", 1_900_000_000.123)
    assert _Signer.calls == [("token", "eu-west-1")]


def test_with_a_role_the_callback_assumes_it_for_each_token() -> None:
    """With role_arn, each token is signed with that role's credentials and the session name."""
    _Signer.calls = []
    callback = msk_iam_callback("us-east-1", "arn:aws:iam::1:role/relay", "orders", signer=_Signer)
    assert callback("ignored") == ("role-token", 1_900_000_000.5)
    assert _Signer.calls == [("role", "us-east-1", "arn:aws:iam::1:role/relay", "orders")]


def test_the_real_signer_package_is_importable() -> None:
    """The msk-iam extra's package exposes the provider the callback uses."""
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    assert callable(MSKAuthTokenProvider.generate_auth_token)


def _cluster(**entry: Any) -> Any:
    return read_cluster(Section({"bootstrap_servers": "b:9098", **entry}, "sources[0]"), "east")


def test_a_cluster_with_sasl_oauth_gives_every_client_an_oauth_cb() -> None:
    """sasl_oauth is read into OAuthSettings and client_config() carries a callable oauth_cb."""
    cluster = _cluster(
        kafka={"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
        sasl_oauth={"provider": "aws-msk-iam", "region": "eu-west-1", "role_arn": "arn:aws:iam::1:role/r"},
    )
    assert cluster.oauth == OAuthSettings("aws-msk-iam", "eu-west-1", "arn:aws:iam::1:role/r")
    props = cluster.client_config()
    assert callable(props["oauth_cb"]) and props["sasl.mechanism"] == "OAUTHBEARER"


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({"sasl_oauth": {"provider": "aws-msk-iam", "region": "eu-west-1"}}, "sources[0].sasl_oauth"),
        (
            {"kafka": {"sasl.mechanism": "OAUTHBEARER"}, "sasl_oauth": {"provider": "gcp", "region": "x"}},
            "sources[0].sasl_oauth.provider",
        ),
        (
            {"kafka": {"sasl.mechanism": "OAUTHBEARER"}, "sasl_oauth": {"provider": "aws-msk-iam"}},
            "sources[0].sasl_oauth.region",
        ),
    ],
)
def test_sasl_oauth_mistakes_name_the_key(entry: dict[str, Any], path: str) -> None:
    """Without OAUTHBEARER, an unknown provider or no region: one error naming the key."""
    with pytest.raises(ConfigError) as err:
        _cluster(**entry)
    assert err.value.path == path


def test_without_the_signer_package_the_config_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing aws-msk-iam-sasl-signer-python is a config error naming the pip extra, not an ImportError."""
    monkeypatch.setattr("relay.options.signer_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"kafka-lfs-relay\[msk-iam\]"):
        _cluster(kafka={"sasl.mechanism": "OAUTHBEARER"}, sasl_oauth={"provider": "aws-msk-iam", "region": "x"})
