"""Checksums of LFS payloads: the algorithms KafScale's ``checksum_alg`` may name.

Supported: ``sha256``, ``md5``, ``crc32`` (IEEE, as :func:`zlib.crc32`, rendered as exactly 8
lowercase hex digits) and ``none`` (no checksum; the digest is ``""``). Every digest is lowercase
hex. A :class:`Hasher` always computes SHA-256 as well, because an envelope's ``sha256`` field is
the payload's SHA-256 whatever algorithm its ``checksum`` uses.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Final

from lfs._errors import LfsError

SUPPORTED_ALGS: Final[frozenset[str]] = frozenset({"sha256", "md5", "crc32", "none"})
"""Algorithm names accepted in ``checksum_alg`` (after :func:`normalize_alg`)."""

HEX_LENGTHS: Final[dict[str, int]] = {"sha256": 64, "md5": 32, "crc32": 8}
"""Length of each algorithm's hex digest (``none`` has no digest)."""

_Bytes = bytes | bytearray | memoryview


def normalize_alg(name: str) -> str:
    """Return the canonical name of a checksum algorithm.

    Case-insensitive and blind to surrounding whitespace; ``""`` means ``"sha256"`` (KafScale's
    default). Raises :class:`LfsError` for any name not in :data:`SUPPORTED_ALGS`.
    """
    alg = name.strip().lower()
    if not alg:
        return "sha256"
    if alg not in SUPPORTED_ALGS:
        shown = repr(name[:32]) + ("..." if len(name) > 32 else "")
        raise LfsError(
            "normalize checksum algorithm",
            f"unsupported algorithm {shown} (supported: crc32, md5, none, sha256)",
        )
    return alg


class Hasher:
    """Incremental checksum of a payload in one algorithm, plus its SHA-256 and size.

    Feed it with :meth:`update` as chunks arrive; :meth:`hexdigest` is the chosen algorithm's
    digest, :meth:`sha256_hex` the SHA-256 digest and :attr:`size` the number of bytes seen. Both
    digests may be read at any time (they describe the bytes so far) and updating may continue.
    """

    __slots__ = ("_alg", "_crc", "_other", "_sha256", "_size")

    def __init__(self, alg: str = "sha256") -> None:
        self._alg = normalize_alg(alg)
        self._sha256 = hashlib.sha256()
        self._other = hashlib.md5(usedforsecurity=False) if self._alg == "md5" else None
        self._crc = 0
        self._size = 0

    @property
    def alg(self) -> str:
        """The canonical name of the algorithm :meth:`hexdigest` uses."""
        return self._alg

    @property
    def size(self) -> int:
        """Number of bytes passed to :meth:`update` so far."""
        return self._size

    def update(self, data: _Bytes) -> None:
        """Add ``data`` (bytes, bytearray or a C-contiguous memoryview) to the checksums."""
        self._sha256.update(data)
        if self._other is not None:
            self._other.update(data)
        elif self._alg == "crc32":
            self._crc = zlib.crc32(data, self._crc)
        self._size += data.nbytes if isinstance(data, memoryview) else len(data)

    def hexdigest(self) -> str:
        """The chosen algorithm's lowercase hex digest; ``""`` for ``none``."""
        if self._alg == "sha256":
            return self._sha256.hexdigest()
        if self._other is not None:
            return self._other.hexdigest()
        if self._alg == "crc32":
            return f"{self._crc & 0xFFFFFFFF:08x}"
        return ""

    def sha256_hex(self) -> str:
        """The lowercase hex SHA-256 of the bytes seen, whatever :attr:`alg` is."""
        return self._sha256.hexdigest()


def checksum(data: _Bytes, alg: str = "sha256") -> str:
    """Return the lowercase hex checksum of ``data`` in ``alg`` (``""`` for ``none``)."""
    hasher = Hasher(alg)
    hasher.update(data)
    return hasher.hexdigest()
