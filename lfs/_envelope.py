"""The claim-check envelope: KafScale ``kfs_lfs`` v1, plus the legacy ``lfs_version`` shape.

Contracts:

* :class:`Envelope` validates and normalizes itself on construction, so every instance obeys the
  invariants listed on the class, whether it was decoded or built by hand.
* :meth:`Envelope.encode` writes only KafScale's fields, ``kfs_lfs`` first, compact JSON.
* :func:`decode_envelope` is total: for any input it returns an :class:`Envelope` or raises
  :class:`EnvelopeError`, never another exception type, and never quotes the value. It is strict
  about the fields it knows and, as KafScale's Go reader, ignores the fields it does not (they are
  kept in :attr:`Envelope.unknown_fields`), so a field a later KafScale adds does not stop a reader.
* A value longer than :data:`MAX_ENVELOPE_SIZE` is never an envelope: the prefix tests say no and
  :func:`decode_envelope` refuses it without parsing, so a large record value costs no parse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from lfs._checksum import HEX_LENGTHS, SUPPORTED_ALGS
from lfs._errors import EnvelopeError

EnvelopeShape = Literal["kfs_lfs", "lfs_version"]
"""Which JSON shape an envelope was read from: KafScale's ``kfs_lfs`` or the legacy one."""

MAX_ENVELOPE_SIZE: Final = 64 * 1024
"""The longest record value taken for an envelope (64 KiB). A real envelope is a few hundred bytes
(bucket, key of at most 1 KiB, digests, a few allow-listed headers); anything longer is plain data,
so detection never parses a large value."""

_MAX_SIZE: Final = 2**63 - 1  # KafScale's size is an int64
_SCAN_KFS: Final = 50  # KafScale's readers look for "kfs_lfs" in the first 50 bytes
_SCAN_LEGACY: Final = 64
_MIN_KFS_LEN: Final = 15
_ALG_LIST: Final = ", ".join(sorted(SUPPORTED_ALGS))

# JSON field name -> Envelope attribute, per shape. Any other field is kept in unknown_fields.
_KFS_FIELDS: Final[Mapping[str, str]] = {
    "kfs_lfs": "version",
    "bucket": "bucket",
    "key": "key",
    "size": "size",
    "sha256": "sha256",
    "checksum": "checksum",
    "checksum_alg": "checksum_alg",
    "content_type": "content_type",
    "original_headers": "original_headers",
    "created_at": "created_at",
    "proxy_id": "proxy_id",
}
_LEGACY_FIELDS: Final[Mapping[str, str]] = {
    "lfs_version": "version",
    "s3_bucket": "bucket",
    "s3_key": "key",
    "content_type": "content_type",
    "content_length": "size",
    "checksum_algo": "checksum_alg",
    "checksum": "checksum",
}
_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "kfs_lfs": ("bucket", "key", "size", "sha256"),
    "lfs_version": ("s3_bucket", "s3_key", "content_length"),
}
# How validation errors name an attribute, per shape (legacy values use other field names).
_LABELS: Final[Mapping[str, Mapping[str, str]]] = {
    "kfs_lfs": {"version": "kfs_lfs"},
    "lfs_version": {
        "version": "lfs_version",
        "bucket": "s3_bucket",
        "key": "s3_key",
        "size": "content_length",
        "checksum_alg": "checksum_algo",
        "sha256": "checksum",
    },
}


def _quote(name: str, limit: int = 40) -> str:
    """A field name from untrusted input, shortened and escaped for a message."""
    return repr(name[:limit]) + ("..." if len(name) > limit else "")


class _FrozenHeaders(Mapping[str, str]):
    """A read-only, hashable ``str -> str`` mapping (keeps insertion order, equality ignores it)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)

    def __getitem__(self, name: str) -> str:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


@dataclass(frozen=True)
class Envelope:
    """A pointer to an LFS payload stored in S3 (the Kafka record value that replaces it).

    Invariants, enforced on construction (violations raise :class:`EnvelopeError`):

    * ``bucket`` and ``key`` are non-empty strings; ``size`` is an ``int`` (not ``bool``) in
      ``0 .. 2**63-1``; ``version`` is 1.
    * ``sha256`` is ``str | None``: the payload's SHA-256 as 64 lowercase hex digits. It is
      required when ``shape == "kfs_lfs"``; the legacy shape only knows it when its algorithm is
      sha256, so there it may be ``None`` (then :meth:`encode` refuses until it is filled in,
      e.g. with :func:`dataclasses.replace` after hashing the payload).
    * Hex digests (``sha256``, and ``checksum`` for sha256/md5/crc32) are accepted in any case
      and stored lowercase; their length must match the algorithm (64/32/8). A ``checksum``
      with ``checksum_alg == "none"`` is kept verbatim and never compared.
    * ``checksum_alg`` is stored normalized (lowercase, one of sha256/md5/crc32/none) or ``None``;
      md5 and crc32 require ``checksum``; with sha256 (or no algorithm) ``checksum`` and
      ``sha256`` must agree when both are set, and at least one must be set.
    * Optional strings that are empty (``""``) are stored as ``None``, like Go's ``omitempty``.
    * ``original_headers`` is stored as a read-only, hashable ``Mapping[str, str]`` (an empty
      mapping becomes ``None``), so an Envelope is hashable.
    * All strings are valid Unicode (no lone surrogates), so :meth:`encode` cannot fail on them.
    * ``shape`` records where the envelope came from; it is not compared (a legacy envelope and
      its ``kfs_lfs`` re-encoding are equal) and :meth:`encode` always writes ``kfs_lfs``.
    * ``unknown_fields`` holds the fields of the decoded value that its shape does not define
      (name -> JSON value), read-only, or ``None``. They are ignored for verification, not
      compared, not hashed, and never written: KafScale's Python and Java readers refuse
      unknown fields, so :meth:`encode` writes KafScale's fields only.
    """

    bucket: str
    key: str
    size: int
    sha256: str | None
    checksum: str | None = None
    checksum_alg: str | None = None
    content_type: str | None = None
    original_headers: Mapping[str, str] | None = None
    created_at: str | None = None
    proxy_id: str | None = None
    version: int = 1
    shape: EnvelopeShape = field(default="kfs_lfs", compare=False)
    unknown_fields: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    def expected_checksum(self) -> tuple[str, str]:
        """The ``(alg, hex)`` a reader verifies the payload against (KafScale's consumer rule).

        For sha256 or no algorithm: ``checksum`` if set, else ``sha256``; for md5/crc32:
        ``checksum``; for none: ``("none", "")``, meaning skip verification.
        """
        alg = self.checksum_alg or "sha256"
        if alg == "none":
            return ("none", "")
        expected = (self.checksum or self.sha256) if alg == "sha256" else self.checksum
        if expected is None:  # unreachable: construction guarantees it
            raise EnvelopeError(f"no {alg} checksum to verify", field="checksum", op="verify envelope")
        return (alg, expected)

    def digests(self) -> tuple[tuple[str, str], ...]:
        """Every ``(alg, hex)`` the payload must match: what a reader verifies, and all it can verify.

        :meth:`expected_checksum` unless its algorithm is ``none``, and ``sha256`` whenever it is
        set (KafScale writes it whatever ``checksum_alg`` says, ``none`` included). Empty only
        when nothing can be checked: a legacy envelope with ``checksum_algo`` none.
        """
        alg, expected = self.expected_checksum()
        out: list[tuple[str, str]] = [] if alg == "none" else [(alg, expected)]
        if self.sha256 is not None and alg != "sha256":
            out.append(("sha256", self.sha256))
        return tuple(out)

    def encode(self, shape: EnvelopeShape = "kfs_lfs") -> bytes:
        """Serialize as a record value (UTF-8 compact JSON), by default KafScale's ``kfs_lfs`` v1.

        ``kfs_lfs``: the value starts with ``{"kfs_lfs":1,``, then bucket, key, size, sha256,
        then checksum, checksum_alg, content_type, original_headers, created_at, proxy_id when
        set; no other fields (``unknown_fields`` are not written). Raises :class:`EnvelopeError`
        when ``sha256`` is unknown (legacy envelopes). Write this shape; ``lfs_version`` exists for readers and tests.

        ``lfs_version`` (the legacy, documented-only shape): lfs_version, s3_bucket, s3_key,
        content_type, content_length, checksum_algo (always written), checksum (the digest
        :meth:`expected_checksum` verifies; for ``none`` the verbatim ``checksum`` if any). That
        shape has no place for ``original_headers``, ``created_at`` or ``proxy_id``: an envelope
        with any of them raises :class:`EnvelopeError` rather than losing them. ``sha256`` is
        only carried when it is the checksum.
        """
        if shape == "lfs_version":
            return self._encode_legacy()
        if shape != "kfs_lfs":
            raise EnvelopeError("shape must be 'kfs_lfs' or 'lfs_version'", field="shape", op="encode envelope")
        if self.sha256 is None:
            raise EnvelopeError(
                "field 'sha256' is required to write a kfs_lfs envelope", field="sha256", op="encode envelope"
            )
        doc: dict[str, object] = {
            "kfs_lfs": self.version,
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
        }
        optional: tuple[tuple[str, object], ...] = (
            ("checksum", self.checksum),
            ("checksum_alg", self.checksum_alg),
            ("content_type", self.content_type),
            ("original_headers", dict(self.original_headers) if self.original_headers else None),
            ("created_at", self.created_at),
            ("proxy_id", self.proxy_id),
        )
        doc.update((name, value) for name, value in optional if value is not None)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _encode_legacy(self) -> bytes:
        for attr in ("original_headers", "created_at", "proxy_id"):
            if getattr(self, attr) is not None:
                raise EnvelopeError(
                    f"field '{attr}' cannot be written in the lfs_version shape", field=attr, op="encode envelope"
                )
        alg, digest = self.expected_checksum()
        doc: dict[str, object] = {
            "lfs_version": self.version,
            "s3_bucket": self.bucket,
            "s3_key": self.key,
        }
        if self.content_type is not None:
            doc["content_type"] = self.content_type
        doc["content_length"] = self.size
        doc["checksum_algo"] = alg
        checksum = digest if alg != "none" else self.checksum
        if checksum is not None:
            doc["checksum"] = checksum
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _validate(env: Envelope) -> None:
    """Check an Envelope's invariants and normalize its fields in place (see :class:`Envelope`)."""
    if env.shape not in _LABELS:
        raise EnvelopeError("shape must be 'kfs_lfs' or 'lfs_version'", field="shape", op="validate envelope")
    fields = _Fields(env)
    _validate_location(fields)
    _validate_digests(fields)
    _validate_headers(fields)
    _validate_unknown_fields(env)


class _Fields:
    """An Envelope under validation: reads its attributes, writes them back normalized, and names
    them in errors as the envelope's shape spells them."""

    def __init__(self, env: Envelope) -> None:
        self.env = env
        self._labels = _LABELS[env.shape]

    def fail(self, attr: str, problem: str) -> EnvelopeError:
        label = self._labels.get(attr, attr)
        return EnvelopeError(f"field '{label}' {problem}", field=label, op="validate envelope")

    def text(self, attr: str, *, required: bool = False) -> str | None:
        """The attribute as a valid Unicode string, ``None`` when unset or empty."""
        value = getattr(self.env, attr)
        if value is None or value == "":
            if required:
                raise self.fail(attr, "is required and must be a non-empty string")
            return None
        if not isinstance(value, str):
            raise self.fail(attr, "must be a string")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise self.fail(attr, "is not valid Unicode") from None
        return value

    def hex_digest(self, attr: str, digest_alg: str) -> str | None:
        """The attribute as a lowercase hex digest of ``digest_alg`` (verbatim for ``none``)."""
        value = self.text(attr)
        if value is None or digest_alg == "none":
            return value
        lowered = value.lower()
        width = HEX_LENGTHS[digest_alg]
        if len(lowered) != width or lowered.strip("0123456789abcdef"):
            raise self.fail(attr, f"must be {width} hex digits ({digest_alg})")
        return lowered

    def store(self, attr: str, value: object) -> None:
        object.__setattr__(self.env, attr, value)


def _validate_location(fields: _Fields) -> None:
    """The version, where the payload is (bucket, key), its size and the optional strings."""
    env = fields.env
    if type(env.version) is not int or env.version != 1:
        raise fields.fail("version", "must be the integer 1")
    fields.text("bucket", required=True)
    fields.text("key", required=True)
    if type(env.size) is not int or not 0 <= env.size <= _MAX_SIZE:
        raise fields.fail("size", "must be an integer from 0 to 2**63-1")
    for attr in ("content_type", "created_at", "proxy_id"):
        fields.store(attr, fields.text(attr))


def _validate_digests(fields: _Fields) -> None:
    """``checksum_alg``, ``sha256`` and ``checksum``: each well-formed, and together enough to verify."""
    alg = fields.text("checksum_alg")
    if alg is not None:
        alg = alg.strip().lower() or None
        if alg is not None and alg not in SUPPORTED_ALGS:
            raise fields.fail("checksum_alg", f"must be one of {_ALG_LIST}")
    fields.store("checksum_alg", alg)
    effective = alg or "sha256"

    sha256 = fields.hex_digest("sha256", "sha256")
    checksum = fields.hex_digest("checksum", effective)
    fields.store("sha256", sha256)
    fields.store("checksum", checksum)
    if sha256 is None and fields.env.shape == "kfs_lfs":
        raise fields.fail("sha256", "is required")
    if effective in ("md5", "crc32") and checksum is None:
        raise fields.fail("checksum", f"is required when the algorithm is {effective}")
    if effective == "sha256":
        if checksum is None and sha256 is None:
            raise fields.fail("checksum", "is required (no sha256 to verify against)")
        if checksum is not None and sha256 is not None and checksum != sha256:
            raise fields.fail("checksum", "disagrees with field 'sha256' (both are SHA-256)")


def _validate_headers(fields: _Fields) -> None:
    """``original_headers``: strings to strings, stored read-only (``None`` when empty)."""
    headers = fields.env.original_headers
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise fields.fail("original_headers", "must be an object of strings")
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise fields.fail("original_headers", "must map strings to strings")
        try:
            name.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise fields.fail("original_headers", "is not valid Unicode") from None
    fields.store("original_headers", _FrozenHeaders(headers) if headers else None)


def _validate_unknown_fields(env: Envelope) -> None:
    """``unknown_fields``: names its shape does not define, stored read-only (``None`` when empty)."""
    unknown = env.unknown_fields
    if unknown is None:
        return
    if not isinstance(unknown, Mapping) or not all(isinstance(name, str) for name in unknown):
        raise EnvelopeError(
            "unknown_fields must map field names to values", field="unknown_fields", op="validate envelope"
        )
    known = _KFS_FIELDS if env.shape == "kfs_lfs" else _LEGACY_FIELDS
    clash = next((name for name in unknown if name in known), None)
    if clash is not None:
        raise EnvelopeError(
            f"unknown_fields must not hold the {env.shape} field {_quote(clash)}",
            field="unknown_fields",
            op="validate envelope",
        )
    object.__setattr__(env, "unknown_fields", MappingProxyType(dict(unknown)) if unknown else None)


def is_lfs_envelope(value: bytes | bytearray | memoryview | None) -> bool:
    """KafScale's detection test: ``{`` first, >= 15 bytes, ``"kfs_lfs"`` in 50 bytes; and at most
    :data:`MAX_ENVELOPE_SIZE` bytes (ours: a longer value is plain data, never parsed).

    A prefix test, not a parse: a value that passes but does not decode is an invalid envelope
    (:func:`decode_envelope` raises), not plain data.
    """
    if value is None or not _MIN_KFS_LEN <= len(value) <= MAX_ENVELOPE_SIZE:
        return False
    head = bytes(value[:_SCAN_KFS])
    return head.startswith(b"{") and b'"kfs_lfs"' in head


def looks_like_legacy_envelope(value: bytes | bytearray | memoryview | None) -> bool:
    """Cheap prefix test for the legacy shape: ``{`` first, ``"lfs_version"`` in 64 bytes, and at
    most :data:`MAX_ENVELOPE_SIZE` bytes."""
    if value is None or len(value) > MAX_ENVELOPE_SIZE:
        return False
    head = bytes(value[:_SCAN_LEGACY])
    return head.startswith(b"{") and b'"lfs_version"' in head


def _object_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, rejecting duplicate names (parsers disagree on which one wins)."""
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise EnvelopeError(f"duplicate field {_quote(name)}", field=name[:40])
        obj[name] = value
    return obj


def _reject_constant(name: str) -> Any:
    """``NaN``/``Infinity`` are not JSON; Python's parser accepts them unless told otherwise."""
    raise EnvelopeError(f"value is not valid JSON (contains {name})")


def _json_kind(doc: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if doc is None:
        return "null"
    if isinstance(doc, bool):
        return "boolean"
    return {list: "array", str: "string", int: "number", float: "number"}.get(type(doc), "value")


def _parse(value: object) -> dict[str, Any]:
    """UTF-8 + JSON parse of a record value into an object; every failure is an EnvelopeError."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EnvelopeError("value must be bytes")
    length = value.nbytes if isinstance(value, memoryview) else len(value)
    if length > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"value is {length} bytes, longer than any envelope ({MAX_ENVELOPE_SIZE} bytes at most)")
    problem: str
    try:
        doc = json.loads(bytes(value).decode("utf-8"), object_pairs_hook=_object_hook, parse_constant=_reject_constant)
    except EnvelopeError:
        raise
    except UnicodeDecodeError as exc:
        problem = f"value is not valid UTF-8 (bad byte at offset {exc.start})"
    except json.JSONDecodeError as exc:
        problem = f"value is not valid JSON ({exc.msg} at char {exc.pos})"
    except RecursionError:
        problem = "value is nested too deeply"
    except (ValueError, TypeError, OverflowError):  # e.g. an integer longer than Python will parse
        problem = "value is not valid JSON (a number is too long)"
    else:
        if not isinstance(doc, dict):
            raise EnvelopeError(f"value is a JSON {_json_kind(doc)}, not an object")
        return doc
    # Raised outside the except blocks so the parser's exception (which may quote the value) is
    # not kept as __context__.
    raise EnvelopeError(problem)


def decode_envelope(value: bytes | bytearray | memoryview) -> Envelope:
    """Decode a record value in the ``kfs_lfs`` v1 or legacy ``lfs_version`` shape.

    Rejects, with an :class:`EnvelopeError` naming the problem: values longer than
    :data:`MAX_ENVELOPE_SIZE`, non-UTF-8, non-JSON or non-object values, duplicate fields,
    versions other than 1 (the message names the version), missing required fields (null counts
    as missing; null optional fields count as absent), and any value breaking the
    :class:`Envelope` invariants. Fields the shape does not define are accepted and ignored, as
    KafScale's Go reader does, and kept in :attr:`Envelope.unknown_fields`. Legacy fields map as
    s3_bucket->bucket, s3_key->key, content_length->size, checksum_algo->checksum_alg; ``sha256``
    is the legacy ``checksum`` when the algorithm is sha256 (or absent), else ``None``. The legacy
    shape requires ``checksum`` unless its algorithm is ``none``.
    """
    doc = _parse(value)
    shape: EnvelopeShape
    if "kfs_lfs" in doc:
        shape, names = "kfs_lfs", _KFS_FIELDS
    elif "lfs_version" in doc:
        shape, names = "lfs_version", _LEGACY_FIELDS
    else:
        raise EnvelopeError("value has neither a 'kfs_lfs' nor an 'lfs_version' field")

    version = doc[shape]
    if type(version) is not int:
        raise EnvelopeError(f"field '{shape}' must be the integer 1", field=shape)
    if version != 1:
        shown = str(version) if abs(version) < 10**9 else "(out of range)"
        raise EnvelopeError(f"unsupported {shape} version {shown}; only version 1 is supported", field=shape)
    for name in _REQUIRED[shape]:
        if doc.get(name) is None:
            raise EnvelopeError(f"missing required field '{name}'", field=name)

    kwargs: dict[str, Any] = {names[name]: item for name, item in doc.items() if name in names and item is not None}
    kwargs["unknown_fields"] = {name: item for name, item in doc.items() if name not in names} or None
    if shape == "lfs_version":
        alg = kwargs.get("checksum_alg")
        is_sha256 = alg is None or (isinstance(alg, str) and alg.strip().lower() in ("", "sha256"))
        kwargs["sha256"] = kwargs.get("checksum") if is_sha256 else None
    try:
        return Envelope(shape=shape, **kwargs)
    except EnvelopeError as exc:
        reason, bad_field = str(exc.cause), exc.field
    raise EnvelopeError(reason, field=bad_field)
