"""Unit tests of lfs checksums: algorithms, rendering, the incremental Hasher, errors."""

from __future__ import annotations

import hashlib
import pickle
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lfs import ChecksumError, EnvelopeError, Hasher, LfsError, checksum, normalize_alg

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
ABC_MD5 = "900150983cd24fb0d6963f7d28e17f72"
ABC_CRC32 = "352441c2"
LEADING_ZERO_INPUT = b"62"  # zlib.crc32(b"62") == 0x0012d20a: two leading zero nibbles


def test_sha256_known_vector() -> None:
    """checksum() with sha256 returns the standard lowercase digest of b"abc"."""
    assert checksum(b"abc", "sha256") == ABC_SHA256


def test_md5_known_vector() -> None:
    """checksum() with md5 returns the standard lowercase digest of b"abc"."""
    assert checksum(b"abc", "md5") == ABC_MD5


def test_crc32_known_vector() -> None:
    """checksum() with crc32 returns the IEEE CRC-32 of b"abc" as hex."""
    assert checksum(b"abc", "crc32") == ABC_CRC32


def test_crc32_is_zero_padded_to_eight_hex_digits() -> None:
    """A CRC-32 below 0x10000000 is still rendered as exactly 8 hex digits, zero padded."""
    assert zlib.crc32(LEADING_ZERO_INPUT) < 0x10000000
    assert checksum(LEADING_ZERO_INPUT, "crc32") == "0012d20a"


def test_crc32_of_empty_input_is_all_zeros() -> None:
    """The CRC-32 of no bytes is rendered as eight zeros."""
    assert checksum(b"", "crc32") == "00000000"


def test_none_algorithm_digest_is_empty() -> None:
    """The none algorithm produces an empty digest."""
    assert checksum(b"abc", "none") == ""


def test_default_algorithm_is_sha256() -> None:
    """checksum() without an algorithm computes SHA-256."""
    assert checksum(b"abc") == ABC_SHA256


@pytest.mark.parametrize("name", ["sha256", "SHA256", " Sha256 ", ""])
def test_normalize_alg_sha256_spellings(name: str) -> None:
    """normalize_alg is case-insensitive, ignores surrounding spaces and maps '' to sha256."""
    assert normalize_alg(name) == "sha256"


@pytest.mark.parametrize(("name", "expected"), [("MD5", "md5"), ("Crc32", "crc32"), ("NONE", "none")])
def test_normalize_alg_other_algorithms(name: str, expected: str) -> None:
    """normalize_alg returns the lowercase canonical name of each supported algorithm."""
    assert normalize_alg(name) == expected


@pytest.mark.parametrize("name", ["sha1", "crc32c", "sha-256", "xxhash"])
def test_normalize_alg_rejects_unknown(name: str) -> None:
    """normalize_alg raises LfsError for an algorithm it does not support."""
    with pytest.raises(LfsError, match="unsupported algorithm"):
        normalize_alg(name)


def test_hasher_rejects_unknown_algorithm() -> None:
    """Hasher() raises LfsError for an unsupported algorithm."""
    with pytest.raises(LfsError):
        Hasher("sha512")


@pytest.mark.parametrize("alg", ["sha256", "md5", "crc32", "none"])
def test_hasher_always_computes_sha256(alg: str) -> None:
    """Whatever the algorithm, Hasher.sha256_hex() is the payload's SHA-256."""
    hasher = Hasher(alg)
    hasher.update(b"abc")
    assert hasher.sha256_hex() == ABC_SHA256


def test_hasher_counts_bytes_seen() -> None:
    """Hasher.size is the total number of bytes passed to update()."""
    hasher = Hasher("crc32")
    for chunk in (b"ab", b"", b"cde"):
        hasher.update(chunk)
    assert hasher.size == 5


def test_hasher_accepts_memoryview_and_bytearray() -> None:
    """update() accepts memoryview and bytearray and hashes their bytes."""
    hasher = Hasher("md5")
    hasher.update(memoryview(b"ab"))
    hasher.update(bytearray(b"c"))
    assert (hasher.hexdigest(), hasher.size) == (ABC_MD5, 3)


def test_hasher_counts_bytes_of_wide_memoryview() -> None:
    """size counts bytes, not items, for a memoryview with a multi-byte format."""
    hasher = Hasher("sha256")
    hasher.update(memoryview(b"\x00" * 8).cast("I"))
    assert hasher.size == 8


def test_hasher_exposes_normalized_alg() -> None:
    """Hasher.alg is the canonical name of the algorithm it was given."""
    assert Hasher("CRC32").alg == "crc32"


@given(data=st.binary(max_size=2048), cuts=st.lists(st.integers(0, 2048), max_size=5))
@pytest.mark.parametrize("alg", ["sha256", "md5", "crc32"])
def test_hasher_incremental_equals_one_shot(alg: str, data: bytes, cuts: list[int]) -> None:
    """Feeding a payload in arbitrary chunks gives the same digests as hashing it at once."""
    hasher = Hasher(alg)
    start = 0
    for cut in sorted(min(c, len(data)) for c in cuts):
        hasher.update(data[start:cut])
        start = cut
    hasher.update(data[start:])
    assert (hasher.hexdigest(), hasher.sha256_hex(), hasher.size) == (
        checksum(data, alg),
        hashlib.sha256(data).hexdigest(),
        len(data),
    )


@given(data=st.binary(max_size=256))
def test_crc32_always_eight_lowercase_hex(data: bytes) -> None:
    """Every CRC-32 rendering is 8 lowercase hex digits equal to zlib.crc32."""
    digest = checksum(data, "crc32")
    assert len(digest) == 8
    assert int(digest, 16) == zlib.crc32(data)
    assert digest == digest.lower()


def test_lfs_error_message_names_operation_and_cause() -> None:
    """str(LfsError) is one sentence naming the operation and the cause's type and text."""
    err = LfsError("upload", TimeoutError("read timed out"))
    assert str(err) == "upload failed: TimeoutError: read timed out"


def test_lfs_error_chains_exception_cause() -> None:
    """An exception given as cause becomes the LfsError's __cause__."""
    cause = OSError("disk")
    assert LfsError("spool", cause).__cause__ is cause


def test_checksum_error_attributes() -> None:
    """ChecksumError keeps expected, actual and alg and is an LfsError."""
    err = ChecksumError("aa", "bb", alg="md5")
    assert (err.expected, err.actual, err.alg, isinstance(err, LfsError)) == ("aa", "bb", "md5", True)


def test_checksum_error_defaults_to_sha256() -> None:
    """ChecksumError's algorithm defaults to sha256 and the message shows both digests."""
    err = ChecksumError("aa", "bb")
    assert (err.alg, str(err)) == (
        "sha256",
        "verify checksum failed: sha256 mismatch, expected aa but got bb",
    )


@pytest.mark.parametrize(
    "err",
    [LfsError("upload", "boom"), ChecksumError("aa", "bb", "crc32"), EnvelopeError("bad size", field="size")],
)
def test_errors_survive_pickling(err: LfsError) -> None:
    """Each error type pickles and unpickles to the same type and message."""
    clone = pickle.loads(pickle.dumps(err))
    assert (type(clone), str(clone)) == (type(err), str(err))
