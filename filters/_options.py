"""Reading a built-in filter's config: typed getters that raise FilterConfigError naming the key."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Final

from filters._errors import FilterConfigError
from relay.options import EnvText, env_flag, env_integer
from relay.units import parse_size

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS: Final = timedelta(milliseconds=1)


def check_keys(config: Mapping[str, object], kind: str, known: Collection[str]) -> None:
    """Reject a config that is not a mapping, or that holds a key outside ``known``."""
    if not isinstance(config, Mapping):
        raise FilterConfigError("", f"a '{kind}' filter expects a mapping of options", config)
    unknown = [str(key) for key in config if key not in known]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        extra = f"; did you mean '{hint[0]}'?" if hint else f" (a '{kind}' filter takes {', '.join(sorted(known))})"
        raise FilterConfigError(unknown[0], f"unknown key{extra}")


def one_of(config: Mapping[str, object], kind: str, keys: Sequence[str]) -> str:
    """The single key of ``keys`` present in ``config``; none, or more than one, is an error."""
    given = [key for key in keys if key in config]
    names = ", ".join(keys)
    if not given:
        raise FilterConfigError("", f"a '{kind}' filter needs one of {names}")
    if len(given) > 1:
        raise FilterConfigError(given[1], f"give only one of {names} (also got {given[0]})")
    return given[0]


def text(config: Mapping[str, object], key: str) -> str:
    """A required, non-empty string."""
    if key not in config:
        raise FilterConfigError(key, "is required")
    value = config[key]
    if not isinstance(value, str):
        raise FilterConfigError(key, "expected a string (quote numbers and booleans in YAML)", value)
    if not value:
        raise FilterConfigError(key, "must not be empty", value)
    return value


def regex(config: Mapping[str, object], key: str) -> re.Pattern[str]:
    """A required regular expression (Python ``re`` syntax)."""
    pattern = config.get(key)
    if not isinstance(pattern, str):
        raise FilterConfigError(key, "expected a regular expression as a string", pattern)
    try:
        return re.compile(pattern)
    except re.error as err:
        raise FilterConfigError(
            key, f"expected a regular expression ({err.msg} at position {err.pos})", pattern
        ) from None


def flag(config: Mapping[str, object], key: str, default: bool) -> bool:
    """An optional boolean (or ``${VAR}`` text that is true or false)."""
    value = env_flag(config.get(key, default))
    if not isinstance(value, bool):
        raise FilterConfigError(key, "expected true or false", value)
    return value


def choice(config: Mapping[str, object], key: str, choices: Sequence[str], default: str) -> str:
    """An optional string out of ``choices``."""
    value = config.get(key, default)
    if not isinstance(value, str) or value not in choices:
        raise FilterConfigError(key, f"expected one of {', '.join(choices)}", value)
    return value


def size(config: Mapping[str, object], key: str) -> int | None:
    """An optional size (``512``, ``16KiB``...) in bytes, or None when absent."""
    if key not in config:
        return None
    return parse_size(config[key], key)


def fraction(config: Mapping[str, object], key: str) -> float:
    """A required number from 0 to 1 (or ``${VAR}`` text that is one)."""
    if key not in config:
        raise FilterConfigError(key, "is required")
    value = config[key]
    if isinstance(value, EnvText):
        try:
            value = float(value)
        except ValueError:
            raise FilterConfigError(key, "expected a number from 0 to 1", str(value)) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FilterConfigError(key, "expected a number from 0 to 1", value)
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise FilterConfigError(key, "expected a number from 0 to 1", value)
    return float(value)


def _ceil_ms(moment: datetime) -> int:
    whole, rest = divmod(moment - _EPOCH, _ONE_MS)
    return whole + (1 if rest else 0)


def timestamp_ms(config: Mapping[str, object], key: str) -> int | None:
    """An optional instant as epoch milliseconds (rounded up), or None when absent.

    Accepts an int (epoch milliseconds), an RFC 3339 string with a UTC offset
    (``2024-05-01T00:00:00Z``, ``2024-05-01T02:00:00.5+02:00``) or an aware ``datetime`` (what
    YAML makes of an unquoted timestamp). A time without an offset is rejected: it is ambiguous.
    """
    if key not in config:
        return None
    value = env_integer(config[key])
    expected = "expected epoch milliseconds or an RFC 3339 timestamp like 2024-05-01T00:00:00Z"
    if isinstance(value, bool):
        raise FilterConfigError(key, expected, value)
    if isinstance(value, int):
        return value
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        raise FilterConfigError(key, f"{expected} (a date alone is not enough)", value.isoformat())
    elif isinstance(value, str):
        raw = value.strip()
        if raw[-1:] in ("Z", "z"):
            raw = raw[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise FilterConfigError(key, expected, value) from None
        if "T" not in raw.upper() and " " not in raw:
            raise FilterConfigError(key, f"{expected} (a date alone is not enough)", value)
    else:
        raise FilterConfigError(key, expected, value)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise FilterConfigError(key, f"{expected} (the UTC offset, like Z or +02:00, is required)", str(value))
    return _ceil_ms(moment)
