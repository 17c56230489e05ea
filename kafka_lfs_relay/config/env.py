"""Reading the YAML config file and substituting environment variables into it.

Key paths name a setting inside the loaded tree: mapping keys are joined with ``.`` and list
items are written ``[i]``, e.g. ``sources[0].bootstrap_servers`` (:func:`join_key`,
:func:`join_index`). Every error is a :class:`ConfigError` carrying such a path (``""`` for the
file as a whole).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Final

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from relay.errors import ConfigError, is_secret_path
from relay.options import EnvText

_REFERENCE_RE: Final = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_BODY_RE: Final = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.ASCII | re.DOTALL)
_MALFORMED: Final = (
    "expected environment references of the form ${NAME} or ${NAME:-default} (write $${ for a literal ${)"
)
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def join_key(path: str, key: object) -> str:
    """The path of mapping entry ``key`` under ``path``: ``target`` + ``batch`` -> ``target.batch``."""
    return f"{path}.{key}" if path else str(key)


def join_index(path: str, index: int) -> str:
    """The path of list item ``index`` under ``path``: ``sources`` + 0 -> ``sources[0]``."""
    return f"{path}[{index}]"


def _substitute_string(text: str, env: Mapping[str, str], path: str, secrets: set[str] | None) -> str:
    substituted = False

    def replace(match: re.Match[str]) -> str:
        nonlocal substituted
        if match.group(0) == "$${":
            return "${"
        body = match.group("body")
        parsed = None if body is None else _BODY_RE.fullmatch(body)
        if parsed is None:
            raise ConfigError(path, _MALFORMED, text)
        name, default = parsed.group("name"), parsed.group("default")
        current = env.get(name)
        value = default if default is not None and not current else current
        if value is None:
            raise ConfigError(path, f"environment variable {name} is not set")
        if secrets is not None and (is_secret_path(path) or is_secret_path(name)):
            secrets.add(value)
        substituted = True
        return value

    result = _REFERENCE_RE.sub(replace, text)
    return EnvText(result) if substituted else result


def _substitute(
    tree: object, env: Mapping[str, str], path: str, ancestors: frozenset[int], secrets: set[str] | None
) -> object:
    if isinstance(tree, str):
        return _substitute_string(tree, env, path, secrets)
    if isinstance(tree, dict | list):
        if id(tree) in ancestors:
            raise ConfigError(path, "a YAML alias refers to a node that contains it")
        inner = ancestors | {id(tree)}
        if isinstance(tree, dict):
            return {key: _substitute(item, env, join_key(path, key), inner, secrets) for key, item in tree.items()}
        return [_substitute(item, env, join_index(path, index), inner, secrets) for index, item in enumerate(tree)]
    return tree


def substitute_env(tree: object, env: Mapping[str, str], path: str = "", secrets: set[str] | None = None) -> object:
    """A copy of a YAML-loaded ``tree`` with environment references in its strings replaced.

    Only string values are rewritten (not mapping keys, not other scalars). A string with a
    reference becomes :class:`relay.options.EnvText`: still text (``"${PORT}"`` becomes
    ``"9092"``, and a librdkafka property or a password keeps its exact characters), but a key
    that takes a number or a boolean reads it as one (``max_records: ${MAX:-20000}``,
    ``stop_at_end: ${STOP:-false}``); sizes and durations read text anyway. Inside a string:

    * ``${NAME}`` is the value of ``NAME`` in ``env`` (which may be empty);
    * ``${NAME:-default}`` is ``default`` when ``NAME`` is unset *or empty*, as in the shell; the
      default is the text up to the first ``}`` and is taken literally;
    * ``$${`` is a literal ``${``; any other ``$`` is kept as it is;
    * ``NAME`` is ``[A-Za-z_][A-Za-z0-9_]*``.

    References may be embedded (``"${HOST}:9092"``) and several per string. Substituted text is
    not scanned again. The input is not modified. ``path`` is the key path of ``tree`` itself.

    ``secrets``, if given, collects every substituted value that is a secret: one substituted into
    a secret key path, or taken from a variable whose name looks secret (``${KAFKA_PASSWORD}``,
    ``${OAUTH_SECRET}`` inside ``sasl.oauthbearer.config``), both as :func:`is_secret_path`
    judges names. Other substituted values (``${BROKERS}``) are ordinary settings.

    Raises :class:`ConfigError` naming the key path: for a variable that is unset without a
    default (the message names the variable and never a value), for a malformed reference such
    as ``${1X}`` or an unclosed ``${``, and for a recursive YAML alias.
    """
    return _substitute(tree, env, path, frozenset(), secrets)


def secret_values(tree: object, path: str = "") -> set[str]:
    """Every value in a loaded ``tree`` that sits under a secret key path (:func:`is_secret_path`).

    Strings and numbers count (``sasl.password: 12345678`` is a secret too); booleans do not.
    """
    if isinstance(tree, dict):
        return {v for key, item in tree.items() for v in secret_values(item, join_key(path, key))}
    if isinstance(tree, list):
        return {v for index, item in enumerate(tree) for v in secret_values(item, join_index(path, index))}
    if isinstance(tree, str | int | float) and not isinstance(tree, bool) and is_secret_path(path):
        return {str(tree)}
    return set()


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also rejects a key repeated in one mapping.

    Keys brought in by a ``<<`` merge may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character position in ``text``."""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return line, column


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a value of type {type(value).__name__}"


def _find_cycle(tree: object, path: str, ancestors: frozenset[int]) -> str | None:
    """The key path of the first alias that refers to a node containing it, if any."""
    if not isinstance(tree, dict | list):
        return None
    if id(tree) in ancestors:
        return path
    inner = ancestors | {id(tree)}
    items = (
        ((join_key(path, key), item) for key, item in tree.items())
        if isinstance(tree, dict)
        else ((join_index(path, index), item) for index, item in enumerate(tree))
    )
    for item_path, item in items:
        found = _find_cycle(item, item_path, inner)
        if found is not None:
            return found
    return None


def load_yaml(path: Path) -> object:
    """Read the config file at ``path``: one YAML document whose top level is a mapping.

    The file must be UTF-8 (a BOM is allowed). It is parsed like ``yaml.safe_load`` except that
    a key repeated in one mapping is an error. Raises :class:`ConfigError` with path ``""`` and
    a one-sentence message naming the file when it is missing or unreadable, is not UTF-8, is
    not valid YAML (with the 1-based line and column of the problem), holds no document (empty
    or only comments), has a top level that is not a mapping, or contains a recursive alias.
    """
    name = f"config file '{path}'"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("", f"{name} does not exist") from None
    except IsADirectoryError:
        raise ConfigError("", f"{name} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read {name}: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError("", f"{name} is not UTF-8 text: bad byte at line {line}, column {column}") from None
    try:
        tree = yaml.load(text, Loader=_StrictSafeLoader)  # a SafeLoader subclass: plain data only
    except yaml.MarkedYAMLError as exc:
        parts = [part for part in (exc.context, exc.problem) if part]
        problem = _one_line(", ".join(parts) or "syntax error")
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError("", f"{name} is not valid YAML: {problem}{where}") from None
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        raise ConfigError(
            "", f"{name} is not valid YAML: {_one_line(exc.reason)} at line {line}, column {column}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{name} is not valid YAML: {_one_line(str(exc))}") from None
    if tree is None:
        raise ConfigError("", f"{name} is empty")
    if not isinstance(tree, dict):
        raise ConfigError("", f"{name} must hold a mapping of settings at the top level, not {_kind(tree)}")
    cycle = _find_cycle(tree, "", frozenset())
    if cycle is not None:
        raise ConfigError(cycle, f"a YAML alias in {name} refers to a node that contains it")
    return tree
