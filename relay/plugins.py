"""Loading a plugin class by dotted path, ``package.module:Class``: the one loader filters and targets use."""

from __future__ import annotations

import importlib


class PluginLoadError(Exception):
    """``package.module:Name`` could not be loaded; ``str()`` is the reason, one sentence without a subject."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_dotted_path(name: str) -> bool:
    """Whether ``name`` has the ``package.module:Name`` shape (as opposed to a built-in's name)."""
    module_name, sep, attr = name.partition(":")
    return bool(sep and module_name and attr)


def load_dotted(path: str) -> object:
    """The object ``package.module:Name`` names (``Name`` may be dotted: ``Outer.Inner``).

    Raises :class:`PluginLoadError` saying whether the path is malformed, the module is missing,
    importing it failed (with the exception's type and text) or the attribute is not there.
    """
    module_name, _, attr_path = path.partition(":")
    if not is_dotted_path(path):
        raise PluginLoadError("is not a path like package.module:Class")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise PluginLoadError(f"cannot be loaded: no module named '{exc.name}'") from exc
        raise PluginLoadError(f"cannot be loaded: {shorten(f'{type(exc).__name__}: {exc}')}") from exc
    except Exception as exc:  # whatever the module raised while importing is the reason
        raise PluginLoadError(f"cannot be loaded: {shorten(f'{type(exc).__name__}: {exc}')}") from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginLoadError(f"cannot be loaded: module '{module_name}' has no attribute '{attr_path}'") from None
    return obj
