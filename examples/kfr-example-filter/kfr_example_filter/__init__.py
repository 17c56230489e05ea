"""An example kafka-lfs-relay filter plugin: keep the records at even source offsets.

Registered in ``pyproject.toml`` under the entry point group ``kafka_lfs_relay.filters`` as
``example-even``, so once this package is installed a relay config can say::

    filters:
      - name: evens
        type: example-even
        config: {}            # or {odd: true} to keep the odd offsets instead
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from filters import FilterConfigError

if TYPE_CHECKING:
    from relay.message import Message

__all__ = ["EvenOffsetFilter"]


class EvenOffsetFilter:
    """Keeps a record when its source offset is even (odd with ``odd: true``).

    Deterministic, as a filter should be: the decision depends on the record's coordinates only.
    """

    def __init__(self, config: Mapping[str, object]) -> None:
        for key in config:
            if key != "odd":
                raise FilterConfigError(str(key), "unknown key (an 'example-even' filter takes only odd)")
        odd = config.get("odd", False)
        if not isinstance(odd, bool):
            raise FilterConfigError("odd", "expected true or false", odd)
        self._remainder = 1 if odd else 0

    def __call__(self, message: Message) -> bool:
        return message.source_offset % 2 == self._remainder
