"""The ``lfs`` target's settings and its pure decisions: what to offload, where, and what the envelope says.

Nothing here does I/O, so every rule can be unit-tested on its own:

* :func:`parse_lfs` validates ``target.lfs`` into an :class:`LfsConfig` (one :class:`ConfigError`
  naming the key path on any mistake), with ``target.lfs.rehome`` as a :class:`RehomeConfig`.
* :class:`KeyTemplate` renders deterministic object keys from a record's source coordinates, the
  relay's name and the payload's SHA-256.
* :func:`offload_reason` decides whether a record goes to S3.
* :func:`expected_checksum` reads the ``LFS_BLOB``/``LFS_BLOB_ALG`` headers.
* :func:`build_envelope` chooses the ``kfs_lfs`` fields.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final, Literal, cast
from urllib.parse import quote

from lfs import BucketPolicy, Envelope, EnvelopeError, LfsError, decode_envelope, is_lfs_envelope, normalize_alg
from lfs.s3 import S3Settings
from relay.errors import ConfigError
from relay.message import Message
from relay.options import Section
from relay.settings import MIB
from targets.context import TargetContext, read_side_topic
from targets.kafka.settings import KafkaTargetConfig, parse_kafka_target
from targets.s3 import parse_allowed_buckets, parse_s3, refuse_writer_keys

LFS_BLOB: Final = "LFS_BLOB"
"""Header that marks a record for offload; a non-empty value is the payload's expected checksum."""

LFS_BLOB_ALG: Final = "LFS_BLOB_ALG"
"""Optional header naming the algorithm of that checksum (and of the envelope's ``checksum``)."""

ERROR_HEADER: Final = "kfr-lfs-error"
"""Header added to a dead-lettered record: why it could not be offloaded."""

DEFAULT_KEY_TEMPLATE: Final = "{prefix}/{relay}/{topic}/{partition}/{offset}-{sha256}"

KEY_VARIABLES: Final[Mapping[str, str]] = {
    "prefix": "target.lfs.s3.prefix (without surrounding slashes; may be empty)",
    "relay": "the relay's name (percent-encoded outside A-Z a-z 0-9 . _ ~ -)",
    "topic": "the source topic",
    "target_topic": "the target topic the envelope goes to",
    "partition": "the source partition",
    "offset": "the source offset",
    "sha256": "the payload's SHA-256, 64 lowercase hex digits",
}
"""Variables a key template may use. None depends on which source cluster (failover) or which
attempt (retry, restart) uploaded a record, so a repeated upload lands on the same key with the
same bytes. ``{relay}`` keeps independent relays sharing a bucket apart, and ``{sha256}`` keeps
apart records at the same coordinates with other bytes: a source topic deleted and recreated,
whose offsets start again. Kafka's topic ids would tell incarnations apart too, but differ
between the clusters of a failover pair, so keys would change on failover."""

REQUIRED_KEY_VARIABLES: Final = ("relay", "partition", "offset", "sha256")
"""Variables every template must name (besides ``{topic}`` or ``{target_topic}``)."""

# The characters each variable's value can hold; a separator between two variables must hold one
# that neither can, so that a key can be split back into its values (no two records share a key).
_TOPIC_CHARS: Final = frozenset(string.ascii_letters + string.digits + "._-")
_KEY_ALPHABETS: Final[Mapping[str, frozenset[str]]] = {
    "relay": frozenset(string.ascii_letters + string.digits + "._~-%"),
    "topic": _TOPIC_CHARS,
    "target_topic": _TOPIC_CHARS,
    "partition": frozenset(string.digits),
    "offset": frozenset(string.digits),
    "sha256": frozenset("0123456789abcdef"),
}
_INT_SPEC: Final = re.compile(r"(0[0-9]+)?d?")  # zero padding only: {offset:012d}

DEFAULT_HEADER_ALLOWLIST: Final = (
    "content-type",
    "content-encoding",
    "correlation-id",
    "message-id",
    "x-correlation-id",
    "x-request-id",
    "traceparent",
    "tracestate",
)
"""KafScale's list of headers copied into ``original_headers``."""

DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
MIN_PART_SIZE: Final = 5 * MIB  # S3's minimum for every part but the last
MAX_PART_SIZE: Final = 5 * 1024 * MIB
MAX_PARTS: Final = 10_000

RecordErrorPolicy = Literal["fail", "dead-letter"]
CopyMode = Literal["auto", "server", "stream"]


@dataclass(frozen=True)
class RehomeConfig:
    """Validated ``target.lfs.rehome``: envelopes in the source topics get their objects copied into ``lfs.s3.bucket``.

    ``policy`` and ``max_object_size``/``allow_unverified`` are the hydrate target's rules for which
    envelopes may be fetched at all; ``s3`` is how the source buckets are reached (no bucket: envelopes
    name it); ``copy`` chooses a server-side copy or a stream through the relay (see
    :func:`server_side`); ``concurrency`` is how many objects are copied at once.
    """

    policy: BucketPolicy
    s3: S3Settings
    max_object_size: int
    copy: CopyMode = "auto"
    allow_unverified: bool = False
    concurrency: int = 4


def server_side(rehome: RehomeConfig, target: S3Settings) -> bool:
    """Whether re-homing copies server-side (``CopyObject`` at the target's endpoint).

    ``auto``: when the source buckets are reached at the target's endpoint with the target's
    credentials (``rehome.s3`` left out, or naming the same endpoint, region and keys), so the
    target's endpoint can read them; otherwise the bytes are streamed through the relay.
    """
    if rehome.copy != "auto":
        return rehome.copy == "server"
    src = rehome.s3
    return (src.endpoint_url, src.region, src.access_key_id, src.secret_access_key, src.session_token) == (
        target.endpoint_url,
        target.region,
        target.access_key_id,
        target.secret_access_key,
        target.session_token,
    )


@dataclass(frozen=True)
class LfsConfig:
    """Validated ``target.lfs``; see ``docs`` in :func:`parse_lfs` for each setting."""

    s3: S3Settings
    key_template: KeyTemplate
    proxy_id: str
    relay: str = "kafka-lfs-relay"
    """The relay's name, as configured: ``{relay}`` in object keys."""
    threshold: int = MIB
    always_offload_topics: frozenset[str] = frozenset()
    checksum_alg: str = "sha256"
    content_type_default: str = DEFAULT_CONTENT_TYPE
    header_allowlist: tuple[str, ...] = DEFAULT_HEADER_ALLOWLIST
    upload_concurrency: int = 8
    part_size: int = 8 * MIB
    on_record_error: RecordErrorPolicy = "fail"
    dead_letter_topic: str | None = None
    rehome: RehomeConfig | None = None
    """Set: source records that are envelopes get their objects copied into ``s3.bucket`` (re-homed)."""

    @property
    def bucket(self) -> str:
        """The bucket objects go to (required for this target)."""
        assert self.s3.bucket is not None
        return self.s3.bucket


@dataclass(frozen=True)
class LfsTargetConfig:
    """The whole ``target`` section of ``type: lfs``: the Kafka target's keys and ``lfs``."""

    kafka: KafkaTargetConfig
    lfs: LfsConfig


def parse(sec: Section, context: TargetContext) -> LfsTargetConfig:
    """Validate ``target`` for ``type: lfs``; ``target.lfs`` (at least ``s3.bucket``) is required."""
    if not sec.has("lfs"):
        raise ConfigError("target.lfs", "is required when target.type is lfs (at least lfs.s3.bucket)")
    return LfsTargetConfig(kafka=parse_kafka_target(sec, context), lfs=parse_lfs(sec.section("lfs"), context))


class KeyTemplate:
    """A validated object-key template such as ``{prefix}/{relay}/{topic}/{partition}/{offset}-{sha256}``.

    Variables are those of :data:`KEY_VARIABLES`; ``{partition}`` and ``{offset}`` may be
    zero-padded (``{offset:020d}``), no other format spec is allowed (``{topic:.5}`` would cut
    names short and merge keys). A template must name ``{relay}``, ``{partition}``, ``{offset}``,
    ``{sha256}`` and ``{topic}`` or ``{target_topic}``, and put between any two variables a
    separator holding a character neither variable's values can hold (``/`` always works;
    ``{offset}-{sha256}`` too), so that two records, two relays or two incarnations of a topic
    never share a key: ``{topic}{partition}{offset}`` would give ``a123`` for both ``a,1,23``
    and ``a,12,3``. Rendering drops empty path segments, so an empty prefix gives
    ``relay/orders/0/42-…``, not ``/relay/orders/0/42-…``.
    """

    def __init__(self, template: str, key_path: str = "target.lfs.key_template") -> None:
        self.template = template
        names: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigError(key_path, f"is not a valid template ({exc})", template) from None
        for _literal, name, _spec, conversion in parsed:
            if name is None:
                continue
            if name not in KEY_VARIABLES:
                known = ", ".join("{" + v + "}" for v in KEY_VARIABLES)
                raise ConfigError(key_path, f"unknown variable {{{name}}}; known variables are {known}", template)
            if conversion is not None:
                raise ConfigError(key_path, f"variable {{{name}}} must not use a !conversion", template)
            names.add(name)
        try:
            self.render("prefix", "topic", "target", 0, 0, "relay", "0" * 64)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise ConfigError(key_path, f"cannot be rendered ({exc})", template) from None
        for _literal, name, spec, _conversion in parsed:
            if name is None or not spec:
                continue
            if name not in ("partition", "offset") or not _INT_SPEC.fullmatch(spec):
                raise ConfigError(
                    key_path,
                    f"variable {{{name}:{spec}}} may not use that format spec (only zero padding of "
                    "{partition} and {offset}, such as {offset:012d}, keeps keys apart)",
                    template,
                )
        missing = [v for v in REQUIRED_KEY_VARIABLES if v not in names]
        if not names & {"topic", "target_topic"}:
            missing.insert(0, "topic")
        if missing:
            shown = ", ".join("{" + v + "}" for v in missing)
            raise ConfigError(
                key_path,
                f"must contain {shown} so that every record, every relay and every incarnation of a topic "
                "gets its own key",
                template,
            )
        _check_separators(parsed, key_path, template)

    def render(
        self, prefix: str, topic: str, target_topic: str, partition: int, offset: int, relay: str, sha256: str
    ) -> str:
        """The object key for one record; ``relay`` as configured (it is percent-encoded here)."""
        text = self.template.format(
            prefix=prefix,
            relay=quote(relay, safe=""),
            topic=topic,
            target_topic=target_topic,
            partition=partition,
            offset=offset,
            sha256=sha256,
        )
        return "/".join(segment for segment in text.split("/") if segment)

    def key_for(self, msg: Message, prefix: str, relay: str, sha256: str) -> str:
        """The object key for ``msg``, from its source coordinates, the relay's name and its payload's SHA-256."""
        return self.render(prefix, msg.source_topic, msg.topic, msg.source_partition, msg.source_offset, relay, sha256)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyTemplate) and other.template == self.template

    def __hash__(self) -> int:
        return hash(self.template)

    def __repr__(self) -> str:
        return f"KeyTemplate({self.template!r})"


def _check_separators(
    parsed: Sequence[tuple[str, str | None, str | None, str | None]], key_path: str, template: str
) -> None:
    """Refuse two variables without a separator between them that neither variable's values can hold.

    ``{prefix}`` is constant (and may be empty), so it neither needs nor makes a separator.
    """
    previous: str | None = None
    between = ""
    for literal, name, _spec, _conversion in parsed:
        between += literal
        if name is None or name == "prefix":
            continue
        if previous is not None:
            taken = _KEY_ALPHABETS[previous] | _KEY_ALPHABETS[name]
            if all(char in taken for char in between):
                raise ConfigError(
                    key_path,
                    f"needs a separator between {{{previous}}} and {{{name}}} that neither can contain, such as "
                    "'/', or two records could get the same key",
                    template,
                )
        previous, between = name, ""


def _string_list(sec: Section, key: str, default: Sequence[str]) -> tuple[str, ...]:
    value = sec.raw(key, list(default))
    if not isinstance(value, list):
        raise ConfigError(sec.key_path(key), "expected a list of strings", value)
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{sec.key_path(key)}[{i}]", "expected a non-empty string", item)
        out.append(item.strip())
    return tuple(out)


def parse_lfs(sec: Section, context: TargetContext) -> LfsConfig:
    """Validate the ``target.lfs`` section (:func:`targets.lfs.parse` reads the rest of ``target``).

    Settings (all optional but ``s3.bucket``):

    ``threshold`` (size, 1MiB): values larger than this are offloaded.
    ``always_offload_topics`` (list of source topics): every record of these is offloaded.
    ``key_template`` (``{prefix}/{relay}/{topic}/{partition}/{offset}-{sha256}``): see :class:`KeyTemplate`.
    ``checksum_alg`` (sha256): sha256, md5, crc32 or none; the envelope's ``sha256`` is always set.
    ``content_type_default`` (application/octet-stream): the stored object's Content-Type when a record
    has no ``content-type`` header (its envelope then has no ``content_type``, see :func:`build_envelope`).
    ``header_allowlist`` (KafScale's list): headers copied into ``original_headers``; ``[]`` for none.
    ``upload_concurrency`` (8): S3 uploads (PUTs and parts) in flight at once.
    ``part_size`` (8MiB, at least 5MiB): larger values are uploaded in parts of this size.
    ``on_record_error`` (fail): ``fail`` or ``dead-letter`` for a checksum mismatch or an object
    over ``s3.max_object_size``.
    ``dead_letter_topic``: where ``dead-letter`` sends the original record (required with it).
    ``proxy_id`` (``kafka-lfs-relay/<name>``): the envelope's ``proxy_id``.
    ``s3``: see :func:`lfs.s3.parse_s3`; ``bucket`` is required.
    ``rehome``: see :func:`parse_rehome`; absent, envelopes in the source pass through unchanged.
    """
    d = LfsConfig
    threshold = sec.size("threshold", d.threshold)
    always = _always_offload_topics(sec, context)
    template = KeyTemplate(sec.text("key_template", DEFAULT_KEY_TEMPLATE), sec.key_path("key_template"))
    alg = _checksum_alg(sec)
    content_type = sec.text("content_type_default", d.content_type_default)
    allowlist = _string_list(sec, "header_allowlist", d.header_allowlist)
    concurrency = sec.integer("upload_concurrency", d.upload_concurrency, minimum=1)
    part_size = sec.size("part_size", d.part_size)
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ConfigError(sec.key_path("part_size"), "must be from 5MiB to 5GiB (S3's part size limits)", part_size)
    policy, dlq = _record_error_policy(sec, context)
    proxy_id = sec.text("proxy_id", f"kafka-lfs-relay/{context.name}")
    s3 = parse_s3(sec.section("s3"), require_bucket=True)
    rehome = parse_rehome(sec.section("rehome"), s3) if sec.has("rehome") else None
    sec.finish()
    if s3.max_object_size > part_size * MAX_PARTS:
        raise ConfigError(
            sec.key_path("s3.max_object_size"),
            f"is more than {MAX_PARTS} parts of target.lfs.part_size ({part_size} bytes); raise part_size",
            s3.max_object_size,
        )
    return LfsConfig(
        s3=s3,
        key_template=template,
        proxy_id=proxy_id,
        relay=context.name,
        threshold=threshold,
        always_offload_topics=frozenset(always),
        checksum_alg=alg,
        content_type_default=content_type,
        header_allowlist=allowlist,
        upload_concurrency=concurrency,
        part_size=part_size,
        on_record_error=policy,
        dead_letter_topic=dlq,
        rehome=rehome,
    )


def _always_offload_topics(sec: Section, context: TargetContext) -> tuple[str, ...]:
    """``always_offload_topics``: each one a source topic of ``topics[]``."""
    source_topics = {t.source for t in context.topics}
    always = _string_list(sec, "always_offload_topics", ())
    for i, topic in enumerate(always):
        if topic not in source_topics:
            raise ConfigError(
                f"{sec.key_path('always_offload_topics')}[{i}]", "is not one of the source topics in topics[]", topic
            )
    return always


def _checksum_alg(sec: Section) -> str:
    """``checksum_alg``, normalized (sha256, md5, crc32 or none)."""
    alg_raw = sec.text("checksum_alg", LfsConfig.checksum_alg)
    try:
        return normalize_alg(alg_raw)
    except LfsError:
        raise ConfigError(sec.key_path("checksum_alg"), "expected one of sha256, md5, crc32, none", alg_raw) from None


def _record_error_policy(sec: Section, context: TargetContext) -> tuple[RecordErrorPolicy, str | None]:
    """``on_record_error`` and the ``dead_letter_topic`` it needs (set exactly when it is dead-letter)."""
    policy: RecordErrorPolicy = (
        "dead-letter"
        if sec.choice("on_record_error", ("fail", "dead-letter"), LfsConfig.on_record_error) == "dead-letter"
        else "fail"
    )
    dlq = read_side_topic(sec, "dead_letter_topic", context)
    if policy == "dead-letter" and dlq is None:
        raise ConfigError(sec.key_path("dead_letter_topic"), "is required with on_record_error: dead-letter")
    if policy == "fail" and dlq is not None:
        raise ConfigError(sec.key_path("dead_letter_topic"), "only applies with on_record_error: dead-letter", dlq)
    return policy, dlq


_CONNECTION_KEYS: Final = (
    "endpoint_url", "region", "path_style", "access_key_id", "secret_access_key", "session_token", "connect_timeout",
    "read_timeout", "max_pool_connections",
)  # fmt: skip


def parse_rehome(sec: Section, target: S3Settings) -> RehomeConfig:
    """Validate ``target.lfs.rehome`` (``target`` is the validated ``target.lfs.s3``).

    ``allowed_buckets`` (required): the buckets, and optionally key prefixes, envelopes may name,
    as in ``target.hydrate``; an envelope naming another is a record error. ``s3``: how to reach
    them (endpoint, region, keys); left out, the target's own connection. ``copy`` (auto):
    ``server`` copies at the target's endpoint (``CopyObject``), ``stream`` reads through the relay
    and uploads; ``auto`` picks ``server`` when ``s3`` connects as the target does. ``max_object_size``
    (``target.lfs.s3.max_object_size``): the largest claim copied. ``allow_unverified`` (false).
    ``concurrency`` (4): objects copied at once.
    """
    d = RehomeConfig
    policy = parse_allowed_buckets(sec)
    if sec.has("s3"):
        s3_sec = sec.section("s3")
        refuse_writer_keys(s3_sec, "re-homing reads the buckets envelopes name")
        source = parse_s3(s3_sec, require_bucket=False)
    else:
        source = S3Settings(bucket=None, **{key: getattr(target, key) for key in _CONNECTION_KEYS})
    copy = cast(CopyMode, sec.choice("copy", ("auto", "server", "stream"), d.copy))
    max_size = sec.size("max_object_size", target.max_object_size, positive=True)
    allow_unverified = sec.flag("allow_unverified", d.allow_unverified)
    concurrency = sec.integer("concurrency", d.concurrency, minimum=1)
    if concurrency > 64:
        raise ConfigError(sec.key_path("concurrency"), "must be at most 64", concurrency)
    sec.finish()
    return RehomeConfig(policy, source, max_size, copy, allow_unverified, concurrency)


# -- decisions on one record ---------------------------------------------------------------------


def offload_reason(msg: Message, threshold: int, always_topics: Collection[str]) -> str | None:
    """Why ``msg`` is offloaded (``"size"``, ``"header"``, ``"topic"``), or None to pass it through.

    A tombstone (null value) always passes through: it is a delete marker for compacted topics,
    not a payload. So does a value that already is a valid ``kfs_lfs`` envelope (a record an
    upstream offloading relay or proxy wrote, ``LFS_BLOB`` header and all): wrapping a pointer
    in another pointer would hand hydrators an envelope instead of the payload.
    """
    value = msg.value
    if value is None:
        return None
    if is_lfs_envelope(value):
        try:
            decode_envelope(value)
            return None
        except EnvelopeError:
            pass  # looks like an envelope but is not one: it is data like any other
    if len(value) > threshold:
        return "size"
    if any(name == LFS_BLOB for name, _ in msg.headers):
        return "header"
    if msg.source_topic in always_topics:
        return "topic"
    return None


class RecordError(Exception):
    """A record that cannot be offloaded; ``kind`` labels metrics (``checksum_mismatch``, ``too_large``...)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def expected_checksum(msg: Message, default_alg: str) -> tuple[str, str | None]:
    """The record's checksum algorithm and the checksum its ``LFS_BLOB`` header expects (or None).

    ``LFS_BLOB_ALG`` overrides the configured algorithm for this record (for the envelope and
    for the expected value). With algorithm ``none``, an expected value is compared with the
    payload's SHA-256. Raises :class:`RecordError` for an unknown algorithm.
    """
    alg = default_alg
    alg_header = msg.header(LFS_BLOB_ALG)
    if alg_header:
        text = alg_header.decode("utf-8", "replace")
        try:
            alg = normalize_alg(text)
        except LfsError:
            raise RecordError(
                f"record {msg.coordinates()} names an unsupported checksum algorithm in {LFS_BLOB_ALG} "
                f"({text[:32]!r}; supported: sha256, md5, crc32, none)",
                "bad_checksum_alg",
            ) from None
    blob = msg.header(LFS_BLOB)
    expected = blob.decode("utf-8", "replace").strip().lower() if blob else ""
    return alg, expected or None


def _header_text(value: bytes | None) -> str:
    # As KafScale's Go writer does: bytes as a string; invalid UTF-8 becomes U+FFFD in JSON.
    return value.decode("utf-8", "replace") if value else ""


def created_at(now: datetime | None = None) -> str:
    """RFC 3339 UTC to the second, as KafScale writes it: ``2026-01-02T03:04:05Z``."""
    moment = now or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_envelope(
    msg: Message,
    *,
    bucket: str,
    key: str,
    size: int,
    sha256: str,
    alg: str,
    checksum: str,
    header_allowlist: Sequence[str],
    proxy_id: str,
    now: datetime | None = None,
) -> Envelope:
    """The ``kfs_lfs`` envelope for ``msg`` once its payload is stored at ``bucket``/``key``.

    ``checksum``/``checksum_alg`` are written only when the algorithm is not sha256 (``none``
    writes ``checksum_alg`` alone). ``content_type`` comes from the record's ``content-type``
    header and is left out when the record has none: the envelope says what the record said, so
    hydration, which adds ``content_type`` as a header where none is, gives back the record as it
    was (``content_type_default`` is only the stored object's Content-Type). ``original_headers``
    holds the allow-listed headers (names matched case-insensitively, the record's spelling kept;
    the last of a repeated name wins).
    """
    allowed = {name.lower() for name in header_allowlist}
    original: dict[str, str] = {}
    content_type: str | None = None
    for name, value in msg.headers:
        lowered = name.lower()
        if lowered in allowed:
            original[name] = _header_text(value)
        if lowered == "content-type" and value:
            content_type = _header_text(value)
    return Envelope(
        bucket=bucket,
        key=key,
        size=size,
        sha256=sha256,
        checksum=checksum if alg in ("md5", "crc32") else None,
        checksum_alg=None if alg == "sha256" else alg,
        content_type=content_type,
        original_headers=original or None,
        created_at=created_at(now),
        proxy_id=proxy_id,
    )
