"""OAUTHBEARER tokens made by the relay for librdkafka (``oauth_cb``): AWS MSK IAM.

A cluster's ``sasl_oauth: {provider: aws-msk-iam, region, role_arn, session_name}`` gives every
client of that cluster a token callback. librdkafka calls it at connect and again before the
token expires, on its own thread; the callback signs a token with the AWS credentials of boto3's
default chain (or of ``role_arn``, assumed for each token) through
``aws-msk-iam-sasl-signer-python`` (the ``msk-iam`` extra). The package is imported only when a
config asks for it; the config refuses the setting when it is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

TokenCallback = Callable[[str], "tuple[str, float]"]
"""librdkafka's ``oauth_cb``: given ``sasl.oauthbearer.config``, returns (token, expiry as epoch seconds)."""

PROVIDERS: Final = ("aws-msk-iam",)
SIGNER_MODULE: Final = "aws_msk_iam_sasl_signer"
SIGNER_PACKAGE: Final = "aws-msk-iam-sasl-signer-python"


@dataclass(frozen=True)
class OAuthSettings:
    """How the relay makes OAUTHBEARER tokens for one cluster."""

    provider: str
    region: str
    role_arn: str | None = None
    session_name: str = "kafka-lfs-relay"

    def callback(self) -> TokenCallback:
        """The ``oauth_cb`` for a client of this cluster."""
        return msk_iam_callback(self.region, self.role_arn, self.session_name)


def signer_installed() -> bool:
    """Whether ``aws-msk-iam-sasl-signer-python`` can be imported."""
    return importlib.util.find_spec(SIGNER_MODULE) is not None


def msk_iam_callback(region: str, role_arn: str | None, session_name: str, signer: Any = None) -> TokenCallback:
    """An ``oauth_cb`` that signs MSK IAM tokens for ``region`` (assuming ``role_arn`` when given).

    ``signer`` replaces the package's ``MSKAuthTokenProvider`` (tests).
    """
    if signer is None:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        signer = MSKAuthTokenProvider

    def token(_oauthbearer_config: str) -> tuple[str, float]:
        if role_arn:
            value, expiry_ms = signer.generate_auth_token_from_role_arn(region, role_arn, session_name)
        else:
            value, expiry_ms = signer.generate_auth_token(region)
        # The signer gives the expiry in epoch milliseconds; librdkafka wants seconds.
        return value, expiry_ms / 1000.0

    return token
