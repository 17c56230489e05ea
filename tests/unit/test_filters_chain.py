"""Unit tests of filter loading (built-ins, entry points, dotted paths) and of FilterChain."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from importlib.metadata import EntryPoint

import pytest

import filters
import filters._loader
from filters import (
    BUILTINS,
    ENTRY_POINT_GROUP,
    ChainLink,
    FilterChain,
    FilterError,
    FilterStats,
    KeyFilter,
    build_filters,
    load_filter_class,
)
from kafka_lfs_relay.config.model import FilterConfig
from relay.errors import ConfigError, RelayError
from relay.message import Message
from tests.unit import filter_plugins

PLUGINS = "tests.unit.filter_plugins"
PAYLOAD = b"very-private-payload-4711"
KEY = b"very-private-key-0815"


def message(offset: int = 42, key: bytes | None = KEY, value: bytes | None = PAYLOAD) -> Message:
    return Message(
        key=key,
        value=value,
        headers=(("auth", b"very-private-header"),),
        topic="relayed",
        source_cluster="east",
        source_topic="orders",
        source_partition=3,
        source_offset=offset,
        timestamp_ms=1_700_000_000_000,
    )


def spec(name: str, type_name: str, config: Mapping[str, object] | None = None, on_error: str = "fail") -> FilterConfig:
    return FilterConfig(name=name, type=type_name, config=config or {}, on_error=on_error)  # type: ignore[arg-type]


def recording(name: str, log: list[tuple[object, int]], keep: bool = True, on_error: str = "fail") -> FilterConfig:
    return spec(name, f"{PLUGINS}:Recording", {"log": log, "tag": name, "keep": keep}, on_error)


def build_error(*specs: FilterConfig) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_filters(specs)
    return info.value


# --- public surface ----------------------------------------------------------------------------


def test_all_names_are_exported() -> None:
    """Every name in filters.__all__ exists on the package."""
    assert all(hasattr(filters, name) for name in filters.__all__)


# --- load_filter_class -------------------------------------------------------------------------


def test_builtin_names_resolve_to_builtin_classes() -> None:
    """Each built-in type name resolves to its class."""
    assert set(BUILTINS) == {"header", "key", "size", "json", "sample", "time"}
    assert load_filter_class("key") is KeyFilter


def test_dotted_path_loads_class_from_module() -> None:
    """`package.module:Class` loads a class defined in an importable module."""
    assert load_filter_class(f"{PLUGINS}:Recording") is filter_plugins.Recording


def test_dotted_path_loads_nested_class() -> None:
    """`package.module:Outer.Inner` loads a class nested in another."""
    assert load_filter_class(f"{PLUGINS}:Outer.Inner") is filter_plugins.Outer.Inner


def test_unknown_type_names_the_type() -> None:
    """An unknown type without ':' is one sentence naming the type and the places searched."""
    with pytest.raises(ConfigError) as info:
        load_filter_class("headr")
    text = str(info.value)
    assert text.startswith("filter type 'headr' is unknown")
    assert "header" in text and ENTRY_POINT_GROUP in text


def test_dotted_path_missing_module() -> None:
    """A dotted path to a module that does not exist names the type and the module."""
    with pytest.raises(ConfigError) as info:
        load_filter_class("no_such_pkg.mod:Filter")
    assert str(info.value) == "filter type 'no_such_pkg.mod:Filter' cannot be loaded: no module named 'no_such_pkg'"


def test_dotted_path_missing_attribute() -> None:
    """A dotted path to a missing class names the type, the module and the attribute."""
    with pytest.raises(ConfigError) as info:
        load_filter_class(f"{PLUGINS}:Nope")
    assert (
        str(info.value) == f"filter type '{PLUGINS}:Nope' cannot be loaded: module '{PLUGINS}' has no attribute 'Nope'"
    )


def test_dotted_path_to_function_is_rejected() -> None:
    """A dotted path to something that is not a class is rejected."""
    with pytest.raises(ConfigError, match="is not a class"):
        load_filter_class(f"{PLUGINS}:not_a_class")


def test_dotted_path_to_class_without_call_is_rejected() -> None:
    """A class without __call__ is not a filter."""
    with pytest.raises(ConfigError, match="has no __call__ method"):
        load_filter_class(f"{PLUGINS}:NotAFilter")


def test_malformed_dotted_path_is_rejected() -> None:
    """A type with ':' but an empty module or class part is rejected, naming the type."""
    with pytest.raises(ConfigError, match="filter type ':Cls'"):
        load_filter_class(":Cls")


def fake_entry_points(*eps: EntryPoint) -> object:
    def entry_points(group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    return entry_points


def test_entry_point_name_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A type name registered in the kafka_lfs_relay.filters entry point group loads its class."""
    ep = EntryPoint(name="recording", value=f"{PLUGINS}:Recording", group=ENTRY_POINT_GROUP)
    other = EntryPoint(name="recording", value=f"{PLUGINS}:Raising", group="some.other.group")
    monkeypatch.setattr(filters._loader, "entry_points", fake_entry_points(ep, other))
    assert load_filter_class("recording") is filter_plugins.Recording


def test_builtin_wins_over_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin registering a built-in's name cannot replace the built-in."""
    ep = EntryPoint(name="key", value=f"{PLUGINS}:Recording", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(filters._loader, "entry_points", fake_entry_points(ep))
    assert load_filter_class("key") is KeyFilter


def test_entry_point_registered_twice_is_ambiguous(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two entry points with the same name are an error naming the type."""
    eps = [EntryPoint(name="dup", value=f"{PLUGINS}:{cls}", group=ENTRY_POINT_GROUP) for cls in ("Slow", "Raising")]
    monkeypatch.setattr(filters._loader, "entry_points", fake_entry_points(*eps))
    with pytest.raises(ConfigError, match="filter type 'dup' is registered by more than one installed package"):
        load_filter_class("dup")


def test_broken_entry_point_names_type_and_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point that fails to import is an error naming the type and the entry point."""
    ep = EntryPoint(name="broken", value="no_such_plugin_pkg:Filter", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(filters._loader, "entry_points", fake_entry_points(ep))
    with pytest.raises(ConfigError) as info:
        load_filter_class("broken")
    assert str(info.value).startswith("filter type 'broken' (entry point no_such_plugin_pkg:Filter) cannot be loaded")


# --- build_filters -----------------------------------------------------------------------------


def test_build_filters_accepts_relay_filter_config() -> None:
    """build_filters takes the relay's FilterConfig objects and keeps their order and names."""
    chain = build_filters([spec("a", "key", {"matches": "x"}), spec("b", "size", {"max": "1KiB"})])
    assert chain.names == ("a", "b")
    assert len(chain) == 2


def test_build_filters_unknown_type_is_config_error_at_type() -> None:
    """An unknown type is a config error at filters[i].type naming the filter and the type."""
    err = build_error(spec("a", "key", {"matches": "x"}), spec("b", "nope"))
    assert err.path == "filters[1].type"
    assert str(err).startswith("config key 'filters[1].type': filter 'b': filter type 'nope' is unknown")


def test_build_filters_rejects_duplicate_names() -> None:
    """Two filters with the same name are a config error at the second one's name."""
    err = build_error(spec("same", "key", {"matches": "x"}), spec("same", "key", {"matches": "y"}))
    assert err.path == "filters[1].name"
    assert "filters[0]" in err.message


def test_build_filters_rejects_bad_on_error() -> None:
    """on_error other than fail or drop is a config error at filters[i].on_error."""
    assert build_error(spec("a", "key", {"matches": "x"}, on_error="ignore")).path == "filters[0].on_error"


def test_plugin_init_exception_becomes_config_error() -> None:
    """A plugin whose constructor raises a plain exception gives a config error naming the filter and the cause."""
    err = build_error(spec("thresh", f"{PLUGINS}:BadInit"))
    assert err.path == "filters[0].config"
    assert "filter 'thresh'" in str(err)
    assert "ValueError: threshold must be positive" in str(err)


def test_plugin_filter_config_error_gets_full_path_and_redaction() -> None:
    """A plugin's FilterConfigError gets the full key path, and a secret key's value stays hidden."""
    err = build_error(spec("auth", f"{PLUGINS}:StrictConfig", {"password": "hunter2"}))
    assert err.path == "filters[0].config.password"
    assert str(err) == "config key 'filters[0].config.password': filter 'auth': is wrong, got '***'"


def test_filter_config_is_read_only() -> None:
    """A filter cannot modify the config mapping it is given."""
    err = build_error(spec("m", f"{PLUGINS}:Mutating"))
    assert "TypeError" in str(err)


# --- FilterChain -------------------------------------------------------------------------------


def test_empty_chain_keeps_everything_and_is_falsy() -> None:
    """An empty chain keeps every record, is falsy and has no stats."""
    chain = build_filters([])
    assert chain(message()) is None
    assert not chain
    assert chain.stats() == {}


def test_filters_run_in_configured_order() -> None:
    """Filters are called in the order configured."""
    log: list[tuple[object, int]] = []
    chain = build_filters([recording("c", log), recording("a", log), recording("b", log)])
    assert chain(message(offset=1)) is None
    assert log == [("c", 1), ("a", 1), ("b", 1)]


def test_first_drop_wins_and_later_filters_are_not_called() -> None:
    """The chain returns the name of the first filter that drops, and calls no filter after it."""
    log: list[tuple[object, int]] = []
    chain = build_filters([recording("a", log), recording("b", log, keep=False), recording("c", log, keep=False)])
    assert chain(message(offset=5)) == "b"
    assert log == [("a", 5), ("b", 5)]


def test_stats_count_kept_and_dropped_per_filter() -> None:
    """stats() counts, per filter, the records it kept and dropped; a filter after a drop sees nothing."""
    chain = build_filters(
        [spec("even-keys", "key", {"matches": "[02468]$"}), spec("small", "size", {"max": 3})],
    )
    for i in range(10):
        chain(message(key=str(i).encode(), value=b"x" * (i % 5)))
    stats = chain.stats()
    assert list(stats) == ["even-keys", "small"]
    assert (stats["even-keys"].kept, stats["even-keys"].dropped, stats["even-keys"].errors) == (5, 5, 0)
    # Even i: value lengths 0, 2, 4, 1, 3 -> one too big.
    assert (stats["small"].kept, stats["small"].dropped, stats["small"].calls) == (4, 1, 5)


def test_stats_measure_time_spent() -> None:
    """stats() reports the time spent inside each filter."""
    chain = build_filters([spec("slow", f"{PLUGINS}:Slow", {"ms": 2})])
    chain(message())
    chain(message())
    assert chain.stats()["slow"].seconds >= 0.004


def test_stats_are_a_snapshot() -> None:
    """A stats() result does not change when the chain runs on."""
    chain = build_filters([spec("k", "key", {"matches": "."})])
    before = chain.stats()
    chain(message())
    assert before["k"] == FilterStats(kept=0, dropped=0, errors=0, nanoseconds=0)
    assert chain.stats()["k"].kept == 1


def test_on_error_fail_raises_filter_error_naming_filter_and_coordinates() -> None:
    """A raising filter with on_error fail raises FilterError naming the filter, coordinates and exception."""
    chain = build_filters([spec("explode", f"{PLUGINS}:Raising", {"text": "bad state"})])
    with pytest.raises(FilterError) as info:
        chain(message(offset=42))
    err = info.value
    assert str(err) == "filter 'explode' failed on record east/orders/3@42: RuntimeError: bad state"
    assert isinstance(err, RelayError) and err.code == "filter"
    assert isinstance(err.__cause__, RuntimeError)
    assert chain.stats()["explode"].errors == 1


def test_filter_error_never_contains_the_payload() -> None:
    """The FilterError text and repr contain neither the record's value, key nor headers."""
    chain = build_filters([spec("explode", f"{PLUGINS}:Raising")])
    with pytest.raises(FilterError) as info:
        chain(message())
    for rendered in (str(info.value), repr(info.value)):
        for secret in ("very-private", PAYLOAD.decode(), KEY.decode()):
            assert secret not in rendered


def test_filter_error_shortens_long_exception_text() -> None:
    """A very long exception text is cut, so the error stays one short line."""
    chain = build_filters([spec("explode", f"{PLUGINS}:Raising", {"text": "x" * 5000})])
    with pytest.raises(FilterError) as info:
        chain(message())
    assert len(str(info.value)) < 300


def test_filter_error_pickles() -> None:
    """FilterError survives pickling with its message and fields."""
    err = pickle.loads(pickle.dumps(FilterError("f", "c/t/0@1", "ValueError: x")))
    assert (str(err), err.filter_name, err.coordinates) == (
        "filter 'f' failed on record c/t/0@1: ValueError: x",
        "f",
        "c/t/0@1",
    )


def test_on_error_drop_drops_and_counts() -> None:
    """A raising filter with on_error drop drops the record, is named as the dropper, and the error is counted."""
    log: list[tuple[object, int]] = []
    chain = build_filters([spec("explode", f"{PLUGINS}:Raising", on_error="drop"), recording("after", log)])
    assert chain(message()) == "explode"
    assert chain(message()) == "explode"
    assert log == []
    stats = chain.stats()["explode"]
    assert (stats.kept, stats.dropped, stats.errors) == (0, 0, 2)


def test_non_bool_result_is_an_error() -> None:
    """A filter returning something other than a bool is treated as a failing filter."""
    chain = build_filters([spec("forgetful", f"{PLUGINS}:ReturnsNone")])
    with pytest.raises(FilterError, match="TypeError: filter returned NoneType, not a bool"):
        chain(message())


def test_chain_built_directly_from_links() -> None:
    """A FilterChain can be built from (name, filter, on_error) links without config."""
    chain = FilterChain([ChainLink("k", KeyFilter({"matches": "^a"})), ChainLink("all", lambda m: True, "drop")])
    assert chain(message(key=b"abc")) is None
    assert chain(message(key=b"xyz")) == "k"


def test_chain_rejects_duplicate_link_names() -> None:
    """A FilterChain with two links of the same name is a ValueError."""
    with pytest.raises(ValueError, match="used twice"):
        FilterChain([ChainLink("k", lambda m: True), ChainLink("k", lambda m: False)])
