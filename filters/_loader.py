"""Finding filter classes by type name, building them from config, and running them as a chain."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from time import perf_counter_ns
from typing import Any, Final, Literal, NamedTuple, cast

from filters._builtin import HeaderFilter, JsonFilter, KeyFilter, SampleFilter, SizeFilter, TimeFilter
from filters._errors import FilterError
from filters._protocol import ConsumedFilter, Filter, FilterSpec
from relay.errors import ConfigError
from relay.message import Message
from relay.plugins import PluginLoadError, is_dotted_path, load_dotted, shorten
from relay.run import Run

ENTRY_POINT_GROUP: Final = "kafka_lfs_relay.filters"

BUILTINS: Final[Mapping[str, type[Filter]]] = types.MappingProxyType(
    {
        "header": HeaderFilter,
        "key": KeyFilter,
        "size": SizeFilter,
        "json": JsonFilter,
        "sample": SampleFilter,
        "time": TimeFilter,
    }
)
"""Built-in filter types by name."""

OnError = Literal["fail", "drop"]
_ON_ERROR: Final = ("fail", "drop")


def _error(type_name: str, problem: str) -> ConfigError:
    return ConfigError("", f"filter type '{type_name}' {problem}")


def _check_class(type_name: str, obj: object) -> type[Filter]:
    if not isinstance(obj, type):
        raise _error(type_name, f"is not a class (it is a {type(obj).__name__})")
    if not any("__call__" in vars(klass) for klass in obj.__mro__[:-1]):
        raise _error(type_name, f"is not a filter: class {obj.__qualname__} has no __call__ method")
    return cast("type[Filter]", obj)


def _from_entry_point(type_name: str) -> type[Filter] | None:
    found: list[EntryPoint] = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == type_name]
    if not found:
        return None
    if len(found) > 1:
        owners = sorted({ep.dist.name if ep.dist else ep.value for ep in found})
        raise _error(type_name, f"is registered by more than one installed package ({', '.join(owners)})")
    (entry,) = found
    try:
        obj = entry.load()
    except Exception as exc:
        owner = f" of package {entry.dist.name}" if entry.dist else ""
        reason = shorten(f"{type(exc).__name__}: {exc}")
        raise _error(type_name, f"(entry point {entry.value}{owner}) cannot be loaded: {reason}") from exc
    return _check_class(type_name, obj)


def _from_dotted_path(type_name: str) -> type[Filter]:
    if not is_dotted_path(type_name):
        raise _error(
            type_name, "is not a built-in filter, nor an installed plugin, nor a path like package.module:Class"
        )
    try:
        obj = load_dotted(type_name)
    except PluginLoadError as exc:
        raise _error(type_name, str(exc)) from exc.__cause__
    return _check_class(type_name, obj)


def load_filter_class(type_name: str) -> type[Filter]:
    """The filter class for a ``type``: a built-in name, then an entry point, then ``package.module:Class``.

    Entry points are looked up in group ``kafka_lfs_relay.filters``, so an installed package can
    add a filter type. Raises :class:`~relay.errors.ConfigError` (without a path) whose message
    is one sentence naming ``type_name``.
    """
    builtin = BUILTINS.get(type_name)
    if builtin is not None:
        return builtin
    plugin = _from_entry_point(type_name)
    if plugin is not None:
        return plugin
    if ":" not in type_name:
        known = ", ".join(BUILTINS)
        raise _error(
            type_name,
            f"is unknown: not a built-in ({known}), not an installed plugin (entry point group "
            f"{ENTRY_POINT_GROUP}) and not a path like package.module:Class",
        )
    return _from_dotted_path(type_name)


@dataclass(frozen=True, slots=True)
class FilterStats:
    """What one filter did so far. ``kept + dropped + errors`` is the number of records it saw.

    ``dropped`` counts records it returned False for; ``errors`` counts calls that raised (or did
    not return a bool), whether ``on_error`` then dropped the record or stopped the relay.
    """

    kept: int
    dropped: int
    errors: int
    nanoseconds: int

    @property
    def calls(self) -> int:
        """Records the filter was called with."""
        return self.kept + self.dropped + self.errors

    @property
    def seconds(self) -> float:
        """Time spent inside the filter, in seconds."""
        return self.nanoseconds / 1e9


class ChainLink(NamedTuple):
    """One filter of a chain: its name, the filter, and what an exception in it means."""

    name: str
    filter: Filter
    on_error: OnError = "fail"


class _Link:
    """A chain link with its counters; plain attributes, cheap to bump on the hot path.

    ``consumed`` is the filter's ``keep_consumed`` when it has one (see
    :class:`~filters.ConsumedFilter`): then a run is filtered without building a ``Message``.
    """

    __slots__ = ("call", "consumed", "drop_on_error", "dropped", "errors", "kept", "name", "ns")

    def __init__(self, link: ChainLink) -> None:
        self.name = link.name
        self.call = link.filter.__call__
        self.consumed = link.filter.keep_consumed if isinstance(link.filter, ConsumedFilter) else None
        self.drop_on_error = link.on_error == "drop"
        self.kept = 0
        self.dropped = 0
        self.errors = 0
        self.ns = 0


class FilterChain:
    """Configured filters, run in order on each record; the first that drops it wins.

    ``chain(message)`` returns None to keep the record, or the name of the filter that dropped
    it; the filters after that one are not called. A filter that raises either stops the relay
    with :class:`FilterError` (``on_error: fail``) or drops the record (``on_error: drop``).
    An empty chain keeps everything and is falsy, so callers may skip it: ``if chain: ...``.
    """

    __slots__ = ("_links",)

    def __init__(self, links: Iterable[ChainLink] = ()) -> None:
        built: list[_Link] = []
        names: set[str] = set()
        for link in links:
            if link.name in names:
                raise ValueError(f"filter name '{link.name}' is used twice in one chain")
            if link.on_error not in _ON_ERROR:
                raise ValueError(f"filter '{link.name}': on_error must be fail or drop, not {link.on_error!r}")
            names.add(link.name)
            built.append(_Link(link))
        self._links: tuple[_Link, ...] = tuple(built)

    def __len__(self) -> int:
        return len(self._links)

    @property
    def names(self) -> tuple[str, ...]:
        """The filters' names, in the order they run."""
        return tuple(link.name for link in self._links)

    @property
    def message_filters(self) -> tuple[str, ...]:
        """The names of the filters that read :class:`Message` objects (they have no ``keep_consumed``)."""
        return tuple(link.name for link in self._links if link.consumed is None)

    def __call__(self, message: Message) -> str | None:
        for link in self._links:
            if not _decide(link, link.call, message, message.coordinates):
                return link.name
        return None

    def select(self, run: Run) -> Run:
        """``run`` with only the records every filter keeps, in order (its ``next`` unchanged: a record
        dropped was read). A filter with ``keep_consumed`` sees the records as consumed; the others
        see :class:`Message` objects, built once per record (:meth:`Run.messages`)."""
        for link in self._links:
            if not run.records:
                break
            if link.consumed is not None and not run.is_built:
                keep = _select_consumed(link, run)
            else:
                keep = [_decide(link, link.call, msg, msg.coordinates) for msg in run.messages()]
            run = run.kept(keep)
        return run

    def stats(self) -> Mapping[str, FilterStats]:
        """A snapshot of each filter's counters, by filter name, in chain order."""
        return {link.name: FilterStats(link.kept, link.dropped, link.errors, link.ns) for link in self._links}


def _decide(link: _Link, call: Callable[[Any], object], record: object, coordinates: Callable[[], str]) -> bool:
    """Whether ``link`` keeps ``record``, counted; a failure drops it (``on_error: drop``) or raises."""
    start = perf_counter_ns()
    try:
        keep = call(record)
        if keep is not True and keep is not False:
            raise TypeError(f"filter returned {type(keep).__name__}, not a bool")
    except Exception as exc:
        link.ns += perf_counter_ns() - start
        link.errors += 1
        if link.drop_on_error:
            return False
        reason = shorten(f"{type(exc).__name__}: {exc}")
        raise FilterError(link.name, coordinates(), reason) from exc
    link.ns += perf_counter_ns() - start
    if keep:
        link.kept += 1
    else:
        link.dropped += 1
    return keep


def _select_consumed(link: _Link, run: Run) -> list[bool]:
    """``link``'s decisions on ``run``'s consumed records: timed and counted per run, not per record.

    A filter that raises is run again record by record, so that the record it fails on is named
    and ``on_error`` applies to that record alone.
    """
    consumed = link.consumed
    assert consumed is not None
    start = perf_counter_ns()
    try:
        keep = list(map(consumed, run.records))
    except Exception:
        link.ns += perf_counter_ns() - start
        return [_decide(link, consumed, rec, partial(run.coordinates, i)) for i, rec in enumerate(run.records)]
    link.ns += perf_counter_ns() - start
    kept = keep.count(True)
    link.kept += kept
    link.dropped += len(keep) - kept
    return keep


def build_filters(specs: Iterable[FilterSpec]) -> FilterChain:
    """Load, configure and chain the configured filters, in order.

    Every problem is a :class:`~relay.errors.ConfigError` whose path points into the config
    (``filters[1].type``, ``filters[1].config.matches``) and whose message names the filter.
    """
    links: list[ChainLink] = []
    first_index: dict[str, int] = {}
    for index, spec in enumerate(specs):
        at = f"filters[{index}]"
        name = spec.name
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{at}.name", "expected a non-empty string", name)
        if name in first_index:
            raise ConfigError(f"{at}.name", f"is already the name of filters[{first_index[name]}]", name)
        first_index[name] = index
        if spec.on_error not in _ON_ERROR:
            raise ConfigError(f"{at}.on_error", f"filter '{name}': expected one of fail, drop", spec.on_error)
        try:
            cls = load_filter_class(spec.type)
        except ConfigError as err:
            raise ConfigError(f"{at}.type", f"filter '{name}': {err.message}") from err
        if not isinstance(spec.config, Mapping):
            raise ConfigError(f"{at}.config", f"filter '{name}': expected a mapping", spec.config)
        config = types.MappingProxyType(dict(spec.config))
        try:
            instance = cls(config)
        except ConfigError as err:  # FilterConfigError included: its path is relative to the config section
            path = f"{at}.config.{err.path}" if err.path else f"{at}.config"
            raise ConfigError(path, f"filter '{name}': {err.message}", err.value) from err
        except Exception as err:
            reason = shorten(f"{type(err).__name__}: {err}")
            raise ConfigError(
                f"{at}.config", f"filter '{name}' (type {spec.type}) rejected its config: {reason}"
            ) from err
        on_error: OnError = "drop" if spec.on_error == "drop" else "fail"
        links.append(ChainLink(name, instance, on_error))
    return FilterChain(links)
