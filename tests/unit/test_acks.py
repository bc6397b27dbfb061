"""The ack book over random interleavings of deliveries, completions and connection losses.

A small model of one RabbitMQ consume channel checks every ack the book asks
for, as the broker would: a ``multiple`` ack must name an outstanding tag and
settles every outstanding tag up to it; a single ack must name an outstanding
tag. On top of what the broker checks: nothing still being handled is acked,
each delivery is settled exactly once, and the book holds no more tags than
the broker has outstanding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from domain_event_broker.acks import AckBook, Acks, Ticket

PREFETCH = 8


@dataclass
class Channel:
    """What RabbitMQ knows about one consume channel."""

    next_tag: int = 1
    outstanding: set[int] = field(default_factory=set)
    settled: list[int] = field(default_factory=list)

    def deliver(self) -> int:
        tag = self.next_tag
        self.next_tag += 1
        self.outstanding.add(tag)
        return tag

    def ack(self, acks: Acks, being_handled: set[int]) -> None:
        if acks.multiple_up_to is not None:
            top = acks.multiple_up_to
            assert top in self.outstanding, "multiple ack of a settled tag: PRECONDITION_FAILED"
            covered = {tag for tag in self.outstanding if tag <= top}
            assert not covered & being_handled, "acked a delivery still being handled"
            self._settle(covered)
        for tag in acks.singles:
            assert tag in self.outstanding, "unknown delivery tag: PRECONDITION_FAILED"
            assert tag not in being_handled
            self._settle({tag})

    def nack(self, tag: int) -> None:
        assert tag in self.outstanding
        self._settle({tag})

    def _settle(self, tags: set[int]) -> None:
        self.outstanding -= tags
        self.settled += sorted(tags)


steps = st.lists(
    st.tuples(
        st.sampled_from(["deliver", "finish", "nack", "flush", "lose", "stale"]),
        st.integers(min_value=0, max_value=1000),
    ),
    max_size=200,
)


@settings(max_examples=400, deadline=None)
@given(steps)
def test_random_interleavings_never_ack_unfinished_work_and_settle_each_delivery_once(
    plan: list[tuple[str, int]],
) -> None:
    book = AckBook()
    channel = Channel()
    being_handled: dict[int, Ticket] = {}  # tag -> ticket, on the current channel
    old_tickets: list[Ticket] = []  # outcomes of a lost channel, still on their way
    for action, pick in plan:
        if action == "deliver" and len(channel.outstanding) < PREFETCH:
            tag = channel.deliver()
            being_handled[tag] = book.delivered(tag)
        elif action in ("finish", "nack") and being_handled:
            tag = sorted(being_handled)[pick % len(being_handled)]
            ticket = being_handled.pop(tag)
            if action == "finish":
                book.finished(ticket)
            elif book.settle_alone(ticket):
                channel.nack(tag)
        elif action == "flush":
            channel.ack(book.take_acks(), set(being_handled))
        elif action == "lose":
            # RabbitMQ requeues everything outstanding; a new channel numbers from 1.
            old_tickets += being_handled.values()
            being_handled.clear()
            book.reset()
            channel = Channel()
        elif action == "stale" and old_tickets:
            ticket = old_tickets.pop(pick % len(old_tickets))
            book.finished(ticket)  # must not touch the new channel's deliveries
            assert not book.settle_alone(ticket)
        assert book.size <= len(channel.outstanding), "the book grew past the broker's view"
    # Let everything finish: each delivery of the live channel is settled exactly once.
    for ticket in being_handled.values():
        book.finished(ticket)
    channel.ack(book.take_acks(), set())
    assert channel.outstanding == set()
    assert len(channel.settled) == len(set(channel.settled)) == channel.next_tag - 1
    assert book.size == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=2000))
def test_memory_stays_bounded_while_every_event_fails(count: int) -> None:
    book = AckBook()
    for tag in range(1, count + 1):
        ticket = book.delivered(tag)
        assert book.settle_alone(ticket)  # a failed event, its copy refused: nacked alone
        assert book.take_acks() == Acks(None, ())
    assert book.size == 0


def test_in_order_completions_are_acked_with_one_multiple_ack() -> None:
    book = AckBook()
    tickets = [book.delivered(tag) for tag in range(1, 11)]
    for ticket in tickets:
        book.finished(ticket)
    assert book.take_acks() == Acks(10, ())


def test_a_slow_first_delivery_holds_back_the_multiple_ack_but_not_the_others() -> None:
    book = AckBook()
    slow, *rest = [book.delivered(tag) for tag in range(1, 5)]
    for ticket in rest:
        book.finished(ticket)
    assert book.take_acks() == Acks(None, (2, 3, 4))
    book.finished(slow)
    assert book.take_acks() == Acks(1, ())


def test_tags_far_apart_are_still_acked_right() -> None:
    # RabbitMQ numbers deliveries 1, 2, 3...; the book must not rely on it.
    book = AckBook()
    first, far, farther = (book.delivered(tag) for tag in (1, 1000, 5000))
    book.finished(first)
    book.finished(farther)
    assert book.take_acks() == Acks(1, (5000,))
    book.finished(far)
    assert book.take_acks() == Acks(1000, ())
    assert book.size == 0
