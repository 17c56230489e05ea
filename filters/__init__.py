"""Record filters: decide, record by record, what the relay keeps.

A filter is a class built with its own config mapping and called with each
:class:`~relay.message.Message`; it returns True to keep the record (see :class:`Filter`). The
relay builds the configured ``filters: [{name, type, config, on_error}]`` with
:func:`build_filters` and runs them as a :class:`FilterChain`: in order, first drop wins.

``type`` is a built-in (``header``, ``key``, ``size``, ``json``, ``sample``, ``time``; see
:data:`BUILTINS`), the name of an entry point in group ``kafka_lfs_relay.filters`` (how an
installed package adds one; see ``examples/kfr-example-filter``), or ``package.module:Class``.
"""

from filters._builtin import HeaderFilter, JsonFilter, KeyFilter, SampleFilter, SizeFilter, TimeFilter
from filters._errors import FilterConfigError, FilterError
from filters._loader import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    ChainLink,
    FilterChain,
    FilterStats,
    OnError,
    build_filters,
    load_filter_class,
)
from filters._protocol import Filter, FilterSpec

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "ChainLink",
    "Filter",
    "FilterChain",
    "FilterConfigError",
    "FilterError",
    "FilterSpec",
    "FilterStats",
    "HeaderFilter",
    "JsonFilter",
    "KeyFilter",
    "OnError",
    "SampleFilter",
    "SizeFilter",
    "TimeFilter",
    "build_filters",
    "load_filter_class",
]
