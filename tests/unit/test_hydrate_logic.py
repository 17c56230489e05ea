"""Unit tests of the hydrate target's pure parts: header restoration, error headers and the payload window."""

from __future__ import annotations

import threading
import time

import pytest

from lfs import Envelope, ObjectNotFoundError, checksum
from targets.hydrate.limits import FRAMING, HEADER_OVERHEAD, Bound, ClaimLimits, record_overhead
from targets.hydrate.target import error_header, restored_headers, strip_positions
from targets.hydrate.window import Abandoned, PayloadWindow

SHA = checksum(b"abc")


def envelope(**fields: object) -> Envelope:
    values: dict[str, object] = {"bucket": "b", "key": "k", "size": 3, "sha256": SHA, **fields}
    return Envelope(**values)  # type: ignore[arg-type]


def test_original_headers_are_added_after_the_records_own() -> None:
    """original_headers missing from the record are appended, in the envelope's order."""
    env = envelope(original_headers={"traceparent": "00-1", "x-request-id": "r1"})
    assert restored_headers((("a", b"1"),), env) == (("a", b"1"), ("traceparent", b"00-1"), ("x-request-id", b"r1"))


def test_a_header_already_on_the_record_is_not_added_again() -> None:
    """An original header whose name the record already carries is left as the record has it."""
    env = envelope(original_headers={"traceparent": "00-envelope"})
    assert restored_headers((("traceparent", b"00-record"),), env) == (("traceparent", b"00-record"),)


def test_content_type_becomes_a_header_when_none_is_there() -> None:
    """content_type is added as content-type, unless a content-type header exists in any letter case."""
    env = envelope(content_type="image/png")
    assert restored_headers((), env) == (("content-type", b"image/png"),)
    assert restored_headers((("Content-Type", b"text/plain"),), env) == (("Content-Type", b"text/plain"),)
    both = envelope(content_type="image/png", original_headers={"content-type": "image/jpeg"})
    assert restored_headers((), both) == (("content-type", b"image/jpeg"),)


def test_headers_with_null_values_and_non_ascii_are_kept() -> None:
    """Record headers pass as they are (null values included) and original headers are UTF-8 encoded."""
    env = envelope(original_headers={"note": "grüße"})
    assert restored_headers((("empty", None),), env) == (("empty", None), ("note", "grüße".encode()))


def test_upstream_resume_positions_are_stripped() -> None:
    """kfr-pos headers that came with the source record are removed, other headers stay in order."""
    headers = (("a", b"1"), ("kfr-pos", b"v1 src 0:5"), ("b", None), ("kfr-pos", b"v1 src 0:9"))
    assert strip_positions(headers) == (("a", b"1"), ("b", None))


def test_error_header_names_kind_and_sentence_never_payload() -> None:
    """The error header is '<kind>: <sentence>' in UTF-8."""
    name, value = error_header(ObjectNotFoundError("bucket", "some/key"))
    assert name == "kfr-hydrate-error"
    assert value == b"missing_object: fetch failed: s3://bucket/some/key does not exist"


# -- the payload window --------------------------------------------------------------------------


def acquire_in_thread(window: PayloadWindow, ticket: tuple[int, int], n: int) -> tuple[threading.Thread, list[str]]:
    """Start acquiring in a thread; the list gets "ok" or "abandoned"."""
    result: list[str] = []

    def run() -> None:
        try:
            window.acquire(ticket, n)
            result.append("ok")
        except Abandoned:
            result.append("abandoned")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_window_grants_in_ticket_order() -> None:
    """A later ticket waits for an earlier one even when it would fit."""
    window = PayloadWindow(100, copies=1)
    first, second = window.ticket(), window.ticket()
    thread, result = acquire_in_thread(window, second, 10)
    time.sleep(0.1)
    assert result == []
    window.acquire(first, 10)
    thread.join(2)
    assert result == ["ok"] and (window.used, window.ahead) == (20, 20)


def test_window_reserves_the_producers_copies_until_commit() -> None:
    """A grant reserves copies x size; handing over keeps the reservation, the commit gives it back."""
    window = PayloadWindow(1000, copies=3)
    a = window.ticket()
    window.acquire(a, 100)
    assert (window.used, window.ahead) == (300, 100)
    window.handed_over(a[0], 100)
    assert (window.used, window.ahead) == (300, 0)
    window.release(a[0], 100)
    assert (window.used, window.ahead) == (0, 0)


def test_window_waits_for_room_while_a_fetch_is_ahead() -> None:
    """A reservation that does not fit waits while another fetch is ahead, until that one's grant is given back."""
    window = PayloadWindow(100, copies=2)
    a, b = window.ticket(), window.ticket()
    window.acquire(a, 40)
    thread, result = acquire_in_thread(window, b, 15)
    time.sleep(0.1)
    assert result == []
    window.release(a[0], 40, ahead=True)  # a's fetch failed
    thread.join(2)
    assert result == ["ok"] and (window.used, window.ahead) == (30, 15)


def test_window_grants_when_nothing_is_ahead_even_beyond_the_limit() -> None:
    """With only handed-over payloads held (they may wait for this record's batch), a fetch is granted anyway."""
    window = PayloadWindow(100, copies=3)
    a, b, c = window.ticket(), window.ticket(), window.ticket()
    window.acquire(a, 30)
    window.handed_over(a[0], 30)  # 90 reserved, nothing ahead
    window.acquire(b, 33)  # does not fit beside the 90 held: granted, since nothing is ahead
    assert (window.used, window.ahead) == (189, 33)
    thread, result = acquire_in_thread(window, c, 1)
    time.sleep(0.1)
    assert result == [], "with b ahead and the window full, c must wait"
    window.handed_over(b[0], 33)
    thread.join(2)
    assert result == ["ok"]


def test_no_single_payload_may_hold_more_than_the_whole_window() -> None:
    """A payload whose copies exceed the window is refused at once, whatever is held or ahead."""
    window = PayloadWindow(100, copies=3)
    assert window.max_payload == 33
    with pytest.raises(ValueError, match="34 bytes"):
        window.acquire(window.ticket(), 34)
    assert (window.used, window.ahead) == (0, 0)
    window.acquire(window.ticket(), 33)  # the refused ticket passed its turn on
    assert (window.used, window.ahead) == (99, 33)


def test_window_reset_abandons_waiters_and_ignores_old_releases() -> None:
    """After reset, waiting acquirers raise, old grants are forgotten and new tickets start afresh."""
    window = PayloadWindow(100, copies=1)
    a, b = window.ticket(), window.ticket()
    window.acquire(a, 90)
    thread, result = acquire_in_thread(window, b, 50)
    window.reset()
    thread.join(2)
    assert result == ["abandoned"] and window.used == 0
    fresh = window.ticket()
    window.acquire(fresh, 60)
    window.release(a[0], 90, ahead=True)
    window.handed_over(a[0], 90)
    assert (window.used, window.ahead) == (60, 60)


def test_window_close_refuses_everyone() -> None:
    """After close, every acquire raises at once."""
    window = PayloadWindow(100)
    ticket = window.ticket()
    window.close()
    with pytest.raises(Abandoned):
        window.acquire(ticket, 1)


# -- bounds on claimed sizes ------------------------------------------------------------------------


def test_a_claim_is_bounded_by_the_smallest_of_topic_producer_cap_and_window() -> None:
    """Each bound applies on its own, and the one that refuses a claim is the one named."""
    limits = ClaimLimits(max_object_size=None, producer_max=10_000_000, max_in_flight=90_000_000, copies=3)
    assert limits.smallest("t") == Bound(10_000_000 - FRAMING, "the producer's message.max.bytes is 10000000")
    limits.set_topic_limits({"t": 1_048_588})
    assert limits.smallest("t").limit == 1_048_588 - FRAMING and "max.message.bytes=1048588" in limits.smallest("t").why
    assert limits.smallest("other").limit == 10_000_000 - FRAMING  # no topic limit read: the producer's
    assert limits.refusal("t", 1_048_588 - FRAMING - 100, overhead=100) is None
    refused = limits.refusal("t", 1_048_588 - FRAMING - 99, overhead=100)
    assert refused is not None and "key and headers included" in refused.why
    capped = ClaimLimits(max_object_size=1000, producer_max=10_000_000, max_in_flight=90_000_000, copies=3)
    assert capped.smallest("t") == Bound(1000, "target.hydrate.max_object_size")
    small_window = ClaimLimits(max_object_size=None, producer_max=10_000_000, max_in_flight=3000, copies=3)
    assert small_window.smallest("t").limit == 1000 and "max_in_flight" in small_window.smallest("t").why


def test_record_overhead_counts_key_names_values_and_framing_per_header() -> None:
    """What a record adds to its payload: its key, and each header's name and value plus a few bytes."""
    assert record_overhead(None, ()) == 0
    assert record_overhead(b"key", (("n", b"vv"), ("é", None))) == 3 + (1 + 2 + HEADER_OVERHEAD) + (2 + HEADER_OVERHEAD)
