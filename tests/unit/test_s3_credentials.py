"""S3 credentials: which failures are permanent, and how profile and role_arn are read and wired."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ProfileNotFound

from lfs.s3 import S3Settings, error_kind, make_client
from relay.errors import ConfigError
from relay.options import Section
from targets.s3 import parse_s3


def _client_error(code: str, status: int = 403, operation: str = "PutObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (NoCredentialsError(), "credentials"),
        (ProfileNotFound(profile="gone"), "credentials"),
        (_client_error("InvalidAccessKeyId"), "credentials"),
        (_client_error("SignatureDoesNotMatch"), "credentials"),
        (_client_error("ExpiredToken", 400), "credentials"),
        (_client_error("AccessDenied", 403, "AssumeRole"), "credentials"),
        (_client_error("AccessDenied"), "access_denied"),
        (_client_error("SlowDown", 503), "throttled"),
        (_client_error("InternalError", 500), "unavailable"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "unavailable"),
    ],
)
def test_missing_or_rejected_credentials_are_their_own_permanent_kind(exc: BaseException, kind: str) -> None:
    """No credentials, a rejected key, signature or token, and a refused AssumeRole are `credentials`, never retried."""
    assert error_kind(exc) == kind


def _parse(**s3: Any) -> S3Settings:
    sec = Section({"bucket": "b", **s3}, "target.lfs.s3")
    return parse_s3(sec, require_bucket=True)


def test_role_arn_external_id_session_name_and_profile_are_read() -> None:
    """role_arn with external_id and session_name, or a profile, are settings of their own."""
    settings = _parse(role_arn="arn:aws:iam::123456789012:role/relay", external_id="x-1", session_name="orders")
    assert (settings.role_arn, settings.external_id, settings.session_name) == (
        "arn:aws:iam::123456789012:role/relay",
        "x-1",
        "orders",
    )
    assert "x-1" not in repr(settings)
    assert _parse(profile="relay").profile == "relay"


@pytest.mark.parametrize(
    ("s3", "path"),
    [
        ({"external_id": "x"}, "target.lfs.s3.external_id"),
        ({"session_name": "s"}, "target.lfs.s3.session_name"),
        ({"role_arn": "relay-role"}, "target.lfs.s3.role_arn"),
        ({"profile": "p", "access_key_id": "a", "secret_access_key": "s"}, "target.lfs.s3.profile"),
    ],
)
def test_credential_settings_that_cannot_work_are_refused(s3: dict[str, str], path: str) -> None:
    """external_id or session_name without role_arn, a role that is no ARN, a profile with keys: refused by key."""
    with pytest.raises(ConfigError) as err:
        _parse(**s3)
    assert err.value.path == path


def test_a_role_arn_is_assumed_lazily_with_refreshing_credentials() -> None:
    """The client's credentials come from STS AssumeRole, fetched at the first request and refreshed, not at build."""
    settings = S3Settings(
        bucket="b",
        region="eu-west-1",
        access_key_id="AKIAEXAMPLE",
        secret_access_key="secret",
        role_arn="arn:aws:iam::123456789012:role/relay",
        external_id="x-1",
    )
    client = make_client(settings)
    credentials = client._request_signer._credentials
    assert isinstance(credentials, DeferredRefreshableCredentials)
    assert credentials.method == "assume-role"
