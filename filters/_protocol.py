"""The filter contract: what a built-in or plugin filter implements, and what a filter spec holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from relay.message import Message


class Filter(Protocol):
    """Decides, record by record, whether the relay keeps a record.

    A filter is a class. The relay builds one instance per configured filter, at start-up, with
    that filter's own ``config`` mapping, then calls the instance with every record.

    Contract:

    * ``__init__(config)`` validates the whole section and raises
      :class:`~filters.FilterConfigError` (``path`` = the offending key inside ``config``) for
      anything wrong, including keys it does not know. Config errors belong at start-up, not on
      the first record.
    * ``__call__(message)`` returns ``True`` to keep the record and ``False`` to drop it. Anything
      that is not a bool counts as an error of the filter.
    * An exception raised by ``__call__`` stops the relay (``on_error: fail``, the default) or
      drops the record and counts it (``on_error: drop``). The relay reports it with the
      record's source coordinates; do not put the record's payload in exception messages.
    * Calls come from one thread, in source order per source partition.

    Be pure and deterministic: decide from the ``Message`` alone, the same way every time. After
    a crash or a source failover the relay re-reads the records whose target writes were not yet
    acknowledged and filters them again. A deterministic filter makes the same decisions the
    second time. A non-deterministic one (random sampling, wall-clock time, external lookups)
    may keep a record it dropped before or drop one it kept (if it was not yet durable): the
    target still never receives a record twice, but which records it receives then depends on
    the run, not only on the data.
    """

    def __init__(self, config: Mapping[str, object]) -> None:
        """Validate ``config`` (this filter's own section, read-only) and prepare to filter."""
        ...

    def __call__(self, message: Message) -> bool:
        """``True`` to keep ``message``, ``False`` to drop it."""
        ...


class ConsumedRecord(Protocol):
    """A record as the source consumer returned it (a ``confluent_kafka.Message``), read through its methods."""

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> list[tuple[str, bytes | None]] | None: ...

    def timestamp(self) -> tuple[int, int]: ...

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def __len__(self) -> int: ...


@runtime_checkable
class ConsumedFilter(Protocol):
    """What a filter may add to decide on records as consumed, without a :class:`Message` (optional).

    The relay builds a ``Message`` for a record only when something needs one. A filter that has
    ``keep_consumed`` is called with the record as the source consumer returned it instead (its
    ``key()``, ``value()``, ``headers()`` (a list, or None when there are none), ``timestamp()``,
    ``topic()``, ``partition()``, ``offset()`` and ``len()``, the value's length); it must decide
    exactly as ``__call__`` would on the same record, and return a bool. The built-in filters have
    it; a plugin without it gets ``Message`` objects, built once per record.
    """

    def keep_consumed(self, record: ConsumedRecord) -> bool:
        """``True`` to keep ``record``, ``False`` to drop it."""
        ...


class FilterSpec(Protocol):
    """One configured filter, as the loader needs it (``kafka_lfs_relay.config.model.FilterConfig`` is one).

    ``name`` identifies the filter in metrics, logs and errors; ``type`` is a built-in name, an
    entry point name in group ``kafka_lfs_relay.filters``, or ``package.module:Class``;
    ``on_error`` is ``"fail"`` or ``"drop"``.
    """

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def config(self) -> Mapping[str, object]: ...

    @property
    def on_error(self) -> str: ...
