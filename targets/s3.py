"""The ``s3`` option section of the ``lfs`` and ``hydrate`` targets.

Credentials: explicit ``access_key_id``/``secret_access_key`` (use ``${VAR}``), or a ``profile``
of the shared AWS config, else boto3's standard chain (environment, shared config, web identity
as IRSA gives it, instance role); ``role_arn`` (with ``external_id``, ``session_name``) then
assumes a role with them. Secrets never appear in a repr, a log line or an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from lfs import BucketPolicy, BucketRule
from lfs.s3 import S3Settings
from relay.errors import ConfigError
from relay.options import Section


def parse_s3(sec: Section, require_bucket: bool) -> S3Settings:
    """Validate an ``s3`` section; ``require_bucket`` for writers (readers take buckets from envelopes)."""
    d = S3Settings
    sse_raw = sec.raw("sse", None)
    sse: Literal["AES256", "aws:kms"] | None
    if sse_raw is None:
        sse = None
    elif sse_raw in ("AES256", "aws:kms"):
        sse = "AES256" if sse_raw == "AES256" else "aws:kms"
    else:
        raise ConfigError(sec.key_path("sse"), "expected AES256 or aws:kms", sse_raw)
    access_key = sec.opt_text("access_key_id")
    secret = sec.opt_text("secret_access_key")
    if (access_key is None) != (secret is None):
        raise ConfigError(sec.path, "set both access_key_id and secret_access_key, or neither (standard AWS chain)")
    profile = sec.opt_text("profile")
    if profile is not None and access_key is not None:
        raise ConfigError(sec.key_path("profile"), "set either a profile or access_key_id/secret_access_key, not both")
    role_arn = sec.opt_text("role_arn")
    external_id = sec.opt_text("external_id")
    session_name = sec.text("session_name", d.session_name)
    if role_arn is None and (external_id is not None or sec.has("session_name")):
        key = "external_id" if external_id is not None else "session_name"
        raise ConfigError(sec.key_path(key), "only applies with role_arn")
    if role_arn is not None and not role_arn.startswith("arn:"):
        raise ConfigError(
            sec.key_path("role_arn"), "expected a role ARN like arn:aws:iam::123456789012:role/relay", role_arn
        )
    settings = S3Settings(
        bucket=sec.text("bucket") if require_bucket else sec.opt_text("bucket"),
        endpoint_url=sec.opt_text("endpoint_url"),
        region=sec.opt_text("region"),
        prefix=(sec.opt_text("prefix") or "").strip("/"),
        path_style=sec.flag("path_style", d.path_style),
        access_key_id=access_key,
        secret_access_key=secret,
        session_token=sec.opt_text("session_token"),
        profile=profile,
        role_arn=role_arn,
        external_id=external_id,
        session_name=session_name,
        sse=sse,
        kms_key_id=sec.opt_text("kms_key_id"),
        tags=sec.string_map("tags"),
        max_object_size=sec.size("max_object_size", d.max_object_size, positive=True),
        connect_timeout=sec.duration("connect_timeout", d.connect_timeout, positive=True),
        read_timeout=sec.duration("read_timeout", d.read_timeout, positive=True),
        max_pool_connections=sec.integer("max_pool_connections", d.max_pool_connections, minimum=1),
    )
    if settings.kms_key_id and settings.sse != "aws:kms":
        raise ConfigError(sec.key_path("kms_key_id"), "only applies with sse: aws:kms")
    sec.finish()
    return settings


WRITER_ONLY_S3_KEYS: Final = ("bucket", "prefix", "sse", "kms_key_id", "tags")
"""Keys of an ``s3`` section that only a writer uses: a reader takes buckets from envelopes."""


def refuse_writer_keys(sec: Section, reader: str) -> None:
    """Refuse the writer-only keys in a reader's ``s3`` section ``sec``; ``reader`` ends the sentence."""
    for key in WRITER_ONLY_S3_KEYS:
        if sec.has(key):
            hint = "; list the buckets to read from in allowed_buckets" if key == "bucket" else ""
            raise ConfigError(sec.key_path(key), f"applies to writing (the lfs target) only: {reader}{hint}")


def parse_allowed_buckets(sec: Section) -> BucketPolicy:
    """``allowed_buckets`` of ``sec`` (required, non-empty): bucket names or ``{bucket, prefixes}`` mappings."""
    key = sec.key_path("allowed_buckets")
    items = sec.raw("allowed_buckets", None)
    if items is None:
        raise ConfigError(key, "is required: list the buckets (and optionally key prefixes) envelopes may point at")
    if not isinstance(items, list):
        raise ConfigError(key, "expected a list of bucket names or {bucket, prefixes} mappings", items)
    if not items:
        raise ConfigError(key, "needs at least one bucket (nothing is fetched from a bucket not listed)")
    rules: list[BucketRule] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        item_path = f"{key}[{i}]"
        prefixes: tuple[str, ...] = ()
        if isinstance(item, str):
            bucket = item.strip()
            if not bucket:
                raise ConfigError(item_path, "must not be empty", item)
        elif isinstance(item, Mapping):
            entry = Section(item, item_path)
            bucket = entry.text("bucket")
            prefixes = _prefixes(entry)
            entry.finish()
        else:
            raise ConfigError(item_path, "expected a bucket name or a mapping with bucket and prefixes", item)
        if bucket in seen:
            raise ConfigError(item_path, f"bucket {bucket!r} is listed twice")
        seen.add(bucket)
        rules.append(BucketRule(bucket, prefixes))
    return BucketPolicy(rules)


def _prefixes(entry: Section) -> tuple[str, ...]:
    raw = entry.raw("prefixes", None)
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ConfigError(entry.key_path("prefixes"), "expected a non-empty list of key prefixes", raw)
    out: list[str] = []
    for j, prefix in enumerate(raw):
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"{entry.key_path('prefixes')}[{j}]", "expected a non-empty string", prefix)
        out.append(prefix)
    return tuple(out)
