"""LFS (claim-check) SDK, pure part: the envelope, its detection and payload checksums.

A large Kafka record value is uploaded to S3 and replaced by a small JSON *envelope* pointing at
it: KafScale's ``kfs_lfs`` v1 shape, ``{"kfs_lfs":1,"bucket":...,"key":...,"size":...,
"sha256":...}`` plus optional ``checksum``/``checksum_alg`` (sha256, md5, crc32, none),
``content_type``, ``original_headers``, ``created_at`` and ``proxy_id``. Readers detect it with
a prefix test (:func:`is_lfs_envelope`), decode it strictly (:func:`decode_envelope`, which also
reads the legacy ``lfs_version`` shape), fetch the object and verify it against
:meth:`Envelope.expected_checksum` using a :class:`Hasher`. Writers always emit ``kfs_lfs``
first and no other fields (:meth:`Envelope.encode`). An envelope is untrusted input; nothing
here does I/O.
"""

from relay.lfs._checksum import Hasher, checksum, normalize_alg
from relay.lfs._envelope import Envelope, decode_envelope, is_lfs_envelope, looks_like_legacy_envelope
from relay.lfs._errors import ChecksumError, EnvelopeError, LfsError

__all__ = [
    "ChecksumError",
    "Envelope",
    "EnvelopeError",
    "Hasher",
    "LfsError",
    "checksum",
    "decode_envelope",
    "is_lfs_envelope",
    "looks_like_legacy_envelope",
    "normalize_alg",
]
