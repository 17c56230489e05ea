"""LFS (claim-check) SDK: the envelope, its detection, payload checksums, and reading payloads back.

A large Kafka record value is uploaded to S3 and replaced by a small JSON *envelope* pointing at
it: KafScale's ``kfs_lfs`` v1 shape, ``{"kfs_lfs":1,"bucket":...,"key":...,"size":...,
"sha256":...}`` plus optional ``checksum``/``checksum_alg`` (sha256, md5, crc32, none),
``content_type``, ``original_headers``, ``created_at`` and ``proxy_id``. Readers detect it with
a prefix test (:func:`is_lfs_envelope`; :func:`detect` also finds the legacy ``lfs_version``
shape), decode it (:func:`decode_envelope`, both shapes: strict about the fields it knows, and,
as KafScale's Go reader, ignoring others, kept in :attr:`Envelope.unknown_fields`), fetch the
object and verify it against every digest of :meth:`Envelope.digests` using a :class:`Hasher`.
A value longer than :data:`MAX_ENVELOPE_SIZE` (64 KiB) is never an envelope. Writers always emit
``kfs_lfs`` first and no other fields (:meth:`Envelope.encode`). An envelope is untrusted input.

Pure part (no I/O): :class:`Envelope`, :func:`decode_envelope`, :func:`detect`,
:func:`is_lfs_envelope`, :func:`looks_like_legacy_envelope`, :class:`Hasher`, :func:`checksum`,
:func:`normalize_alg`, :class:`BucketPolicy`.

Reading payloads (S3, via boto3): :class:`Resolver` fetches only from the buckets and key prefixes
it was given, caps and verifies what it reads, and retries only transient failures;
:meth:`Resolver.unwrap` turns any record value into ``(envelope or None, payload)``;
:class:`Record` resolves lazily and caches; :class:`PayloadStream` streams a payload and verifies
it at its end. Every failure is an :class:`LfsError` with a ``kind``::

    resolver = Resolver(boto3.client("s3"), allowed_buckets=["my-lfs-bucket"])
    envelope, payload = resolver.unwrap(msg.value())  # envelope is None for a plain record
"""

from lfs._checksum import Hasher, checksum, normalize_alg
from lfs._envelope import MAX_ENVELOPE_SIZE, Envelope, decode_envelope, is_lfs_envelope, looks_like_legacy_envelope
from lfs._errors import (
    ChecksumError,
    EnvelopeError,
    LfsError,
    ObjectNotAllowedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    SizeError,
    StorageError,
    UnverifiedError,
)
from lfs._record import Record
from lfs._resolver import BucketPolicy, BucketRule, PayloadStream, Resolver, detect

__all__ = [
    "MAX_ENVELOPE_SIZE",
    "BucketPolicy",
    "BucketRule",
    "ChecksumError",
    "Envelope",
    "EnvelopeError",
    "Hasher",
    "LfsError",
    "ObjectNotAllowedError",
    "ObjectNotFoundError",
    "ObjectTooLargeError",
    "PayloadStream",
    "Record",
    "Resolver",
    "SizeError",
    "StorageError",
    "UnverifiedError",
    "checksum",
    "decode_envelope",
    "detect",
    "is_lfs_envelope",
    "looks_like_legacy_envelope",
    "normalize_alg",
]
