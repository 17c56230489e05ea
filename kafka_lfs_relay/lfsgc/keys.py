"""Reading object keys back: which of a bucket's keys this relay wrote, and for which source record.

The ``lfs`` target names every object with its ``key_template`` (:class:`targets.lfs.config.KeyTemplate`):
the prefix, the relay's name, the source topic (or target topic), partition and offset, and the
payload's SHA-256, with separators that keep any two records apart. :class:`KeyPattern` turns the
template back into a regular expression, so that a listed key either parses into those parts (an
object this relay wrote) or does not (someone else's: never touched).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from urllib.parse import quote

from targets.lfs.config import KeyTemplate

_FIELDS = {
    "topic": r"(?P<topic>[A-Za-z0-9._-]+)",
    "target_topic": r"(?P<target_topic>[A-Za-z0-9._-]+)",
    "partition": r"(?P<partition>[0-9]+)",
    "offset": r"(?P<offset>[0-9]+)",
    "sha256": r"(?P<sha256>[0-9a-f]{64})",
}


@dataclass(frozen=True)
class KeyParts:
    """What a key of this relay says about its object: the source record it was stored for."""

    topic: str | None
    target_topic: str | None
    partition: int
    offset: int
    sha256: str


class KeyPattern:
    """The keys ``template`` renders for the relay called ``relay`` under ``prefix``."""

    def __init__(self, template: KeyTemplate, prefix: str, relay: str) -> None:
        # Constants first, as render() does; then empty path segments go, as render() drops them.
        constant = template.template.replace("{prefix}", _literal(prefix)).replace(
            "{relay}", _literal(quote(relay, safe=""))
        )
        normalized = "/".join(segment for segment in constant.split("/") if segment)
        pattern = ""
        for literal, name, _spec, _conversion in string.Formatter().parse(normalized):
            pattern += re.escape(literal)
            if name is not None:
                pattern += _FIELDS[name]
        self.regex = re.compile(pattern + r"\Z")
        self.list_prefix = _unescape(normalized.split("{", 1)[0])
        """Every key of this relay starts with this: list the bucket under it."""

    def parse(self, key: str) -> KeyParts | None:
        """The parts of ``key``, or None if this relay does not write such a key."""
        match = self.regex.match(key)
        if match is None:
            return None
        fields = match.groupdict()
        return KeyParts(
            fields.get("topic"),
            fields.get("target_topic"),
            int(fields["partition"]),
            int(fields["offset"]),
            fields["sha256"],
        )


def _literal(text: str) -> str:
    """``text`` as literal template text (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def _unescape(text: str) -> str:
    return text.replace("{{", "{").replace("}}", "}")
