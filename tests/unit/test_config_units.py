"""Unit tests of relay.units (durations and sizes) and of ConfigError's message contract."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import ConfigError, RelayError, is_secret_path
from relay.units import format_duration, format_size, parse_duration, parse_size

PATH = "target.batch.max_bytes"


# --- ConfigError -------------------------------------------------------------------------------


def test_config_error_message_is_one_sentence_with_path_and_value() -> None:
    """str(ConfigError) names the key path, the expectation and the offending value in one line."""
    error = ConfigError(PATH, "expected a size like 16MiB", "16 MegaBytes")
    assert str(error) == "config key 'target.batch.max_bytes': expected a size like 16MiB, got '16 MegaBytes'"


def test_config_error_without_value_has_no_got_clause() -> None:
    """A ConfigError built without a value renders just the path and the message."""
    error = ConfigError("sources[0].topic", "environment variable TOPIC is not set")
    assert str(error) == "config key 'sources[0].topic': environment variable TOPIC is not set"
    assert not error.has_value


def test_config_error_with_empty_path_is_just_the_message() -> None:
    """A ConfigError about the file as a whole (path "") renders only its message."""
    assert str(ConfigError("", "config file 'relay.yaml' is empty")) == "config file 'relay.yaml' is empty"


def test_config_error_is_a_relay_error_with_code_and_exit_code() -> None:
    """ConfigError is a RelayError with code 'config' and exit code 2, while the root exits with 1."""
    error = ConfigError(PATH, "bad")
    assert isinstance(error, RelayError)
    assert (error.code, error.exit_code) == ("config", 2)
    assert (RelayError.code, RelayError.exit_code) == ("relay_error", 1)


def test_config_error_keeps_path_message_and_value() -> None:
    """The path, message and raw value stay available as attributes."""
    error = ConfigError(PATH, "bad", 7)
    assert (error.path, error.message, error.value, error.has_value) == (PATH, "bad", 7, True)


def test_config_error_survives_pickling() -> None:
    """A pickled and unpickled ConfigError has the same attributes and message."""
    error = pickle.loads(pickle.dumps(ConfigError(PATH, "bad", "x")))
    assert (error.path, error.message, error.value, str(error)) == (PATH, "bad", "x", str(error))
    assert not pickle.loads(pickle.dumps(ConfigError(PATH, "bad"))).has_value


def test_config_error_shortens_long_values() -> None:
    """A long offending value is cut so the message stays short."""
    assert len(str(ConfigError(PATH, "bad", "x" * 10_000))) < 200


@pytest.mark.parametrize(
    "path",
    [
        "sources[0].sasl_password",
        "sources[1].kafka.ssl.key.password",
        "target.s3.secret_access_key",
        "auth.token",
        "auth.OAuth_Token",
        "gcp.credentials",
        "sources[0].kafka.sasl.jaas.config",
        "sources[0].sasl_jaas_config",
    ],
)
@given(secret=st.text(min_size=1))
def test_secret_value_never_appears_in_message(path: str, secret: str) -> None:
    """For a secret-looking key path str(), args and repr() of the error show '***' instead of the value."""
    error = ConfigError(path, "expected a string", secret)
    assert is_secret_path(path)
    assert str(error) == f"config key '{path}': expected a string, got '***'"
    assert error.args == (str(error),)


@pytest.mark.parametrize("path", ["target.batch.max_bytes", "sources[0].bootstrap_servers", "sasl.mechanism"])
def test_ordinary_paths_are_not_secret(path: str) -> None:
    """Paths without a secret word show their value."""
    assert not is_secret_path(path)
    assert "'visible'" in str(ConfigError(path, "bad", "visible"))


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (0.5, 0.5),
        ("30", 30.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1s500ms", 1.5),
        ("1h2m3s4ms5us", 3723.004005),
        ("0.1s", 0.1),
        ("  45s ", 45.0),
        ("0ms", 0.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    """parse_duration turns each accepted spelling into the exact number of seconds."""
    assert parse_duration(value, "x.timeout") == seconds


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-1s",
        "-5",
        True,
        False,
        math.nan,
        math.inf,
        "nan",
        "inf",
        "",
        "   ",
        "s",
        "1d",
        "1H",
        "1S",
        "1 s",
        "1m 30s",
        "30s1m",
        "1m1m",
        "500msec",
        ".5s",
        "5.s",
        "1e3",
        "1_000",
        "+1s",
        "\u0661s",  # a non-ASCII digit
        None,
        [1],
        {"s": 1},
    ],
)
def test_parse_duration_rejects(value: object) -> None:
    """parse_duration raises ConfigError naming the key path for each rejected input."""
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "x.timeout")
    assert info.value.path == "x.timeout"
    assert str(info.value).startswith("config key 'x.timeout': expected ")


def test_parse_duration_error_names_units() -> None:
    """An unknown duration unit is answered with the list of accepted units."""
    with pytest.raises(ConfigError, match=r"units h, m, s, ms, us\), got '1d'"):
        parse_duration("1d", "x")


def test_parse_duration_rejects_misordered_units_with_a_hint() -> None:
    """Units out of order are rejected with a message saying largest to smallest."""
    with pytest.raises(ConfigError, match="largest to smallest"):
        parse_duration("30s1m", "x")


def test_parse_duration_rejects_overflowing_values() -> None:
    """A duration too large for a float is a ConfigError, not an OverflowError."""
    with pytest.raises(ConfigError, match="fits in a float"):
        parse_duration("9" * 400 + "h", "x")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (0.00025, "250us"),
        (1, "1s"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (3600, "1h"),
        (3600.25, "1h0.25s"),
        (5400, "1h30m"),
        (1e-7, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    """format_duration renders seconds, rounded to the microsecond, in the parse grammar."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf, True])
def test_format_duration_rejects_invalid(seconds: float) -> None:
    """format_duration refuses negative, non-finite and boolean input."""
    with pytest.raises(ValueError):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=2**52 - 1))
def test_duration_round_trips_at_microsecond_resolution(micros: int) -> None:
    """parse_duration(format_duration(k / 1e6)) == k / 1e6 for every whole number k of microseconds."""
    seconds = micros / 1_000_000
    assert parse_duration(format_duration(seconds), "x") == seconds


# --- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (512, 512),
        (2**70, 2**70),
        ("512", 512),
        ("0", 0),
        ("0B", 0),
        ("512B", 512),
        ("1KB", 1000),
        ("1MB", 1_000_000),
        ("5GB", 5_000_000_000),
        ("2TB", 2 * 10**12),
        ("1KiB", 1024),
        ("16MiB", 16 * 2**20),
        ("1GiB", 2**30),
        ("1TiB", 2**40),
        ("1.5GiB", 1_610_612_736),
        ("1.5KiB", 1536),
        ("0.001KiB", 1),
        ("1.0000001KB", 1000),
        (" 16MiB ", 16 * 2**20),
    ],
)
def test_parse_size_accepts(value: object, size: int) -> None:
    """parse_size turns each accepted spelling into bytes, flooring fractional results."""
    assert parse_size(value, PATH) == size


@pytest.mark.parametrize(
    "value",
    [
        -1,
        "-1",
        "-1KB",
        True,
        False,
        1.0,
        1.5,
        math.nan,
        "",
        "  ",
        "MiB",
        "1.5",
        "1.5B",
        "16 MiB",
        "16 MegaBytes",
        "16mib",
        "16MIB",
        "16Mb",
        "16mb",
        "1kb",
        "1k",
        "1K",
        "1PB",
        "1e6",
        "1_000",
        ".5MiB",
        "+1MiB",
        "16MiBs",
        "0x10",
        None,
        [16],
    ],
)
def test_parse_size_rejects(value: object) -> None:
    """parse_size raises ConfigError naming the key path for each rejected input."""
    with pytest.raises(ConfigError) as info:
        parse_size(value, PATH)
    assert info.value.path == PATH
    assert str(info.value).startswith(f"config key '{PATH}': expected a")


def test_parse_size_message_matches_the_documented_form() -> None:
    """A garbage size yields the documented sentence, with the accepted units listed."""
    with pytest.raises(ConfigError) as info:
        parse_size("16 MegaBytes", PATH)
    assert str(info.value) == (
        "config key 'target.batch.max_bytes': expected a size like 16MiB "
        "(unit 'MegaBytes' is not one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got '16 MegaBytes'"
    )


def test_parse_size_hints_at_case() -> None:
    """A unit that is only wrongly cased gets a did-you-mean hint."""
    with pytest.raises(ConfigError, match=r"case-sensitive: did you mean MiB\?"):
        parse_size("16mib", PATH)


def test_parse_size_hints_at_space() -> None:
    """A space between number and unit is rejected with a hint."""
    with pytest.raises(ConfigError, match="no space between the number and the unit"):
        parse_size("16 MiB", PATH)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1, "1B"),
        (512, "512B"),
        (1000, "1KB"),
        (1024, "1KiB"),
        (1536, "1536B"),
        (16 * 2**20, "16MiB"),
        (1_000_000, "1MB"),
        (1_024_000, "1000KiB"),
        (2**30, "1GiB"),
        (5 * 10**9, "5GB"),
        (2**40, "1TiB"),
        (2**50, "1024TiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    """format_size renders exactly, in the unit with the largest multiplier that divides the size."""
    assert format_size(size) == text


@pytest.mark.parametrize("size", [-1, True, 1.0])
def test_format_size_rejects_invalid(size: int) -> None:
    """format_size refuses negative, boolean and non-int input."""
    with pytest.raises(ValueError):
        format_size(size)


@given(st.integers(min_value=0, max_value=2**80))
def test_size_round_trips_exactly(size: int) -> None:
    """parse_size(format_size(n)) == n for every n >= 0: format_size is always exact."""
    assert parse_size(format_size(size), PATH) == size


@given(st.integers(min_value=0, max_value=2**20), st.sampled_from(["KiB", "MiB", "GiB", "KB", "MB", "GB"]))
def test_size_with_unit_is_count_times_multiplier(count: int, unit: str) -> None:
    """A whole count with a unit parses to count times that unit's multiplier."""
    multiplier = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}[unit]
    assert parse_size(f"{count}{unit}", PATH) == count * multiplier
