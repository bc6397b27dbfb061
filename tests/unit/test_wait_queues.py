"""Wait-queue bookkeeping and the routing key of a copy back from a wait queue (no broker)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.topology import ROUTING_KEY_HEADER, SubscriberTopology
from domain_event_broker.wait_queues import WaitQueueBook


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
