"""Wait-queue bookkeeping and the routing key of a copy back from a wait queue (no broker)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.errors import MAX_RETRY_DELAY
from domain_event_broker.topology import ROUTING_KEY_HEADER, SubscriberTopology
from domain_event_broker.wait_queues import WaitQueueBook, wait_delay_ms


def test_a_wait_queue_is_declared_once_per_connection() -> None:
    book = WaitQueueBook(idle_after=60, check_interval=1)
    assert book.needs_declare(500)
    book.declared(500, now=0)
    assert not book.needs_declare(500)
    book.forget()  # reconnected, or a copy came back unroutable
    assert book.needs_declare(500)


@given(
    delay_ms=st.integers(0, 3_600_000),
    last_use=st.floats(0, 1e6),
    later=st.floats(0, 1e7),
)
def test_a_wait_queue_is_idle_only_long_after_its_last_copy_expired(
    delay_ms: int, last_use: float, later: float
) -> None:
    book = WaitQueueBook(idle_after=60, check_interval=0)
    book.declared(delay_ms, now=0)
    book.used(delay_ms, now=last_use)
    now = last_use + later
    idle = book.idle(now)
    if idle:
        # our last copy expired at last_use + delay, and a minute passed since
        assert now - last_use > delay_ms / 1000 + 60
    else:
        assert now - last_use <= delay_ms / 1000 + 60


def test_idle_queues_are_looked_for_at_most_every_check_interval() -> None:
    book = WaitQueueBook(idle_after=0, check_interval=30)
    book.declared(100, now=0)
    assert book.idle(1) == []  # first look only after one interval
    assert book.idle(31) == [100]
    assert book.idle(40) == []
    book.still_holds_copies(100, now=61)  # refused: not empty; try again later
    assert book.idle(61.05) == []
    assert book.idle(95) == [100]
    book.removed(100)
    assert book.idle(200) == []
    assert book.needs_declare(100)


def test_the_routing_key_header_counts_only_on_copies_back_from_a_wait_queue() -> None:
    topology = SubscriberTopology("mailer", ("user.*",))
    headers = {ROUTING_KEY_HEADER: "user.registered"}
    assert topology.event_routing_key("mailer", headers) == "user.registered"
    assert topology.event_routing_key("mailer", {ROUTING_KEY_HEADER: b"user.x"}) == "user.x"
    # A publisher cannot re-route an event by setting the header.
    assert topology.event_routing_key("user.deleted", headers) == "user.deleted"
    assert topology.event_routing_key("mailer", None) == "mailer"
    assert topology.event_routing_key("mailer", {ROUTING_KEY_HEADER: 7}) == "mailer"
    assert topology.retry_destination(1500) == ("", "mailer-wait-1500")
    assert topology.legacy_wait_queue(1500) == "mailer-delay-1500"


@given(st.integers(min_value=0, max_value=MAX_RETRY_DELAY))
def test_a_whole_number_of_seconds_keeps_its_own_wait_queue(seconds: int) -> None:
    assert wait_delay_ms(seconds) == seconds * 1000
    assert wait_delay_ms(float(seconds)) == seconds * 1000


@given(st.floats(min_value=0.001, max_value=MAX_RETRY_DELAY, allow_nan=False))
def test_any_other_delay_waits_at_most_one_sixteenth_of_its_decade_off(delay: float) -> None:
    requested = round(delay * 1000)
    bucket = wait_delay_ms(delay)
    assert 0 < bucket < 2**32  # a valid x-message-ttl
    assert abs(bucket - requested) <= requested / 16 + 0.5
    assert wait_delay_ms(bucket / 1000) == bucket  # a bucket is its own bucket


def test_jittered_delays_from_one_to_three_seconds_share_at_most_twenty_wait_queues() -> None:
    picker = random.Random(20)
    buckets = {wait_delay_ms(picker.uniform(1, 3)) for _ in range(100_000)}
    assert len(buckets) <= 20
    assert min(buckets) == 1000 and max(buckets) == 3000
    assert sorted(buckets) == list(range(1000, 3001, 125))


def test_common_delays_are_kept() -> None:
    assert [wait_delay_ms(d) for d in (0, 0.5, 0.25, 1.5, 2.5, 5, 25, 30, 60, 300, 3600)] == [
        0,
        500,
        250,
        1500,
        2500,
        5000,
        25000,
        30000,
        60000,
        300000,
        3600000,
    ]
