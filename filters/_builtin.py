"""The built-in filters: header, key, size, json, sample and time.

Common rules:

* Every built-in takes ``invert: true``, which turns the filter's test around: records that pass
  the test are dropped and the others kept. Explicit policies (``on_invalid`` of ``json``,
  ``null_key: keep|drop`` of ``sample``) are applied as written and are not inverted.
* Regular expressions use Python's ``re`` syntax and ``search`` semantics: they match anywhere in
  the text unless anchored (``^...$``; ``\\A...\\Z`` to exclude a trailing newline). Bytes (keys,
  header values) are matched as UTF-8 text; bytes that are not valid UTF-8 are kept as lone
  surrogates (``surrogateescape``), so they match nothing but ``.`` and negated classes.
* Unknown config keys are rejected at start-up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from hashlib import blake2b
from typing import Final

from filters._errors import FilterConfigError
from filters._options import check_keys, choice, flag, fraction, one_of, regex, size, text, timestamp_ms
from filters._protocol import ConsumedRecord
from relay.message import Message

_INVERT: Final = "invert"
_DECODE_ERRORS: Final = "surrogateescape"


def _as_text(data: bytes) -> str:
    return data.decode("utf-8", _DECODE_ERRORS)


class HeaderFilter:
    """``type: header``: test one record header.

    Config: ``header: NAME`` and exactly one of

    * ``equals: VALUE``: the header's value is exactly ``VALUE`` (UTF-8 encoded);
    * ``matches: REGEX``: the header's value matches ``REGEX``;
    * ``exists: true`` (or ``false``): the header is present (absent), with any value, null included.

    When a header occurs more than once, ``equals`` and ``matches`` look at the last occurrence
    (like :meth:`Message.header`). A header with a null value never equals or matches anything.
    """

    _KEYS: Final = frozenset({"header", "equals", "matches", "exists", _INVERT})

    def __init__(self, config: Mapping[str, object]) -> None:
        check_keys(config, "header", self._KEYS)
        self._header = text(config, "header")
        self._invert = flag(config, _INVERT, False)
        mode = one_of(config, "header", ("equals", "matches", "exists"))
        self._test: Callable[[Sequence[tuple[str, bytes | None]]], bool]
        if mode == "equals":
            value = config["equals"]
            if not isinstance(value, str):
                raise FilterConfigError("equals", "expected a string (quote numbers and booleans in YAML)", value)
            self._equals = value.encode()
            self._test = self._test_equals
        elif mode == "matches":
            self._pattern = regex(config, "matches")
            self._test = self._test_matches
        else:
            self._exists = flag(config, "exists", True)
            self._test = self._test_exists

    def _last(self, headers: Sequence[tuple[str, bytes | None]]) -> bytes | None:
        name = self._header
        for key, value in reversed(headers):
            if key == name:
                return value
        return None

    def _test_equals(self, headers: Sequence[tuple[str, bytes | None]]) -> bool:
        return self._last(headers) == self._equals

    def _test_matches(self, headers: Sequence[tuple[str, bytes | None]]) -> bool:
        value = self._last(headers)
        return value is not None and self._pattern.search(_as_text(value)) is not None

    def _test_exists(self, headers: Sequence[tuple[str, bytes | None]]) -> bool:
        name = self._header
        return any(key == name for key, _ in headers) == self._exists

    def __call__(self, message: Message) -> bool:
        return self._test(message.headers) != self._invert

    def keep_consumed(self, record: ConsumedRecord) -> bool:
        """As ``__call__``, on the record as consumed."""
        return self._test(record.headers() or ()) != self._invert


class KeyFilter:
    """``type: key``: the record key matches a regular expression.

    Config: ``matches: REGEX``. A null key matches nothing (so ``invert: true`` keeps it).
    """

    _KEYS: Final = frozenset({"matches", _INVERT})

    def __init__(self, config: Mapping[str, object]) -> None:
        check_keys(config, "key", self._KEYS)
        self._pattern = regex(config, "matches")
        self._invert = flag(config, _INVERT, False)

    def _keep(self, key: bytes | None) -> bool:
        matched = key is not None and self._pattern.search(_as_text(key)) is not None
        return matched != self._invert

    def __call__(self, message: Message) -> bool:
        return self._keep(message.key)

    def keep_consumed(self, record: ConsumedRecord) -> bool:
        """As ``__call__``, on the record as consumed."""
        return self._keep(record.key())


class SizeFilter:
    """``type: size``: the record value's length in bytes is within ``[min, max]``.

    Config: ``min`` and/or ``max``, both inclusive, as sizes (``512``, ``1KiB``, ``10MB``). A null
    value (a tombstone) has length 0.
    """

    _KEYS: Final = frozenset({"min", "max", _INVERT})

    def __init__(self, config: Mapping[str, object]) -> None:
        check_keys(config, "size", self._KEYS)
        low = size(config, "min")
        high = size(config, "max")
        if low is None and high is None:
            raise FilterConfigError("", "a 'size' filter needs min, max or both")
        if low is not None and high is not None and high < low:
            raise FilterConfigError("max", f"must not be less than min ({low} bytes)", config["max"])
        self._min = low or 0
        self._max = high
        self._invert = flag(config, _INVERT, False)

    def _keep(self, length: int) -> bool:
        inside = length >= self._min and (self._max is None or length <= self._max)
        return inside != self._invert

    def __call__(self, message: Message) -> bool:
        return self._keep(len(message.value) if message.value is not None else 0)

    def keep_consumed(self, record: ConsumedRecord) -> bool:
        """As ``__call__``, on the record as consumed (whose ``len()`` is its value's, 0 for null)."""
        return self._keep(len(record))


_ABSENT: Final = object()
_JSON_SCALARS = str | int | float | bool | None
_DIGITS: Final = re.compile(r"[0-9]+", re.ASCII)


def _json_equal(expected: object, actual: object) -> bool:
    """JSON equality of a scalar: ``1`` equals ``1.0``, but ``true`` equals neither ``1`` nor ``"true"``."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def _json_text(value: object) -> str | None:
    """The text a regex sees: a string as is, other scalars in JSON form; objects and arrays: None."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


class JsonFilter:
    """``type: json``: a field of the JSON record value.

    Config:

    * ``field: a.b.c``: a dotted path into the value's objects; a part made of digits also
      indexes an array (``items.0.sku``). Keys that contain a dot cannot be reached.
    * exactly one of ``equals: SCALAR`` (JSON equality: ``1`` equals ``1.0``, ``true`` is not
      ``1``, ``null`` equals only a present null), ``matches: REGEX`` (on a string field as is,
      on a number, boolean or null in its JSON form, never on an object or array), or
      ``exists: true|false`` (the field is present, with any value, or absent).
    * ``on_invalid: drop|keep|error`` (default ``drop``): what to do with a value that is not
      JSON (including a null value). ``error`` raises, which the filter's ``on_error`` handles.
    """

    _KEYS: Final = frozenset({"field", "equals", "matches", "exists", "on_invalid", _INVERT})

    def __init__(self, config: Mapping[str, object]) -> None:
        check_keys(config, "json", self._KEYS)
        field = text(config, "field")
        parts = field.split(".")
        if not all(parts):
            raise FilterConfigError("field", "expected a dotted path like a.b.c, with no empty part", field)
        self._path = tuple((part, int(part) if _DIGITS.fullmatch(part) else None) for part in parts)
        mode = one_of(config, "json", ("equals", "matches", "exists"))
        self._test: Callable[[object], bool]
        if mode == "equals":
            expected = config["equals"]
            if not isinstance(expected, _JSON_SCALARS) or (isinstance(expected, float) and expected != expected):
                raise FilterConfigError(
                    "equals", "expected a JSON scalar (a string, number, true, false or null)", expected
                )
            self._expected = expected
            self._test = self._test_equals
        elif mode == "matches":
            self._pattern = regex(config, "matches")
            self._test = self._test_matches
        else:
            self._exists = flag(config, "exists", True)
            self._test = self._test_exists
        self._on_invalid = choice(config, "on_invalid", ("drop", "keep", "error"), "drop")
        self._invert = flag(config, _INVERT, False)

    def _resolve(self, document: object) -> object:
        for key, index in self._path:
            if isinstance(document, dict):
                if key not in document:
                    return _ABSENT
                document = document[key]
            elif isinstance(document, list) and index is not None and index < len(document):
                document = document[index]
            else:
                return _ABSENT
        return document

    def _test_equals(self, found: object) -> bool:
        return found is not _ABSENT and _json_equal(self._expected, found)

    def _test_matches(self, found: object) -> bool:
        rendered = None if found is _ABSENT else _json_text(found)
        return rendered is not None and self._pattern.search(rendered) is not None

    def _test_exists(self, found: object) -> bool:
        return (found is not _ABSENT) == self._exists

    def _invalid(self, reason: str) -> bool:
        if self._on_invalid == "error":
            raise ValueError(f"record value is not JSON ({reason})")
        return self._on_invalid == "keep"

    def __call__(self, message: Message) -> bool:
        return self._keep(message.value)

    def keep_consumed(self, record: ConsumedRecord) -> bool:
        """As ``__call__``, on the record as consumed."""
        return self._keep(record.value())

    def _keep(self, value: bytes | None) -> bool:
        if value is None:
            return self._invalid("it is null")
        try:
            document = json.loads(value)
        except json.JSONDecodeError as err:
            return self._invalid(f"{err.msg} at line {err.lineno} column {err.colno}")
        except UnicodeDecodeError:
            return self._invalid("it is not UTF-8, UTF-16 or UTF-32 text")
        except (ValueError, RecursionError) as err:
            return self._invalid(type(err).__name__)
        return self._test(self._resolve(document)) != self._invert


_HASH_SPACE: Final = 2.0**64
_MAX_SEED_BYTES: Final = 64


class SampleFilter:
    """``type: sample``: keep a deterministic ``fraction`` of records, chosen by key.

    Config:

    * ``fraction: 0..1``: the share of keys kept. Every record with the same key gets the same
      decision, in every run: a key is kept when the first 8 bytes of its BLAKE2b digest, read as
      a big-endian unsigned integer, are below ``fraction * 2**64``.
    * ``seed: TEXT`` (optional, at most 64 bytes of UTF-8): keys the BLAKE2b hash, to pick a
      different (still deterministic) sample. Same seed, same sample.
    * ``null_key: by_offset|keep|drop`` (default ``by_offset``): records without a key are kept,
      dropped, or sampled by their source coordinates (topic, partition and offset, which are
      the same on every source cluster of a pool), so a keyless topic is sampled too.

    ``invert: true`` keeps exactly the records the same config without it would drop: two
    filters that differ only in ``invert`` split a stream in two.
    """

    _KEYS: Final = frozenset({"fraction", "seed", "null_key", _INVERT})

    def __init__(self, config: Mapping[str, object]) -> None:
        check_keys(config, "sample", self._KEYS)
        self._threshold = int(fraction(config, "fraction") * _HASH_SPACE)
        seed = b""
        if "seed" in config:
            seed = text(config, "seed").encode()
            if len(seed) > _MAX_SEED_BYTES:
                raise FilterConfigError("seed", f"must be at most {_MAX_SEED_BYTES} bytes of UTF-8", config["seed"])
        self._seed = seed
        self._null_key = choice(config, "null_key", ("by_offset", "keep", "drop"), "by_offset")
        self._invert = flag(config, _INVERT, False)

    def _chosen(self, data: bytes) -> bool:
        digest = blake2b(data, digest_size=8, key=self._seed).digest()
        return int.from_bytes(digest, "big") < self._threshold

    def _keep(self, key: bytes | None, coordinates: Callable[[], tuple[str, int, int]]) -> bool:
        if key is None:
            if self._null_key != "by_offset":
                return self._null_key == "keep"
            topic, partition, offset = coordinates()
            key = f"{topic}\0{partition}\0{offset}".encode()
        return self._chosen(key) != self._invert

    def __call__(self, message: Message) -> bool:
        return self._keep(message.key, message.coordinates_key)

    def keep_consumed(self, record: ConsumedRecord) -> bool:
        """As ``__call__``, on the record as consumed."""
        return self._keep(record.key(), lambda: (record.topic() or "", record.partition() or 0, record.offset() or 0))


class TimeFilter:
    """``type: time``: the record timestamp is within ``[from, to)``.

    Config: ``from`` (inclusive) and/or ``to`` (exclusive), each epoch milliseconds or an RFC 3339
    timestamp with a UTC offset (``2024-05-01T00:00:00Z``); a sub-millisecond instant is rounded
    up. ``from`` must be earlier than ``to``. The record's ``timestamp_ms`` is compared as it is
    (a record without a timestamp has -1).
    """

    _KEYS: Final = frozenset({"from", "to", _INVERT})

    def __init__(self, config: Mapping[str, object]) -> None:
        check_keys(config, "time", self._KEYS)
        start = timestamp_ms(config, "from")
        end = timestamp_ms(config, "to")
        if start is None and end is None:
            raise FilterConfigError("", "a 'time' filter needs from, to or both")
        if start is not None and end is not None and end <= start:
            raise FilterConfigError("to", f"must be later than from ({start} ms)", config["to"])
        self._start = start
        self._end = end
        self._invert = flag(config, _INVERT, False)

    def _keep(self, ts: int) -> bool:
        inside = (self._start is None or ts >= self._start) and (self._end is None or ts < self._end)
        return inside != self._invert

    def __call__(self, message: Message) -> bool:
        return self._keep(message.timestamp_ms)

    def keep_consumed(self, record: ConsumedRecord) -> bool:
        """As ``__call__``, on the record as consumed."""
        return self._keep(record.timestamp()[1])
