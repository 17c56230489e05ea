"""Unit tests of how a log truncation reported by librdkafka is recognised (relay.sourcepool.truncation_end)."""

from __future__ import annotations

from confluent_kafka import KafkaError

from relay.sourcepool import OFFSET_ERRORS, truncation_end


def test_a_truncation_reported_under_auto_offset_reset_error_gives_the_log_s_new_end() -> None:
    """librdkafka reports a truncation as _AUTO_OFFSET_RESET whose text names the broker's end offset."""
    text = (
        "Partition log truncation detected at offset 600 (leader epoch 0): broker end offset is 400 (offset "
        "leader epoch 0). Reset to INVALID.: Local: Partition log truncation detected (broker 1)"
    )
    assert truncation_end(KafkaError(KafkaError._AUTO_OFFSET_RESET, text)) == 400


def test_the_truncation_code_alone_is_a_truncation_of_unknown_end() -> None:
    """_LOG_TRUNCATION without an end offset in its text: a truncation, end not said (-1)."""
    assert truncation_end(KafkaError(KafkaError._LOG_TRUNCATION)) == -1
    assert KafkaError._LOG_TRUNCATION in OFFSET_ERRORS


def test_an_ordinary_out_of_range_is_not_a_truncation() -> None:
    """An offset out of range says nothing about a truncation: the gate decides from the watermarks."""
    err = KafkaError(
        KafkaError._AUTO_OFFSET_RESET, "no previously committed offset available: Broker: Offset out of range"
    )
    assert truncation_end(err) is None
