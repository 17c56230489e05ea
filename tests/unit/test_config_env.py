"""Unit tests of kafka_lfs_relay.config.env: environment substitution, key paths and reading the YAML file."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafka_lfs_relay.config import join_index, join_key, load_yaml, substitute_env
from relay.errors import ConfigError

ENV = {"HOST": "kafka-1", "PORT": "9092", "EMPTY": "", "SECRET": "hunter2"}


# --- key paths ---------------------------------------------------------------------------------


def test_key_paths_join_keys_with_dots_and_items_with_brackets() -> None:
    """join_key and join_index build paths like sources[1].bootstrap_servers."""
    assert join_key(join_index(join_key("", "sources"), 1), "bootstrap_servers") == "sources[1].bootstrap_servers"


# --- substitute_env ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOST}", "kafka-1"),
        ("${HOST}:9092", "kafka-1:9092"),
        ("${HOST}:${PORT}", "kafka-1:9092"),
        ("PLAINTEXT://${HOST}:${PORT}/x", "PLAINTEXT://kafka-1:9092/x"),
        ("${EMPTY}", ""),
        ("no references", "no references"),
        ("", ""),
    ],
)
def test_substitute_set_variables(text: str, expected: str) -> None:
    """Set variables are replaced, whole or embedded, several per string."""
    assert substitute_env(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${MISSING:-localhost}:9092", "localhost:9092"),
        ("${HOST:-other}", "kafka-1"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${MISSING:-a:-b $x}", "a:-b $x"),
        ("${MISSING:-${HOST}", "${HOST"),
    ],
)
def test_substitute_defaults(text: str, expected: str) -> None:
    """${NAME:-default} gives the default, taken literally up to the first }, when NAME is unset or empty."""
    assert substitute_env(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$${HOST}", "${HOST}"),
        ("cost: $${MISSING}", "cost: ${MISSING}"),
        ("$${", "${"),
        ("$$${HOST}", "$${HOST}"),
        ("pa$$word", "pa$$word"),
        ("$HOST", "$HOST"),
        ("a$", "a$"),
        ("$${HOST}-${HOST}", "${HOST}-kafka-1"),
    ],
)
def test_substitute_escapes_and_lone_dollars(text: str, expected: str) -> None:
    """$${ becomes a literal ${ and any other $ is left as it is."""
    assert substitute_env(text, ENV) == expected


def test_substituted_text_is_not_rescanned() -> None:
    """A variable whose value looks like a reference is inserted literally."""
    assert substitute_env("${A}", {"A": "${HOST}"}) == "${HOST}"


def test_missing_variable_names_key_path_and_variable() -> None:
    """An unset variable without a default raises ConfigError at the key path, naming the variable."""
    tree = {"sources": [{"bootstrap_servers": "a:1"}, {"bootstrap_servers": "${NOPE}:9092"}]}
    with pytest.raises(ConfigError) as info:
        substitute_env(tree, ENV)
    assert info.value.path == "sources[1].bootstrap_servers"
    assert str(info.value) == ("config key 'sources[1].bootstrap_servers': environment variable NOPE is not set")


def test_missing_variable_message_shows_no_value() -> None:
    """The unset-variable error carries no value, so the rest of the string is never shown."""
    with pytest.raises(ConfigError) as info:
        substitute_env({"sasl": {"password": "hunter2${NOPE}"}}, ENV)
    assert not info.value.has_value
    assert "hunter2" not in str(info.value)


def test_missing_variable_at_top_level_uses_given_path() -> None:
    """A bare string is reported at the path passed in."""
    with pytest.raises(ConfigError) as info:
        substitute_env("${NOPE}", ENV, path="target.topic")
    assert info.value.path == "target.topic"


@pytest.mark.parametrize("text", ["${", "x${HOST", "${}", "${1X}", "${A B}", "${HOST-x}", "${HOST:x}", "${-}"])
def test_malformed_reference_is_rejected(text: str) -> None:
    """An unclosed ${, an empty or invalid name, or an unknown operator is a ConfigError."""
    with pytest.raises(ConfigError, match=r"expected environment references of the form") as info:
        substitute_env({"a": text}, ENV)
    assert info.value.path == "a"


def test_malformed_reference_in_secret_hides_value() -> None:
    """A malformed reference inside a secret setting is reported without the value."""
    with pytest.raises(ConfigError) as info:
        substitute_env({"s3": {"secret_key": "abc${def"}}, ENV)
    assert "abc" not in str(info.value)
    assert str(info.value).endswith("got '***'")


def test_substitute_walks_nested_tree_and_keeps_other_scalars() -> None:
    """Strings anywhere in the tree are substituted; keys, numbers, bools, None stay as they are."""
    tree = {
        "${HOST}": "key kept",
        "sources": [{"servers": ["${HOST}:${PORT}", 1], "tls": True}],
        "n": 3,
        "f": 1.5,
        "none": None,
    }
    assert substitute_env(tree, ENV) == {
        "${HOST}": "key kept",
        "sources": [{"servers": ["kafka-1:9092", 1], "tls": True}],
        "n": 3,
        "f": 1.5,
        "none": None,
    }


def test_substitute_results_stay_strings() -> None:
    """A substituted number stays a string; the model's parsers convert it."""
    assert substitute_env({"port": "${PORT}"}, ENV) == {"port": "9092"}


def test_substitute_does_not_mutate_input() -> None:
    """substitute_env returns a new tree and leaves its input untouched."""
    tree = {"a": ["${HOST}", {"b": "${PORT}"}]}
    before = copy.deepcopy(tree)
    result = substitute_env(tree, ENV)
    assert tree == before
    assert result is not tree


def test_substitute_rejects_recursive_trees() -> None:
    """A list that contains itself is a ConfigError at that key, not a RecursionError."""
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(ConfigError) as info:
        substitute_env({"a": loop}, ENV)
    assert info.value.path == "a[1]"


def test_substitute_accepts_shared_subtrees() -> None:
    """The same (non-recursive) subtree under two keys, as YAML aliases make, is fine."""
    shared = {"x": "${HOST}"}
    assert substitute_env({"a": shared, "b": shared}, ENV) == {"a": {"x": "kafka-1"}, "b": {"x": "kafka-1"}}


def test_substitute_works_with_os_environ() -> None:
    """os.environ is an acceptable env mapping."""
    name = next(iter(os.environ))
    assert substitute_env(f"${{{name}}}", os.environ) == os.environ[name]


@given(st.text().filter(lambda text: "$" not in text))
def test_strings_without_dollar_are_unchanged(text: str) -> None:
    """A string without any $ comes back unchanged."""
    assert substitute_env(text, ENV) == text


@given(st.text(alphabet=st.characters(exclude_characters="$}"), max_size=20))
def test_escaped_reference_is_literal(body: str) -> None:
    """$${...} always comes back as the literal ${...}, whatever it contains."""
    assert substitute_env(f"$${{{body}}}", {}) == f"${{{body}}}"


# --- load_yaml ---------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str | bytes, name: str = "relay.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_load_yaml_returns_the_mapping(tmp_path: Path) -> None:
    """A valid file loads as the mapping it holds."""
    path = _write(tmp_path, "sources:\n  - bootstrap_servers: a:9092\ntarget:\n  batch: {max_bytes: 16MiB}\n")
    assert load_yaml(path) == {
        "sources": [{"bootstrap_servers": "a:9092"}],
        "target": {"batch": {"max_bytes": "16MiB"}},
    }


def test_load_yaml_accepts_utf8_bom(tmp_path: Path) -> None:
    """A UTF-8 byte order mark at the start of the file is ignored."""
    assert load_yaml(_write(tmp_path, b"\xef\xbb\xbfa: 1\n")) == {"a": 1}


def test_load_yaml_allows_merge_keys_to_be_overridden(tmp_path: Path) -> None:
    """A key from a << merge may be overridden, as YAML intends."""
    text = "base: &b {acks: all, retries: 3}\ntarget:\n  <<: *b\n  retries: 5\n"
    assert load_yaml(_write(tmp_path, text)) == {
        "base": {"acks": "all", "retries": 3},
        "target": {"acks": "all", "retries": 5},
    }


def test_load_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error is a ConfigError naming the file and the 1-based line and column."""
    path = _write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    message = str(info.value)
    assert info.value.path == ""
    assert message.startswith(f"config file '{path}' is not valid YAML: ")
    assert "line 3, column 2" in message
    assert "\n" not in message


def test_load_yaml_bad_indentation_reports_its_line(tmp_path: Path) -> None:
    """A mapping-value error is reported at the line where the parser found it."""
    path = _write(tmp_path, "a:\n  b: 1\n c: 2\n")
    with pytest.raises(ConfigError, match=r"at line 3, column 2$"):
        load_yaml(path)


def test_load_yaml_rejects_duplicate_keys(tmp_path: Path) -> None:
    """A key repeated in one mapping is an error naming the key and its line."""
    path = _write(tmp_path, "target:\n  topic: a\ntarget:\n  topic: b\n")
    with pytest.raises(ConfigError, match=r"found duplicate key 'target' at line 3, column 1$"):
        load_yaml(path)


def test_load_yaml_refuses_python_tags(tmp_path: Path) -> None:
    """Tags that would build Python objects are rejected, as safe_load does."""
    path = _write(tmp_path, "a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match=r"could not determine a constructor .* at line 1, column 4$"):
        load_yaml(path)


def test_load_yaml_rejects_several_documents(tmp_path: Path) -> None:
    """A file holding more than one YAML document is rejected."""
    with pytest.raises(ConfigError, match="expected a single document"):
        load_yaml(_write(tmp_path, "a: 1\n---\nb: 2\n"))


def test_load_yaml_rejects_control_characters_with_position(tmp_path: Path) -> None:
    """A character YAML forbids is reported with its line and column."""
    with pytest.raises(ConfigError, match=r"special characters are not allowed at line 2, column 4$"):
        load_yaml(_write(tmp_path, "a: 1\nb: \x01\n"))


def test_load_yaml_rejects_non_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported with their line and column."""
    with pytest.raises(ConfigError, match=r"is not UTF-8 text: bad byte at line 2, column 5$"):
        load_yaml(_write(tmp_path, b"a: 1\nb: x\xff\n"))


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == f"config file '{path}' does not exist"
    assert info.value.path == ""


def test_load_yaml_directory(tmp_path: Path) -> None:
    """A directory given as the config file is a ConfigError."""
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)


def test_load_yaml_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the OS refuses to read is a ConfigError naming it and the OS reason."""
    path = _write(tmp_path, "a: 1\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == f"cannot read config file '{path}': Permission denied"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_load_yaml_empty_file(tmp_path: Path, text: str) -> None:
    """A file with no YAML document (empty, blank or only comments) is reported as empty."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == f"config file '{path}' is empty"


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "a list"), ("just text\n", "a string"), ("42\n", "a number"), ("true\n", "a boolean")],
)
def test_load_yaml_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    """A top level that is not a mapping is a ConfigError saying what it is."""
    with pytest.raises(ConfigError, match=f"must hold a mapping of settings at the top level, not {kind}$"):
        load_yaml(_write(tmp_path, text))


def test_load_yaml_rejects_recursive_alias(tmp_path: Path) -> None:
    """An alias that refers to a node containing it is a ConfigError at that key."""
    with pytest.raises(ConfigError) as info:
        load_yaml(_write(tmp_path, "a: &x [1, *x]\n"))
    assert info.value.path == "a[1]"
