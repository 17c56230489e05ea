"""What a record is, for verify: its fingerprint on the source side and on the target side, per target type.

A record is compared by its key, its headers, its timestamp and the identity of its value. What a
value's identity is depends on what the relay promises for it:

* ``kafka``: the record is copied byte for byte; the identity is the value's SHA-256.
* ``lfs``: a record is either passed through or stands, as an envelope, for a payload in S3; the
  identity is the SHA-256 of the payload (of the value itself for a plain record). A target
  envelope naming the target's bucket is fetched and verified against its own size and checksums
  (it may have been overwritten or deleted since), and its payload hashed; one naming another
  bucket (an envelope passed through unchanged) stands for what it claims, as the source's does.
* with ``provenance`` on, the target record has the source cluster's id as a last
  ``kfr-provenance`` header, and a source record whose provenance names the target is not expected.
* ``hydrate``: the target value is the payload, hashed; a source envelope stands for the SHA-256
  it claims, and the target record's headers must be those the hydrate target gives it (the
  source's, without ``kfr-pos``, then ``original_headers`` and ``content-type``).

A legacy envelope that names no SHA-256 is fetched (through the allow-list of the config) to learn
it. Records a filter of the config drops are not expected on the target.

Digest mode keeps nothing but digests and streams S3 objects through the hash; otherwise values up
to 64 KiB are kept too (to say where two values first differ) and objects are fetched whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from confluent_kafka import Message as KafkaMessage

from filters import FilterChain
from kafka_lfs_relay.verify.align import Fingerprint
from lfs import Envelope, EnvelopeError, Hasher, LfsError, Resolver, detect
from relay.kafkautil import headers_of
from relay.message import Message
from targets.hydrate.target import restored_headers, strip_positions
from targets.kafka.provenance import HEADER as PROVENANCE

Headers = Sequence[tuple[str, bytes | None]]
RAW_LIMIT: Final = 64 * 1024
"""Outside digest mode, values up to this size are kept, to say where two of them first differ."""
_CHUNK: Final = 1024 * 1024
_NO_HEADERS: Final = hashlib.blake2b(digest_size=16).digest()


def digest(data: bytes | None) -> bytes | None:
    """A short digest of a key (None stays None: a null key differs from an empty one)."""
    return None if data is None else hashlib.blake2b(data, digest_size=16).digest()


def headers_digest(headers: Headers | None) -> bytes:
    """A digest of headers in order, names and values (null distinct from empty)."""
    if not headers:
        return _NO_HEADERS
    h = hashlib.blake2b(digest_size=16)
    for name, value in headers or ():
        encoded = name.encode("utf-8", "surrogatepass")
        h.update(len(encoded).to_bytes(4, "big") + encoded)
        h.update(b"\xff" if value is None else len(value).to_bytes(4, "big") + value)
    return h.digest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Values:
    """Fingerprints of source and target records for one relay's config; see the module docstring.

    ``kind`` is the target type (kafka, lfs, hydrate); ``bucket`` the lfs target's bucket (its
    envelopes are fetched); ``target_reader`` fetches those, ``source_reader`` (optional) reads the
    objects of legacy source envelopes; ``filters`` is the config's chain; ``digest`` the mode.
    """

    def __init__(
        self,
        kind: str,
        *,
        filters: FilterChain | None = None,
        bucket: str | None = None,
        target_reader: Resolver | None = None,
        source_reader: Resolver | None = None,
        digest_only: bool = True,
        stamp: tuple[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.filters = filters
        self.bucket = bucket
        self.target_reader = target_reader
        self.source_reader = source_reader
        self.digest_only = digest_only
        # With provenance on: the source cluster's id, which the relay adds as a last header, and the
        # target's, whose records the relay drops (targets.kafka.provenance).
        self.stamp = None if stamp is None else (stamp[0].encode(), stamp[1].encode())
        self.fetched = 0
        """Objects fetched and hashed (target envelopes, legacy source envelopes)."""
        self.fetched_bytes = 0

    # -- the source side -------------------------------------------------------------------------------
    def source(self, msg: KafkaMessage, cluster: str, target_topic: str) -> Fingerprint | None:
        """The fingerprint the target record of ``msg`` must have, or None if a filter drops ``msg``."""
        key, value, headers = msg.key(), msg.value(), headers_of(msg)
        offset = msg.offset() or 0
        timestamp = msg.timestamp()[1]
        if self.filters is not None:
            topic, partition = msg.topic() or "", msg.partition() or 0
            as_relayed = Message(key, value, headers, target_topic, cluster, topic, partition, offset, timestamp)
            if self.filters(as_relayed) is not None:
                return None
        if self.stamp is not None and (PROVENANCE, self.stamp[1]) in headers:
            return None  # it has been on the target already: the loop guard drops it
        envelope = None
        if self.kind != "kafka":
            try:
                envelope = detect(value)
            except EnvelopeError:
                envelope = None
        if self.kind == "hydrate":
            headers = strip_positions(headers)
            if envelope is not None:
                headers = restored_headers(headers, envelope)
        if self.stamp is not None:
            headers = (*headers, (PROVENANCE, self.stamp[0]))
        identity: object
        note = None
        if envelope is None:
            identity = None if value is None else sha256(value)
        else:
            identity, note = self._claimed(envelope)
        raw = value if not self.digest_only and value is not None and len(value) <= RAW_LIMIT else None
        return Fingerprint(offset, digest(key), identity, headers_digest(headers), timestamp, note, raw)

    def _claimed(self, envelope: Envelope) -> tuple[object, str | None]:
        """The payload a source envelope stands for: its sha256, or for a legacy one without it, fetched."""
        if envelope.sha256 is not None:
            return envelope.sha256, None
        if self.source_reader is None or not self.source_reader.policy.allows(envelope.bucket, envelope.key):
            return ("unknown", envelope.encode("lfs_version")), None
        return self._payload(self.source_reader, envelope)

    # -- the target side -------------------------------------------------------------------------------
    def target(self, msg: KafkaMessage) -> Fingerprint:
        """The fingerprint of a target record."""
        key, value, headers = msg.key(), msg.value(), headers_of(msg)
        identity: object
        note = None
        envelope = None
        if self.kind == "lfs" and value is not None:
            try:
                envelope = detect(value)
            except EnvelopeError:
                envelope = None
        if envelope is None:
            identity = None if value is None else sha256(value)
        elif envelope.bucket == self.bucket and self.target_reader is not None:
            identity, note = self._payload(self.target_reader, envelope)
        else:
            identity = envelope.sha256 or ("unknown", envelope.encode("lfs_version"))
        raw = value if not self.digest_only and value is not None and len(value) <= RAW_LIMIT else None
        offset = msg.offset() or 0
        return Fingerprint(offset, digest(key), identity, headers_digest(headers), msg.timestamp()[1], note, raw)

    def _payload(self, reader: Resolver, envelope: Envelope) -> tuple[object, str | None]:
        """The SHA-256 of the payload ``envelope`` names, verified against its claims; or why it could not be."""
        where = f"s3://{envelope.bucket}/{envelope.key}"
        try:
            if self.digest_only:
                hasher = Hasher("sha256")
                with reader.open(envelope) as stream:
                    while chunk := stream.read(_CHUNK):
                        hasher.update(chunk)
                found, size = hasher.sha256_hex(), hasher.size
            else:
                payload = reader.fetch(envelope)
                found, size = sha256(payload), len(payload)
        except LfsError as exc:
            if exc.kind not in ("checksum_mismatch", "size_mismatch", "missing_object", "bucket_not_allowed",
                                "too_large", "unverified"):  # fmt: skip
                raise
            return ("broken", where, exc.kind), f"object {where}: {exc.kind}"
        self.fetched += 1
        self.fetched_bytes += size
        return found, None


def ordered(pool: Any, fn: Callable[[Any], Any], items: Any, depth: int) -> Any:
    """``map(fn, items)`` on ``pool``, in order, with at most ``depth`` calls ahead of the consumer."""
    from collections import deque

    pending: deque[Any] = deque()
    iterator = iter(items)
    for item in iterator:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
