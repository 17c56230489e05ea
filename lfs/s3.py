"""S3 settings and the client: what the SDK's resolver and the LFS targets connect with.

Credentials: explicit ``access_key_id``/``secret_access_key`` (use ``${VAR}``), else a named
``profile`` of the shared AWS config, else boto3's standard chain (environment, shared config,
web identity as IRSA gives it, instance role). With ``role_arn`` those credentials assume that role
(STS AssumeRole, with ``external_id`` and ``session_name``), refreshed before they expire.
Secrets never appear in a repr, a log line or an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from botocore.config import Config as BotoConfig
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

if TYPE_CHECKING:
    import boto3

ErrorKind = Literal[
    "throttled", "unavailable", "access_denied", "credentials", "no_such_bucket", "no_such_key", "other"
]
"""What a failure means. ``credentials``: there are none, or S3 (or STS) rejected them; like
``access_denied`` it is permanent, and retrying only hides a misconfiguration (IRSA, a rotated key)."""

_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "503", "TooManyRequests"}
_UNAVAILABLE_CODES = {"ServiceUnavailable", "InternalError", "500", "502", "503", "504", "RequestTimeout"}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
    "InvalidClientTokenId", "UnrecognizedClientException",
}  # fmt: skip
_DENIED_CODES = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"}
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, ProfileNotFound)


@dataclass(frozen=True)
class S3Settings:
    """Where objects live and how to reach them."""

    bucket: str | None
    endpoint_url: str | None = None
    region: str | None = None
    prefix: str = ""
    path_style: bool = False
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    session_name: str = "kafka-lfs-relay"
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    max_object_size: int = 5 * 1024**3
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_pool_connections: int = 32

    def put_extra_args(self) -> dict[str, Any]:
        """Arguments every PUT/CreateMultipartUpload carries: encryption and tags."""
        extra: dict[str, Any] = {}
        if self.sse is not None:
            extra["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.kms_key_id:
                extra["SSEKMSKeyId"] = self.kms_key_id
        if self.tags:
            from urllib.parse import urlencode

            extra["Tagging"] = urlencode(dict(self.tags))
        return extra


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for ``settings``. botocore's own retries are kept small: callers retry."""
    import boto3  # on first use: importing boto3 costs a relay without S3 a sixth of a second of CPU at start

    config = BotoConfig(
        region_name=settings.region,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=settings.max_pool_connections,
        s3={"addressing_style": "path" if settings.path_style else "auto"},
    )
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        aws_session_token=settings.session_token,
        profile_name=settings.profile,
        region_name=settings.region,
    )
    if settings.role_arn:
        _assume_role(session, settings)
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def _assume_role(session: boto3.session.Session, settings: S3Settings) -> None:
    """Make ``session`` use ``settings.role_arn``, assumed with its own credentials and refreshed before expiry.

    This is what botocore does for a ``role_arn`` in a shared-config profile (the same fetcher and
    credentials classes), set up from the relay's settings instead of a file. Nothing is fetched
    until the first request: a missing or refused role is that request's ``credentials`` error.
    """
    assert settings.role_arn is not None
    core = session._session  # boto3 keeps its botocore session here; botocore's own profiles work on it
    extra: dict[str, Any] = {"RoleSessionName": settings.session_name}
    if settings.external_id:
        extra["ExternalId"] = settings.external_id
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=core.create_client,
        source_credentials=core.get_credentials(),
        role_arn=settings.role_arn,
        extra_args=extra,
    )
    core._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
        method="assume-role", refresh_using=fetcher.fetch_credentials
    )


def error_kind(exc: BaseException) -> ErrorKind:
    """Classify an S3 failure: what to do about it depends only on this."""
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return "credentials"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _CREDENTIAL_CODES:
            return "credentials"
        if code in _THROTTLE_CODES:
            return "throttled"
        if getattr(exc, "operation_name", "") == "AssumeRole" and (code in _DENIED_CODES or status == "403"):
            return "credentials"  # STS refused to let these credentials assume role_arn
        if code in ("NoSuchBucket",):
            return "no_such_bucket"
        if code in ("NoSuchKey", "404", "NotFound"):
            return "no_such_key"
        if code in _DENIED_CODES or status == "403":
            return "access_denied"
        if code in _UNAVAILABLE_CODES or status.startswith("5"):
            return "unavailable"
        return "other"
    if isinstance(exc, (EndpointConnectionError, BotoCoreError, ConnectionError, TimeoutError, OSError)):
        return "unavailable"
    return "other"


def describe(exc: BaseException) -> str:
    """A short, secret-free description of an S3 failure for a log line or an error."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip(": ")
    return f"{type(exc).__name__}: {exc}"
