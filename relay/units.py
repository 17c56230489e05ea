"""Durations and sizes in config values: parsing and rendering.

Numbers are ASCII digits with an optional fractional part (``30``, ``1.5``); no sign, exponent,
underscores or leading/trailing dot. Surrounding whitespace is ignored; there is no whitespace
between a number and its unit. Units are case-sensitive.

Durations (:func:`parse_duration`, result in seconds as a float):

* an int or float, in seconds, finite and ``>= 0`` (bools are rejected);
* a bare number string, in seconds: ``"30"``, ``"0.5"``;
* one or more ``<number><unit>`` parts with units ``h``, ``m``, ``s``, ``ms``, ``us``, each unit
  at most once and from largest to smallest: ``500ms``, ``1.5s``, ``2m``, ``1h``, ``250us``,
  ``1m30s``, ``1h2m3s4ms5us``. (``30s1m`` and ``1m1m`` are rejected.)

Sizes (:func:`parse_size`, result in bytes as an int):

* an int ``>= 0`` (bools and floats are rejected);
* a bare whole number string, in bytes: ``"512"``;
* ``<number><unit>`` with one unit: ``B`` (1), decimal ``KB`` ``MB`` ``GB`` ``TB`` (powers of
  1000) or binary ``KiB`` ``MiB`` ``GiB`` ``TiB`` (powers of 1024). A fraction is allowed with a
  unit other than ``B`` and the result is rounded down: ``1.5GiB`` is 1610612736,
  ``1.0000001KB`` is 1000. ``k``, ``K``, ``kb``, ``Mb``, ``mib``... are rejected (with a hint
  when only the case is wrong).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

from relay.errors import ConfigError

_NUMBER: Final = r"[0-9]+(?:\.[0-9]+)?"
_NUMBER_RE: Final = re.compile(_NUMBER, re.ASCII)

# Alternation order matters: "ms" must be tried before "m" and "s".
_DURATION_UNIT: Final = r"us|ms|h|m|s"
_DURATION_PART_RE: Final = re.compile(rf"({_NUMBER})({_DURATION_UNIT})", re.ASCII)
_DURATION_RE: Final = re.compile(rf"(?:{_NUMBER}(?:{_DURATION_UNIT}))+", re.ASCII)
_DURATION_UNITS: Final[dict[str, Fraction]] = {
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 1000),
    "us": Fraction(1, 1_000_000),
}
_DURATION_RANK: Final = {unit: rank for rank, unit in enumerate(_DURATION_UNITS)}
_DURATION_EXPECTED: Final = "expected a duration like 500ms, 1.5s or 1m30s (units h, m, s, ms, us)"

_SIZE_UNITS: Final[dict[str, int]] = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
# Largest multiplier first: format_size picks the first unit that divides exactly.
_SIZE_UNITS_DESCENDING: Final = sorted(_SIZE_UNITS.items(), key=lambda item: item[1], reverse=True)
_SIZE_UNIT_LIST: Final = ", ".join(_SIZE_UNITS)
_SIZE_LENIENT_RE: Final = re.compile(rf"({_NUMBER})(\s*)([A-Za-z]*)", re.ASCII)
_SIZE_EXPECTED: Final = "expected a size like 16MiB"

_US_PER_SECOND: Final = 1_000_000


def _to_seconds(amount: Fraction | int | float, path: str, value: object) -> float:
    try:
        return float(amount)
    except OverflowError:
        raise ConfigError(path, "expected a duration that fits in a float number of seconds", value) from None


def parse_duration(value: object, path: str) -> float:
    """Parse a config duration into seconds; see the module docstring for the grammar.

    Raises :class:`ConfigError` for ``path`` on anything else: bools, negative, NaN or infinite
    numbers, empty strings, unknown or misordered units, other types.
    """
    if isinstance(value, bool):
        raise ConfigError(path, _DURATION_EXPECTED, value)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(path, "expected a finite duration", value)
        if value < 0:
            raise ConfigError(path, "expected a duration that is not negative", value)
        return _to_seconds(value, path, value)
    if not isinstance(value, str):
        raise ConfigError(path, _DURATION_EXPECTED, value)
    text = value.strip()
    if text.startswith("-"):
        raise ConfigError(path, "expected a duration that is not negative", value)
    if _NUMBER_RE.fullmatch(text):
        return _to_seconds(Fraction(text), path, value)
    if not _DURATION_RE.fullmatch(text):
        raise ConfigError(path, _DURATION_EXPECTED, value)
    total = Fraction(0)
    previous_rank = -1
    for match in _DURATION_PART_RE.finditer(text):
        number, unit = match.groups()
        rank = _DURATION_RANK[unit]
        if rank <= previous_rank:
            raise ConfigError(
                path, "expected duration units from largest to smallest, each at most once, like 1m30s", value
            )
        previous_rank = rank
        total += Fraction(number) * _DURATION_UNITS[unit]
    return _to_seconds(total, path, value)


def _size_unit_hint(unit: str) -> str:
    for known in _SIZE_UNITS:
        if known.lower() == unit.lower():
            return f"{_SIZE_EXPECTED} (units are case-sensitive: did you mean {known}?)"
    return f"{_SIZE_EXPECTED} (unit {unit!r} is not one of {_SIZE_UNIT_LIST})"


def parse_size(value: object, path: str) -> int:
    """Parse a config size into bytes; see the module docstring for the grammar.

    Raises :class:`ConfigError` for ``path`` on anything else: bools, floats, negative numbers,
    empty strings, unknown units, a space between number and unit, fractional bytes, other types.
    """
    if isinstance(value, bool | float):
        raise ConfigError(path, f"{_SIZE_EXPECTED} or a whole number of bytes", value)
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(path, "expected a size that is not negative", value)
        return value
    if not isinstance(value, str):
        raise ConfigError(path, _SIZE_EXPECTED, value)
    text = value.strip()
    if text.startswith("-"):
        raise ConfigError(path, "expected a size that is not negative", value)
    match = _SIZE_LENIENT_RE.fullmatch(text)
    if match is None:
        raise ConfigError(path, _SIZE_EXPECTED, value)
    number, space, unit = match.groups()
    if unit and unit not in _SIZE_UNITS:
        raise ConfigError(path, _size_unit_hint(unit), value)
    if space:
        raise ConfigError(path, f"{_SIZE_EXPECTED} (no space between the number and the unit)", value)
    amount = Fraction(number)
    if unit in ("", "B") and amount.denominator != 1:
        raise ConfigError(path, f"{_SIZE_EXPECTED} or a whole number of bytes", value)
    return math.floor(amount * _SIZE_UNITS[unit or "B"])


def format_size(n: int) -> str:
    """Render a byte count exactly, in the largest unit that divides it: 16777216 -> ``16MiB``.

    Binary and decimal units compete on their multiplier (``1000000`` -> ``1MB``, ``1024000`` ->
    ``1000KiB``); a count no unit divides stays in bytes (``1536`` -> ``1536B``), and ``0`` is
    ``0B``. Guarantee: ``parse_size(format_size(n), path) == n`` for every int ``n >= 0``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"format_size needs an int >= 0, got {n!r}")
    for unit, multiplier in _SIZE_UNITS_DESCENDING:
        if n and n % multiplier == 0:
            return f"{n // multiplier}{unit}"
    return f"{n}B"


def _decimal(numerator: int, denominator: int) -> str:
    """``numerator / denominator`` as a decimal without trailing zeros; denominator is 10**k."""
    whole, rest = divmod(numerator, denominator)
    if not rest:
        return str(whole)
    digits = len(str(denominator)) - 1
    return f"{whole}.{rest:0{digits}d}".rstrip("0")


def format_duration(s: float) -> str:
    """Render seconds, rounded to the microsecond, in the grammar :func:`parse_duration` reads.

    Below one second: ``500ms``, ``1.5ms``, ``250us``; otherwise hours, minutes and (possibly
    fractional) seconds, omitting zero parts: ``1.5s``, ``1m30s``, ``1h``, ``1h0.25s``. Zero (and
    anything below half a microsecond) is ``0s``. Guarantee: for every int ``0 <= k < 2**52``,
    ``parse_duration(format_duration(k / 1e6), path) == k / 1e6``.
    """
    if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or s < 0:
        raise ValueError(f"format_duration needs a finite number >= 0, got {s!r}")
    total_us = round(Fraction(s) * _US_PER_SECOND)
    if total_us == 0:
        return "0s"
    if total_us < _US_PER_SECOND:
        if total_us % 1000 == 0:
            return f"{total_us // 1000}ms"
        if total_us < 1000:
            return f"{total_us}us"
        return f"{_decimal(total_us, 1000)}ms"
    hours, rest = divmod(total_us, 3600 * _US_PER_SECOND)
    minutes, rest = divmod(rest, 60 * _US_PER_SECOND)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(f"{_decimal(rest, _US_PER_SECOND)}s")
    return "".join(parts)
