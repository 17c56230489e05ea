"""Errors the relay raises on purpose.

Contract: every error the relay raises on purpose is a :class:`RelayError`. Each leaf names a
short, stable ``code`` (for logs and metrics) and the process ``exit_code`` the command line uses
when that error ends a run. Messages are one sentence, without a trailing period, and never
contain a secret.

The leaves live next to the code that raises them: :class:`ConfigError` here,
``relay.sourcepool.SourceError``, ``relay.target.TargetError`` and ``TargetRestart``,
``filters.FilterError``. Each subclasses :class:`RelayError`, sets ``code`` and, when the run
should end with something other than 1, ``exit_code``. (The LFS SDK keeps its own root,
:class:`lfs.LfsError`, because it is usable without the relay.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final, TypeVar

SECRET_WORDS: Final = (
    "password",
    "passphrase",
    "secret",
    "token",
    "credentials",
    "sasl.jaas",
    "oauthbearer.config",
    "key.pem",
    "private",
)
"""Words that mark a config key path as secret: its value is never shown in a message.

``oauthbearer.config`` is librdkafka's free-form OAUTHBEARER settings string, which an
implementation may fill with a client secret.
"""

REDACTED: Final = "***"

_MAX_RENDERED: Final = 80


class _Missing:
    """Type of the sentinel that stands for "no value given"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __reduce__(self) -> str:
        return "_MISSING"


_MISSING: Final = _Missing()


def is_secret_path(path: str) -> bool:
    """Whether a dotted key path names a secret: it contains one of :data:`SECRET_WORDS`.

    The match is case-insensitive and treats ``_`` and ``-`` like ``.``, so ``sasl_jaas_config``,
    ``sasl.jaas.config`` and ``SASL-JAAS-Config`` are all secret.
    """
    normalized = re.sub(r"[_\-]", ".", path.lower())
    return any(word in normalized for word in SECRET_WORDS)


def _render_value(path: str, value: object) -> str:
    """Render an offending value for a message: ``repr``, shortened, or ``'***'`` for secrets."""
    if is_secret_path(path):
        return repr(REDACTED)
    text = repr(value)
    if len(text) > _MAX_RENDERED:
        text = text[: _MAX_RENDERED - 3] + "..."
    return text


class RelayError(Exception):
    """Root of every error the relay raises on purpose.

    ``transient`` marks one whose cause may pass by itself (a cluster that does not answer, a broker
    answering with a retriable error): start-up waits and tries again instead of stopping (see
    :mod:`relay.startup` and :func:`passing`).
    """

    code: str = "relay_error"
    exit_code: int = 1
    transient: bool = False


RelayErrorT = TypeVar("RelayErrorT", bound=RelayError)


def passing(exc: RelayErrorT) -> RelayErrorT:
    """``exc`` marked :attr:`RelayError.transient`: its cause may pass by itself."""
    exc.transient = True
    return exc


class ConfigError(RelayError):
    """The configuration is invalid, or cannot be read.

    ``path`` is the dotted key path of the offending setting (``sources[1].bootstrap_servers``,
    ``target.batch.max_bytes``), or ``""`` for the file as a whole. ``message`` says what was
    expected. ``value`` is the offending value, or a sentinel when none was given (see
    :attr:`has_value`).

    ``str()`` is one sentence::

        config key 'target.batch.max_bytes': expected a size like 16MiB, got '16 MegaBytes'

    When the path is secret (:func:`is_secret_path`) the value is rendered as ``'***'``. The
    exception's ``args`` hold only that rendered sentence, so ``repr()`` is safe to log too.
    """

    code = "config"
    exit_code = 2

    path: str
    message: str
    value: object

    def __init__(self, path: str, message: str, value: object = _MISSING) -> None:
        self.path = path
        self.message = message
        self.value = value
        super().__init__(self._render())

    @property
    def has_value(self) -> bool:
        """Whether an offending value was given (and is shown, or redacted, in the message)."""
        return self.value is not _MISSING

    def _render(self) -> str:
        text = f"config key '{self.path}': {self.message}" if self.path else self.message
        if self.has_value:
            text += f", got {_render_value(self.path, self.value)}"
        return text

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.message, self.value))


class SecretMasker:
    """Scrubs known secret values out of any text: the last line of defence for what the CLI prints.

    A :class:`ConfigError` already hides the value of a secret key; this catches what a message
    can carry without knowing it is a secret: an exception from a plugin that quotes its
    password, librdkafka echoing a value, a traceback. The application adds every secret of the
    loaded config (:meth:`add`) and passes every line it prints, and the log renderer, through it.

    A secret is replaced wherever it appears, also as it looks inside a Python ``repr`` or a JSON
    string (escaped quotes and backslashes). Values shorter than :attr:`MIN_LENGTH` are not
    scrubbed from free text: they cannot be told apart from ordinary words and digits, and
    replacing every ``1`` or ``ab`` in a log would garble it (such a value is no secret anyway).
    """

    MIN_LENGTH: Final = 4

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Remember ``secret``; from now on it is scrubbed."""
        if len(secret) < self.MIN_LENGTH or secret in self._secrets:
            return
        self._secrets.add(secret)
        forms = {
            form
            for s in self._secrets
            for form in (s, repr(s)[1:-1], json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1])
        }
        # Longest first, so a secret that contains another one is replaced whole.
        self._pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        return text if self._pattern is None else self._pattern.sub(REDACTED, text)
