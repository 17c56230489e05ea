"""Unit tests of the built-in filters: header, key, size, json, sample and time."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import pytest

from filters import BUILTINS, Filter, FilterConfigError, build_filters
from kafka_lfs_relay.config.model import FilterConfig
from relay.errors import ConfigError
from relay.message import Headers, Message

TS = 1_700_000_000_000


def message(
    key: bytes | None = b"user-1",
    value: bytes | None = b"payload",
    headers: Headers = (),
    offset: int = 7,
    timestamp_ms: int = TS,
    topic: str = "orders",
    partition: int = 3,
) -> Message:
    return Message(
        key=key,
        value=value,
        headers=headers,
        topic="relayed",
        source_cluster="east",
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        timestamp_ms=timestamp_ms,
    )


def make(type_name: str, **config: object) -> Filter:
    return BUILTINS[type_name](config)


def config_error(type_name: str, config: Mapping[str, object], name: str = "my-filter") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_filters([FilterConfig(name=name, type=type_name, config=config)])
    return info.value


# --- header ------------------------------------------------------------------------------------


def test_header_equals_keeps_exact_value() -> None:
    """header/equals keeps a record whose header value is exactly the configured string."""
    flt = make("header", header="region", equals="eu")
    assert flt(message(headers=(("region", b"eu"),))) is True


def test_header_equals_drops_other_value() -> None:
    """header/equals drops a record whose header has another value."""
    flt = make("header", header="region", equals="eu")
    assert flt(message(headers=(("region", b"eu-west"),))) is False


def test_header_equals_drops_missing_header() -> None:
    """header/equals drops a record without the header."""
    flt = make("header", header="region", equals="eu")
    assert flt(message(headers=(("other", b"eu"),))) is False


def test_header_equals_looks_at_last_occurrence() -> None:
    """With a repeated header, header/equals compares the last occurrence."""
    flt = make("header", header="region", equals="eu")
    assert flt(message(headers=(("region", b"eu"), ("region", b"us")))) is False
    assert flt(message(headers=(("region", b"us"), ("region", b"eu")))) is True


def test_header_equals_compares_utf8_encoding() -> None:
    """header/equals compares against the UTF-8 encoding of a non-ASCII string."""
    flt = make("header", header="city", equals="Zürich")
    assert flt(message(headers=(("city", "Zürich".encode()),))) is True


def test_header_matches_searches_anywhere() -> None:
    """header/matches keeps a record whose header value contains a regex match (search semantics)."""
    flt = make("header", header="type", matches=r"order\.(created|paid)")
    assert flt(message(headers=(("type", b"v1.order.paid"),))) is True
    assert flt(message(headers=(("type", b"v1.order.refunded"),))) is False


def test_header_matches_null_value_never_matches() -> None:
    """header/matches drops a record whose header is present with a null value, even for a match-all regex."""
    flt = make("header", header="type", matches=".*")
    assert flt(message(headers=(("type", None),))) is False


def test_header_exists_keeps_present_header_with_null_value() -> None:
    """header/exists keeps a record that has the header, even with a null value."""
    flt = make("header", header="trace", exists=True)
    assert flt(message(headers=(("trace", None),))) is True


def test_header_exists_drops_absent_header() -> None:
    """header/exists drops a record without the header."""
    flt = make("header", header="trace", exists=True)
    assert flt(message(headers=(("other", b"x"),))) is False


def test_header_exists_false_keeps_absent_header() -> None:
    """header/exists: false keeps records without the header and drops those with it."""
    flt = make("header", header="trace", exists=False)
    assert flt(message()) is True
    assert flt(message(headers=(("trace", b"1"),))) is False


def test_header_invert_turns_keep_into_drop() -> None:
    """header with invert: true drops what it would keep and keeps what it would drop."""
    flt = make("header", header="region", equals="eu", invert=True)
    assert flt(message(headers=(("region", b"eu"),))) is False
    assert flt(message(headers=(("region", b"us"),))) is True


def test_header_requires_header_name() -> None:
    """A header filter without `header` is a config error at filters[0].config.header naming the filter."""
    err = config_error("header", {"equals": "x"})
    assert err.path == "filters[0].config.header"
    assert str(err) == "config key 'filters[0].config.header': filter 'my-filter': is required"


def test_header_needs_exactly_one_test() -> None:
    """A header filter with none of equals/matches/exists is an error on its config section."""
    err = config_error("header", {"header": "h"})
    assert err.path == "filters[0].config"
    assert "filter 'my-filter'" in str(err)
    assert "equals, matches, exists" in str(err)


def test_header_rejects_two_tests() -> None:
    """A header filter with both equals and matches is an error naming the second key."""
    err = config_error("header", {"header": "h", "equals": "x", "matches": "y"})
    assert err.path == "filters[0].config.matches"


def test_header_equals_rejects_number() -> None:
    """header/equals must be a string; a YAML number is rejected with a hint to quote it."""
    err = config_error("header", {"header": "h", "equals": 5})
    assert err.path == "filters[0].config.equals"
    assert "quote" in err.message


def test_header_rejects_bad_regex() -> None:
    """An invalid regex is a config error naming the filter, the key and the regex problem."""
    err = config_error("header", {"header": "h", "matches": "(unclosed"})
    assert err.path == "filters[0].config.matches"
    assert str(err).startswith("config key 'filters[0].config.matches': filter 'my-filter': expected a regular")
    assert "missing )" in str(err)


def test_unknown_key_is_named_with_suggestion() -> None:
    """An unknown key is a config error at that key, suggesting the likely intended one."""
    err = config_error("header", {"header": "h", "equal": "x"}, name="eu-only")
    assert err.path == "filters[0].config.equal"
    assert str(err) == "config key 'filters[0].config.equal': filter 'eu-only': unknown key; did you mean 'equals'?"


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    """An unknown key unlike any known one lists the keys the filter takes."""
    err = config_error("key", {"matches": "x", "zzz": 1})
    assert err.path == "filters[0].config.zzz"
    assert "takes invert, matches" in err.message


def test_config_error_path_uses_filter_index() -> None:
    """The config error path indexes the failing filter in the list, not the first one."""
    with pytest.raises(ConfigError) as info:
        build_filters(
            [
                FilterConfig(name="a", type="key", config={"matches": "x"}),
                FilterConfig(name="b", type="key", config={"matches": "["}),
            ]
        )
    assert info.value.path == "filters[1].config.matches"
    assert "filter 'b'" in str(info.value)


def test_builtin_raises_filter_config_error_when_built_directly() -> None:
    """Built directly, a built-in raises FilterConfigError whose path is the key inside its config."""
    with pytest.raises(FilterConfigError) as info:
        BUILTINS["key"]({"matches": "("})
    assert info.value.path == "matches"


def test_builtin_rejects_non_mapping_config() -> None:
    """A config that is not a mapping is rejected on the section as a whole."""
    with pytest.raises(FilterConfigError) as info:
        BUILTINS["key"](["matches"])  # type: ignore[arg-type]
    assert info.value.path == ""


# --- key ---------------------------------------------------------------------------------------


def test_key_matches_keeps_matching_key() -> None:
    """key/matches keeps a record whose key matches the regex."""
    assert make("key", matches="^user-")(message(key=b"user-42")) is True


def test_key_matches_drops_other_key() -> None:
    """key/matches drops a record whose key does not match."""
    assert make("key", matches="^user-")(message(key=b"admin-1")) is False


def test_key_null_key_never_matches() -> None:
    """key/matches drops a record with a null key, and invert keeps it."""
    assert make("key", matches=".*")(message(key=None)) is False
    assert make("key", matches=".*", invert=True)(message(key=None)) is True


def test_key_matches_non_utf8_bytes_as_text() -> None:
    """A key that is not valid UTF-8 is still matched: its valid part as text, bad bytes match only `.`."""
    flt = make("key", matches=r"^user-.$")
    assert flt(message(key=b"user-\xff")) is True
    assert make("key", matches=r"^user-\w$")(message(key=b"user-\xff")) is False


def test_key_matches_unicode_text() -> None:
    """key/matches sees UTF-8 keys as text, so a regex on non-ASCII characters works."""
    assert make("key", matches=r"(?i)^ÄBC$")(message(key="äbc".encode())) is True


def test_key_invert_drops_matching_key() -> None:
    """key with invert: true drops matching keys and keeps the others."""
    flt = make("key", matches="^test-", invert=True)
    assert flt(message(key=b"test-1")) is False
    assert flt(message(key=b"prod-1")) is True


def test_key_requires_matches() -> None:
    """A key filter without matches is a config error at .matches."""
    assert config_error("key", {}).path == "filters[0].config.matches"


def test_invert_must_be_boolean() -> None:
    """invert must be true or false; a string is a config error at .invert."""
    err = config_error("key", {"matches": "x", "invert": "yes"})
    assert err.path == "filters[0].config.invert"


# --- size --------------------------------------------------------------------------------------


def test_size_bounds_are_inclusive() -> None:
    """size keeps values whose length equals min or max, and drops one byte outside either."""
    flt = make("size", min="1KiB", max="2KiB")
    assert flt(message(value=b"x" * 1024)) is True
    assert flt(message(value=b"x" * 2048)) is True
    assert flt(message(value=b"x" * 1023)) is False
    assert flt(message(value=b"x" * 2049)) is False


def test_size_max_only() -> None:
    """size with only max keeps small values and drops large ones."""
    flt = make("size", max=10)
    assert flt(message(value=b"")) is True
    assert flt(message(value=b"x" * 11)) is False


def test_size_null_value_has_length_zero() -> None:
    """A null value counts as length 0: dropped by min 1, kept by max 0."""
    assert make("size", min=1)(message(value=None)) is False
    assert make("size", max=0)(message(value=None)) is True


def test_size_invert_keeps_outside_range() -> None:
    """size with invert keeps values outside the range (e.g. to route only big records)."""
    flt = make("size", max="1KB", invert=True)
    assert flt(message(value=b"x" * 1001)) is True
    assert flt(message(value=b"x" * 1000)) is False


def test_size_rejects_bad_size() -> None:
    """A malformed size is a config error at that key, with the size hint."""
    err = config_error("size", {"max": "10 MB"})
    assert err.path == "filters[0].config.max"
    assert "filter 'my-filter'" in str(err)
    assert "16MiB" in err.message


def test_size_rejects_max_below_min() -> None:
    """max below min is a config error at .max."""
    err = config_error("size", {"min": "2KiB", "max": "1KiB"})
    assert err.path == "filters[0].config.max"
    assert "less than min" in err.message


def test_size_needs_a_bound() -> None:
    """A size filter with neither min nor max is a config error on the section."""
    assert config_error("size", {}).path == "filters[0].config"


# --- json --------------------------------------------------------------------------------------


def jmessage(document: object) -> Message:
    return message(value=json.dumps(document).encode())


def test_json_equals_nested_string() -> None:
    """json/equals keeps a record whose dotted field equals the string, and drops another value."""
    flt = make("json", field="order.status", equals="paid")
    assert flt(jmessage({"order": {"status": "paid"}})) is True
    assert flt(jmessage({"order": {"status": "open"}})) is False


def test_json_missing_field_does_not_equal() -> None:
    """json/equals drops a record whose path is missing or crosses a non-object."""
    flt = make("json", field="order.status", equals="paid")
    assert flt(jmessage({"order": "paid"})) is False
    assert flt(jmessage({})) is False
    assert flt(jmessage(["paid"])) is False


def test_json_equals_number_ignores_int_float_difference() -> None:
    """json/equals treats 1 and 1.0 as equal, like JSON does."""
    flt = make("json", field="n", equals=1)
    assert flt(jmessage({"n": 1.0})) is True
    assert flt(jmessage({"n": 2})) is False


def test_json_equals_boolean_is_not_number_or_string() -> None:
    """json/equals true does not equal 1 or "true", only true."""
    flt = make("json", field="ok", equals=True)
    assert flt(jmessage({"ok": True})) is True
    assert flt(jmessage({"ok": 1})) is False
    assert flt(jmessage({"ok": "true"})) is False


def test_json_equals_null_needs_present_null() -> None:
    """json/equals null keeps a present null field and drops an absent one."""
    flt = make("json", field="gone", equals=None)
    assert flt(jmessage({"gone": None})) is True
    assert flt(jmessage({})) is False


def test_json_field_indexes_arrays() -> None:
    """A digit part of the field path indexes an array; out of range is absent."""
    flt = make("json", field="items.1.sku", equals="B")
    assert flt(jmessage({"items": [{"sku": "A"}, {"sku": "B"}]})) is True
    assert flt(jmessage({"items": [{"sku": "B"}]})) is False


def test_json_matches_string_and_number() -> None:
    """json/matches searches strings as is and numbers in their JSON form."""
    assert make("json", field="email", matches=r"@example\.com$")(jmessage({"email": "a@example.com"})) is True
    assert make("json", field="code", matches=r"^4\d\d$")(jmessage({"code": 404})) is True
    assert make("json", field="flag", matches=r"^true$")(jmessage({"flag": True})) is True


def test_json_matches_never_matches_object() -> None:
    """json/matches drops a record whose field is an object or array, even for a match-all regex."""
    flt = make("json", field="a", matches=".*")
    assert flt(jmessage({"a": {"b": 1}})) is False
    assert flt(jmessage({"a": [1]})) is False


def test_json_exists() -> None:
    """json/exists keeps records where the field is present (even null) and drops others."""
    flt = make("json", field="a.b", exists=True)
    assert flt(jmessage({"a": {"b": None}})) is True
    assert flt(jmessage({"a": {}})) is False


def test_json_invert_flips_match() -> None:
    """json with invert keeps records whose field does not equal the value."""
    flt = make("json", field="env", equals="test", invert=True)
    assert flt(jmessage({"env": "test"})) is False
    assert flt(jmessage({"env": "prod"})) is True


def test_json_non_json_dropped_by_default() -> None:
    """A value that is not JSON is dropped by default."""
    assert make("json", field="a", exists=True)(message(value=b"\x00not json")) is False


def test_json_non_json_kept_with_on_invalid_keep() -> None:
    """on_invalid: keep keeps a value that is not JSON, and a non-UTF-8 one."""
    flt = make("json", field="a", equals=1, on_invalid="keep")
    assert flt(message(value=b"{broken")) is True
    assert flt(message(value=b"\xff\xfe\xfd")) is True


def test_json_null_value_is_invalid() -> None:
    """A null value (tombstone) is not JSON: it follows on_invalid."""
    assert make("json", field="a", exists=False)(message(value=None)) is False
    assert make("json", field="a", exists=False, on_invalid="keep")(message(value=None)) is True


def test_json_on_invalid_is_not_inverted() -> None:
    """invert flips the field test but not the on_invalid decision."""
    flt = make("json", field="a", equals=1, invert=True)
    assert flt(message(value=b"nope")) is False


def test_json_on_invalid_error_raises_without_payload() -> None:
    """on_invalid: error raises a ValueError that does not quote the value."""
    flt = make("json", field="a", equals=1, on_invalid="error")
    with pytest.raises(ValueError, match="not JSON") as info:
        flt(message(value=b"secret-data-here"))
    assert "secret" not in str(info.value)


def test_json_rejects_empty_path_part() -> None:
    """A field path with an empty part is a config error at .field."""
    assert config_error("json", {"field": "a..b", "exists": True}).path == "filters[0].config.field"


def test_json_equals_rejects_non_scalar() -> None:
    """json/equals takes only a JSON scalar; a list is a config error at .equals."""
    err = config_error("json", {"field": "a", "equals": [1, 2]})
    assert err.path == "filters[0].config.equals"
    assert "scalar" in err.message


def test_json_rejects_unknown_on_invalid() -> None:
    """on_invalid must be drop, keep or error."""
    err = config_error("json", {"field": "a", "exists": True, "on_invalid": "skip"})
    assert err.path == "filters[0].config.on_invalid"
    assert "drop, keep, error" in err.message


# --- sample ------------------------------------------------------------------------------------

KEYS = [f"customer-{i}".encode() for i in range(10_000)]


def kept_share(flt: Filter, messages: list[Message]) -> float:
    return sum(flt(m) for m in messages) / len(messages)


def test_sample_is_deterministic_across_instances() -> None:
    """Two sample filters with the same config decide the same for every key."""
    first, second = make("sample", fraction=0.3), make("sample", fraction=0.3)
    assert [first(message(key=k)) for k in KEYS[:2000]] == [second(message(key=k)) for k in KEYS[:2000]]


def test_sample_decision_depends_on_key_only() -> None:
    """A key gets the same decision whatever its offset, partition, timestamp or value."""
    flt = make("sample", fraction=0.5)
    for key in KEYS[:200]:
        decisions = {
            flt(message(key=key, offset=o, partition=p, timestamp_ms=o, value=bytes([o % 256])))
            for o, p in ((1, 0), (99, 5), (123456, 2))
        }
        assert len(decisions) == 1


def test_sample_keeps_about_the_fraction() -> None:
    """Over 10k distinct keys, the kept share is within 2 points of the fraction."""
    messages = [message(key=k) for k in KEYS]
    for fraction in (0.01, 0.25, 0.5, 0.9):
        assert abs(kept_share(make("sample", fraction=fraction), messages) - fraction) < 0.02


def test_sample_matches_documented_hash() -> None:
    """The decision is BLAKE2b-64 of the key, big-endian, below fraction * 2**64 (stable across versions)."""
    flt = make("sample", fraction=0.5)
    for key in KEYS[:500]:
        bucket = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
        assert flt(message(key=key)) is (bucket < 2**63)


def test_sample_fraction_zero_and_one() -> None:
    """fraction 0 drops every record and fraction 1 keeps every record."""
    messages = [message(key=k) for k in KEYS[:1000]]
    assert kept_share(make("sample", fraction=0), messages) == 0
    assert kept_share(make("sample", fraction=1), messages) == 1


def test_sample_invert_keeps_the_complement() -> None:
    """A sample filter and its inverted twin keep disjoint sets that cover every record."""
    plain, inverted = make("sample", fraction=0.3), make("sample", fraction=0.3, invert=True)
    for key in KEYS[:2000]:
        assert plain(message(key=key)) != inverted(message(key=key))


def test_sample_seed_changes_the_sample() -> None:
    """A different seed picks a different sample of about the same size."""
    messages = [message(key=k) for k in KEYS]
    plain, seeded = make("sample", fraction=0.5), make("sample", fraction=0.5, seed="run-2")
    differing = sum(plain(m) != seeded(m) for m in messages)
    assert 0.4 < differing / len(messages) < 0.6
    assert abs(kept_share(seeded, messages) - 0.5) < 0.02


def test_sample_null_key_by_offset_is_deterministic_and_proportional() -> None:
    """By default null-key records are sampled by source coordinates: same record, same decision; about the fraction."""
    flt = make("sample", fraction=0.2)
    messages = [message(key=None, offset=o) for o in range(10_000)]
    assert [flt(m) for m in messages] == [make("sample", fraction=0.2)(m) for m in messages]
    assert abs(kept_share(flt, messages) - 0.2) < 0.02


def test_sample_null_key_by_offset_ignores_source_cluster() -> None:
    """A null-key decision does not depend on which source cluster of a pool the record came from."""
    flt = make("sample", fraction=0.5)
    for offset in range(200):
        m = message(key=None, offset=offset)
        assert flt(m) == flt(dataclasses.replace(m, source_cluster="west"))


def test_sample_null_key_keep_and_drop() -> None:
    """null_key: keep keeps every keyless record, drop drops them, and invert does not change that."""
    assert make("sample", fraction=0, null_key="keep", invert=True)(message(key=None)) is True
    assert make("sample", fraction=1, null_key="drop", invert=True)(message(key=None)) is False


@pytest.mark.parametrize("bad", [1.5, -0.1, True, "0.5", float("nan")])
def test_sample_fraction_out_of_range_is_config_error(bad: object) -> None:
    """fraction outside 0..1 (or not a number) is a config error at .fraction naming the filter."""
    err = config_error("sample", {"fraction": bad}, name="one-percent")
    assert err.path == "filters[0].config.fraction"
    assert "filter 'one-percent': expected a number from 0 to 1" in str(err)


def test_sample_requires_fraction() -> None:
    """A sample filter without fraction is a config error at .fraction."""
    assert config_error("sample", {}).path == "filters[0].config.fraction"


def test_sample_rejects_long_seed() -> None:
    """A seed longer than 64 bytes is a config error at .seed."""
    assert config_error("sample", {"fraction": 0.5, "seed": "x" * 65}).path == "filters[0].config.seed"


# --- time --------------------------------------------------------------------------------------


def test_time_window_is_half_open() -> None:
    """time keeps from <= ts < to: `from` itself is kept, `to` itself is dropped."""
    flt = make("time", **{"from": 1000, "to": 2000})
    assert flt(message(timestamp_ms=999)) is False
    assert flt(message(timestamp_ms=1000)) is True
    assert flt(message(timestamp_ms=1999)) is True
    assert flt(message(timestamp_ms=2000)) is False


def test_time_open_ended_windows() -> None:
    """time with only from keeps everything after it; with only to, everything before it."""
    assert make("time", **{"from": 1000})(message(timestamp_ms=10**15)) is True
    assert make("time", to=1000)(message(timestamp_ms=-1)) is True
    assert make("time", to=1000)(message(timestamp_ms=1000)) is False


def test_time_rfc3339_strings() -> None:
    """RFC 3339 bounds with Z or an offset mean the same instants as epoch milliseconds."""
    flt = make("time", **{"from": "2023-11-14T22:13:20Z", "to": "2023-11-15T00:13:20.001+02:00"})
    assert flt(message(timestamp_ms=TS - 1)) is False
    assert flt(message(timestamp_ms=TS)) is True
    assert flt(message(timestamp_ms=TS + 1)) is False


def test_time_accepts_yaml_datetime() -> None:
    """An aware datetime (what YAML makes of an unquoted timestamp) is accepted."""
    start = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    flt = make("time", **{"from": start})
    assert flt(message(timestamp_ms=TS)) is True
    assert flt(message(timestamp_ms=TS - 1)) is False


def test_time_sub_millisecond_bound_rounds_up() -> None:
    """A bound between two milliseconds excludes the millisecond before it (from) or includes it (to)."""
    half_ms = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc) + timedelta(microseconds=500)
    assert make("time", **{"from": half_ms})(message(timestamp_ms=TS)) is False
    assert make("time", to=half_ms)(message(timestamp_ms=TS)) is True


def test_time_invert_keeps_outside_window() -> None:
    """time with invert keeps records outside the window."""
    flt = make("time", **{"from": 1000, "to": 2000, "invert": True})
    assert flt(message(timestamp_ms=500)) is True
    assert flt(message(timestamp_ms=1500)) is False


@pytest.mark.parametrize("bad", ["2024-05-01T00:00:00", "2024-05-01", "yesterday", True, 1.5])
def test_time_rejects_bad_bound(bad: object) -> None:
    """A bound without UTC offset, a bare date, free text, a bool or a float is a config error at that key."""
    err = config_error("time", {"from": bad}, name="window")
    assert err.path == "filters[0].config.from"
    assert "filter 'window'" in str(err)


def test_time_rejects_empty_window() -> None:
    """to not later than from is a config error at .to."""
    err = config_error("time", {"from": 2000, "to": 2000})
    assert err.path == "filters[0].config.to"


def test_time_needs_a_bound() -> None:
    """A time filter with neither from nor to is a config error on the section."""
    assert config_error("time", {}).path == "filters[0].config"
