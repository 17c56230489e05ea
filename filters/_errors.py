"""The two errors of the filters package: a filter's config is wrong, or a filter failed on a record."""

from __future__ import annotations

from typing import Any

from relay.errors import ConfigError, RelayError


class FilterConfigError(ConfigError):
    """A filter rejects its own config section.

    Raised by a filter's ``__init__``. ``path`` is the key *inside the filter's* ``config``
    mapping (``"matches"``), or ``""`` for the section as a whole; :func:`filters.build_filters`
    re-raises it as a :class:`~relay.errors.ConfigError` whose path is the full key path
    (``filters[2].config.matches``) and whose message names the filter. A plain ``ConfigError``
    raised with a relative path (as :func:`relay.config.parse_size` does) is treated the same.
    """


class FilterError(RelayError):
    """A filter raised on a record and its ``on_error`` is ``fail``: the relay stops.

    The message is one sentence naming the filter, the record's source coordinates and the
    exception's type and (shortened) text, never the record's key, value or headers. The original
    exception is chained as ``__cause__``.
    """

    code = "filter"

    filter_name: str
    coordinates: str
    reason: str

    def __init__(self, filter_name: str, coordinates: str, reason: str) -> None:
        self.filter_name = filter_name
        self.coordinates = coordinates
        self.reason = reason
        super().__init__(f"filter '{filter_name}' failed on record {coordinates}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.filter_name, self.coordinates, self.reason))
