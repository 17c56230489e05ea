"""Filter classes for the loader tests, loaded by dotted path (``tests.unit.filter_plugins:Class``)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from filters import FilterConfigError
from relay.message import Message


class Recording:
    """Appends ``(config['tag'], offset)`` to the list ``config['log']`` and returns ``config['keep']``."""

    def __init__(self, config: Mapping[str, object]) -> None:
        log = config["log"]
        assert isinstance(log, list)
        self.log: list[tuple[object, int]] = log
        self.tag = config.get("tag")
        self.keep = bool(config.get("keep", True))

    def __call__(self, message: Message) -> bool:
        self.log.append((self.tag, message.source_offset))
        return self.keep


class Raising:
    """Raises ``RuntimeError(config['text'])`` on every record."""

    def __init__(self, config: Mapping[str, object]) -> None:
        self.text = str(config.get("text", "boom"))

    def __call__(self, message: Message) -> bool:
        raise RuntimeError(self.text)


class ReturnsNone:
    """Forgets to return a decision."""

    def __init__(self, config: Mapping[str, object]) -> None:
        pass

    def __call__(self, message: Message) -> bool:
        return None  # type: ignore[return-value]


class Slow:
    """Keeps every record after sleeping ``config['ms']`` milliseconds."""

    def __init__(self, config: Mapping[str, object]) -> None:
        ms = config.get("ms", 1)
        assert isinstance(ms, int)
        self.seconds = ms / 1000

    def __call__(self, message: Message) -> bool:
        time.sleep(self.seconds)
        return True


class BadInit:
    """Its constructor fails with a plain ValueError."""

    def __init__(self, config: Mapping[str, object]) -> None:
        raise ValueError("threshold must be positive")

    def __call__(self, message: Message) -> bool:
        return True


class StrictConfig:
    """Rejects its ``password`` key with a FilterConfigError that carries the (secret) value."""

    def __init__(self, config: Mapping[str, object]) -> None:
        if "password" in config:
            raise FilterConfigError("password", "is wrong", config["password"])

    def __call__(self, message: Message) -> bool:
        return True


class Mutating:
    """Tries to write into its config."""

    def __init__(self, config: Mapping[str, object]) -> None:
        config["x"] = 1  # type: ignore[index]

    def __call__(self, message: Message) -> bool:
        return True


class Outer:
    """Holds a nested filter class, reachable as ``Outer.Inner``."""

    class Inner:
        """Keeps everything."""

        def __init__(self, config: Mapping[str, object]) -> None:
            pass

        def __call__(self, message: Message) -> bool:
            return True


class NotAFilter:
    """A class without ``__call__``."""

    def __init__(self, config: Mapping[str, object]) -> None:
        pass


def not_a_class(config: Mapping[str, object]) -> bool:
    """A function, not a class."""
    return True
