"""Which source topics the relay reads, and what each becomes: explicit names, patterns, rename templates.

The ``topics`` of a config are :class:`TopicRule` entries: an explicit source topic, or an anchored
regular expression (``source_pattern``) with ``exclude`` patterns. Every topic a rule selects gets
the rule's options and a target name made from its template (``{topic}``: the source topic's
name, ``{source}``: the source cluster's name). A :class:`TopicSelection` answers, for a list of
topic names, which are read and where each goes (:meth:`TopicSelection.routes`): an explicit
entry wins over a pattern, and among patterns the first that matches wins, so a topic has one
route. Internal topics (:data:`INTERNAL`) are never selected by a pattern, only by name, and
neither is a topic another relay mirrored here from the target cluster under the same template
(``{source}.{topic}`` mirroring from ``a`` into ``b`` never selects ``b.orders`` on ``a``): with a
prefix or suffix naming the cluster, two relays mirroring both ways never mirror a topic back,
as MirrorMaker 2's replication policy does.

:func:`collisions` refuses at config time any two rules that could send two source topics into
one target topic. Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

from relay.settings import GapPolicy, PartitionMode, TopicConfig, is_topic_name

INTERNAL: Final = (
    r"_.*",  # Kafka's own (__consumer_offsets, __transaction_state), _schemas, _confluent-*
    r".*-positions",  # the positions topics of relays (their default name)
    r"connect-(configs|offsets|status)",  # Kafka Connect's default storage topics
    r".*[.-]internal",  # MirrorMaker 2's offset syncs and checkpoints, Kafka Streams' changelogs
    r"heartbeats",  # MirrorMaker 2
)
"""Topics a pattern never selects (anchored): name one explicitly to relay it."""

PLACEHOLDERS: Final = ("{topic}", "{source}")
TOPIC_REFRESH: Final = 30.0
"""Seconds between two looks for topics that appeared or went away on the source (``topic_refresh``)."""


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable target name or template, or None."""
    rest = template.replace("{topic}", "t").replace("{source}", "s")
    if "{" in rest or "}" in rest:
        return "the only placeholders are {topic} and {source}"
    if not is_topic_name(rest):
        return "does not make a legal Kafka topic name"
    return None


def render(template: str, topic: str, source: str) -> str:
    """The target topic of source topic ``topic`` read from cluster ``source`` under ``template``."""
    return template.replace("{source}", source).replace("{topic}", topic)


@dataclass(frozen=True)
class TopicRule:
    """One ``topics`` entry: an explicit ``source`` topic, or an anchored ``pattern`` with ``exclude``
    patterns; ``target`` (a name or a template) and the options apply to every topic it selects."""

    source: str | None = None
    pattern: str | None = None
    exclude: tuple[str, ...] = ()
    target: str = "{topic}"
    partition: PartitionMode = "preserve"
    on_gap: GapPolicy = "fail"

    @cached_property
    def _compiled(self) -> tuple[re.Pattern[str] | None, tuple[re.Pattern[str], ...]]:
        pattern = re.compile(self.pattern) if self.pattern is not None else None
        return pattern, tuple(re.compile(p) for p in self.exclude)

    def selects(self, topic: str) -> bool:
        """Whether this rule's pattern (not an explicit name) takes ``topic``, internal topics aside."""
        pattern, excluded = self._compiled
        if pattern is None or pattern.fullmatch(topic) is None:
            return False
        return not any(e.fullmatch(topic) for e in excluded)

    def route(self, topic: str, source: str) -> TopicConfig:
        """The route of ``topic`` (read from cluster ``source``) under this rule."""
        return TopicConfig(topic, render(self.target, topic, source), self.partition, self.on_gap)

    def describe(self) -> str:
        """How logs and ``check`` name this rule."""
        if self.source is not None:
            return f"topic {self.source!r}"
        extra = f" excluding {', '.join(repr(e) for e in self.exclude)}" if self.exclude else ""
        return f"pattern {self.pattern!r}{extra}"


_INTERNAL = tuple(re.compile(p) for p in INTERNAL)


def is_internal(topic: str) -> bool:
    """Whether a pattern never selects ``topic`` (see :data:`INTERNAL`)."""
    return any(p.fullmatch(topic) for p in _INTERNAL)


@dataclass(frozen=True)
class TopicSelection:
    """The rules of a config, the source cluster's name (for ``{source}``) and how often to look for new topics."""

    rules: tuple[TopicRule, ...]
    source: str
    refresh: float = TOPIC_REFRESH
    target: str = ""
    """The target cluster's name: a topic named like a mirror of the target's topics is never selected."""

    @property
    def explicit(self) -> tuple[TopicConfig, ...]:
        """The routes of the explicit entries, known without asking the source."""
        return tuple(rule.route(rule.source, self.source) for rule in self.rules if rule.source is not None)

    @property
    def dynamic(self) -> bool:
        """Whether a rule is a pattern: the topics read depend on what the source holds."""
        return any(rule.pattern is not None for rule in self.rules)

    @cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(rule.source for rule in self.rules if rule.source is not None)

    def rule_of(self, topic: str) -> TopicRule | None:
        """The rule that takes ``topic``: its explicit entry, else the first pattern that selects it."""
        for rule in self.rules:
            if rule.source == topic:
                return rule
        if topic in self._names or is_internal(topic):
            return None
        return next((rule for rule in self.rules if rule.selects(topic) and not self._from_target(rule, topic)), None)

    def _from_target(self, rule: TopicRule, topic: str) -> bool:
        """Whether ``topic`` is named like a mirror of a target topic under ``rule``'s template naming
        the target cluster (only a template with ``{source}`` names a cluster)."""
        if not self.target or "{source}" not in rule.target:
            return False
        affixes = _affixes(rule.target, self.target)
        if affixes is None:
            return False
        head, tail = affixes
        return len(topic) > len(head) + len(tail) and topic.startswith(head) and topic.endswith(tail)

    def routes(self, topics: Iterable[str]) -> dict[str, TopicConfig]:
        """The route of each of ``topics`` that a rule takes (source topic -> route), explicit entries always."""
        found = {r.source: r for r in self.explicit}
        for topic in topics:
            rule = self.rule_of(topic)
            if rule is not None and topic not in found:
                found[topic] = rule.route(topic, self.source)
        return found

    def matches(self, topics: Iterable[str]) -> dict[int, list[str]]:
        """For each pattern rule (by index), the topics among ``topics`` it takes, sorted (for ``check``)."""
        out: dict[int, list[str]] = {i: [] for i, rule in enumerate(self.rules) if rule.pattern is not None}
        for topic in sorted(topics):
            rule = self.rule_of(topic)
            if rule is not None and rule.pattern is not None:
                out[self.rules.index(rule)].append(topic)
        return out


def _affixes(template: str, source: str) -> tuple[str, str] | None:
    """(prefix, suffix) around ``{topic}`` once ``{source}`` is filled in, or None for a fixed name."""
    filled = template.replace("{source}", source)
    if "{topic}" not in filled:
        return None
    head, _, tail = filled.partition("{topic}")
    return (head, tail) if "{topic}" not in tail else None


def collisions(rules: Sequence[TopicRule], source: str) -> tuple[int, str] | None:
    """(index, reason) of the first rule that could send a source topic into a target topic another one
    takes, or None. Two topics never share a target topic, so this errs on the side of refusing.

    A pattern rule's template must contain ``{topic}`` once (else all its matches would meet). An
    explicit entry's target is checked exactly against every other rule. Two patterns are safe
    when their templates are the same (different topics stay different) or when neither prefix
    starts the other or neither suffix ends the other (no name can have both shapes).
    """
    for i, rule in enumerate(rules):
        if rule.pattern is not None and _affixes(rule.target, source) is None:
            return i, "a pattern's target must contain {topic} once, or every topic it matches would go to one topic"
    for i, rule in enumerate(rules):
        for j in range(i):
            reason = _pair(rules[j], j, rule, source)
            if reason is not None:
                return i, reason
    return None


def _pair(first: TopicRule, j: int, second: TopicRule, source: str) -> str | None:
    if first.source is not None and second.source is not None:
        if first.route(first.source, source).target == second.route(second.source, source).target:
            return f"goes to the same target topic as topics[{j}]; each target topic takes exactly one source topic"
        return None
    if first.source is not None or second.source is not None:
        named, pattern = (first, second) if first.source is not None else (second, first)
        assert named.source is not None
        taken = named.route(named.source, source).target
        origin = _origin(pattern, taken, source)
        if origin is not None and origin != named.source:
            return (
                f"and topics[{j}] could both write target topic {taken!r} (source topics {named.source!r} and "
                f"{origin!r}); exclude one of them from the pattern or rename it"
            )
        return None
    a, b = _affixes(first.target, source), _affixes(second.target, source)
    assert a is not None and b is not None
    if a == b:
        return None
    disjoint_prefix = not (a[0].startswith(b[0]) or b[0].startswith(a[0]))
    disjoint_suffix = not (a[1].endswith(b[1]) or b[1].endswith(a[1]))
    if disjoint_prefix or disjoint_suffix:
        return None
    return (
        f"could send a topic into the same target topic as topics[{j}] (targets {first.target!r} and "
        f"{second.target!r} can make the same name); give them prefixes that cannot meet, e.g. 'a.' and 'b.'"
    )


def _origin(rule: TopicRule, target: str, source: str) -> str | None:
    """The source topic ``rule``'s pattern would send to ``target``, if any (internal topics aside)."""
    affixes = _affixes(rule.target, source)
    assert affixes is not None
    head, tail = affixes
    if not (target.startswith(head) and target.endswith(tail)) or len(target) < len(head) + len(tail):
        return None
    topic = target[len(head) : len(target) - len(tail)]
    return topic if topic and not is_internal(topic) and rule.selects(topic) else None


class Routes(Mapping[str, TopicConfig]):
    """Routes (source topic -> route) that grow while the relay runs, safe to read from any thread.

    One thread adds; a reader sees the mapping before or after an addition, never half of one:
    each addition replaces the dictionary instead of changing it.
    """

    def __init__(self, routes: Iterable[TopicConfig] = ()) -> None:
        self._map: dict[str, TopicConfig] = {r.source: r for r in routes}

    def __getitem__(self, topic: str) -> TopicConfig:
        return self._map[topic]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def add(self, routes: Iterable[TopicConfig]) -> None:
        """Add ``routes`` (a topic routed already keeps its route)."""
        self._map = {**{r.source: r for r in routes}, **self._map}


@dataclass
class Change:
    """Topics that appeared on the source and are selected (their routes), and topics that went away."""

    added: list[TopicConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)
