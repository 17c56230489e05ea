"""Start-up steps wait for clusters that do not answer: relay.startup.StartUp."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from relay.errors import passing
from relay.health import RelayHealth
from relay.settings import Backoff
from relay.sourcepool import SourceError
from relay.startup import StartUp, StartUpStopped, transient_reason
from relay.target import TargetError

FAST = Backoff(0.001, 0.002)


class Flaky:
    """Fails with each of ``errors`` in turn, then returns 42."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return 42


def test_a_step_that_fails_transiently_is_tried_again_until_it_succeeds() -> None:
    """Unreachable clusters and retriable broker errors are waited for; the step's result is returned."""
    health = RelayHealth()
    flaky = Flaky(
        passing(SourceError("no source cluster is usable (east: Local: Broker transport failure)")),
        KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)),
        KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
    )
    assert StartUp(health, threading.Event(), FAST).step("choosing a source", flaky) == 42
    assert flaky.calls == 4
    assert health.readiness()[1]["reasons"] == ["starting: the target has not started"]


def test_a_failure_that_does_not_pass_is_raised_at_once() -> None:
    """A missing topic, a refused password or any other error is raised on the first attempt, as before."""
    flaky = Flaky(TargetError("target t: topic 'x' does not exist and target.create_topics is false"))
    with pytest.raises(TargetError, match="does not exist"):
        StartUp(RelayHealth(), threading.Event(), FAST).step("reading positions", flaky)
    assert flaky.calls == 1
    assert transient_reason(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))) is None
    assert transient_reason(ValueError("bug")) is None


def test_a_stop_while_waiting_ends_start_up_with_exit_0() -> None:
    """SIGTERM during the wait ends it at once, with nothing relayed and exit code 0."""
    stopping = threading.Event()
    stopping.set()
    flaky = Flaky(passing(TargetError("target t is unreachable: Local: Broker transport failure")))
    with pytest.raises(StartUpStopped, match="target t is unreachable") as caught:
        StartUp(RelayHealth(), stopping, Backoff(30.0, 60.0)).step("reading positions", flaky)
    assert caught.value.exit_code == 0
