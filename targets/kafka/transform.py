"""How the ``lfs`` and ``hydrate`` targets build on the Kafka target: a transform of what runs become.

The Kafka target commits runs as they were consumed. A :class:`Transform` changes what a run's
records become before they are produced: the LFS offload turns a large value into an envelope
(its upload started as the run was written), hydration turns an envelope into the payload it
stands for (its fetch started as the run was written). The transform never calls into the Kafka
target; the target calls it, at four points of a run's life:

1. :meth:`~Transform.begin`, on the relay's thread, as the run is written: start the work the run
   needs, and say what each record weighs in a batch;
2. :meth:`~Transform.outputs`, on the sender's thread, as the transaction holding the run is
   produced: the records to produce, in order, each waited for as needed. The plan keeps what it
   yields, so a retried transaction re-sends it and no record is ever transformed twice;
3. :meth:`~Transform.committed`, once the transaction committed (before the relay is told);
4. :meth:`~Transform.drop`, when the target drops what it holds (a restart, a failure, closing):
   work begun for runs that will never be committed is abandoned (the relay reads them again).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from relay.message import Message
from relay.run import Run


class Transform(Protocol):
    """What a target built on the Kafka target changes about its records. See the module docstring."""

    @property
    def extra_topics(self) -> tuple[str, ...]:
        """Topics besides the routes' target topics that :meth:`outputs` may send records to (a
        dead-letter topic); they are checked (or created) with the others."""
        ...

    def start(self) -> None:
        """Start background work (upload or fetch pools), before the first :meth:`begin`."""
        ...

    def topics_ready(self) -> None:
        """The target topics were checked (or created): their configs may be read now."""
        ...

    def routes_added(self, targets: Sequence[str]) -> None:
        """Target topics of source topics selected while running (live discovery); :meth:`topics_ready`
        follows once they are checked."""
        ...

    def begin(self, run: Run) -> tuple[Run, Sequence[int]]:
        """Start what ``run`` needs (the relay's thread); returns the run as the target keeps it (for
        example holding built records without the values offloaded) and each record's weight
        toward ``batch.max_bytes``."""
        ...

    def outputs(self, run: Run) -> Iterator[Message]:
        """The records to produce for ``run`` (as :meth:`begin` returned it), one per record, in order;
        waits for each record's work. A record may go to one of :attr:`extra_topics` instead of its
        own; it still counts for its source partition's position. Raises
        :class:`~relay.target.TargetError` for a record that must stop the relay."""
        ...

    def committed(self, runs: Sequence[Run]) -> None:
        """``runs`` are committed (the sender's thread): count their outcomes, release what they held."""
        ...

    def drop(self) -> None:
        """Abandon the work of every run not committed (any thread)."""
        ...

    def close(self) -> None:
        """Stop background work; called once, after the target's sender stopped."""
        ...
