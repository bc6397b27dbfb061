"""Confirm bookkeeping under random interleavings of submits, sends, confirms, nacks and losses."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain_event_broker.confirms import ConfirmBook, Pending
from domain_event_broker.errors import PublishError
from domain_event_broker.forking import ProcessSlot


class CountedPending(Pending):
    __slots__ = ("number", "settle_calls")

    def __init__(self, number: int) -> None:
        super().__init__(b"{}", "test.event", None)
        self.number = number  # its place in the hand-over order
        self.settle_calls = 0

    def settle(self, error: BaseException | None = None) -> bool:
        self.settle_calls += 1
        return super().settle(error)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class PublishInterleavings(RuleBasedStateMachine):
    """The I/O thread's view: a channel comes and goes, the broker confirms any way it likes."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.book = ConfirmBook(nack_grace=5.0, clock=self.clock)
        self.pendings: list[CountedPending] = []
        self.channel_open = False
        self.wire: list[CountedPending] = []  # what went out on the current channel, by tag - 1
        self.unencodable: set[int] = set()

    # Callers -------------------------------------------------------------------------------
    @rule(count=st.integers(1, 4))
    def submit(self, count: int) -> None:
        batch = [CountedPending(len(self.pendings) + i) for i in range(count)]
        self.pendings.extend(batch)
        self.book.submit(batch)

    @rule(data=st.data())
    def caller_gives_up(self, data: Any) -> None:
        if self.pendings:
            data.draw(st.sampled_from(self.pendings)).abandoned = True

    @rule(data=st.data())
    def a_caller_hands_over_an_unencodable_message(self, data: Any) -> None:
        self.submit(1)
        self.unencodable.add(self.pendings[-1].number)

    # The I/O thread ------------------------------------------------------------------------------
    @precondition(lambda self: not self.channel_open)
    @rule()
    def channel_opens(self) -> None:
        self.book.channel_opened()
        self.channel_open = True
        self.wire = []

    @precondition(lambda self: self.channel_open)
    @rule()
    def flush(self) -> None:
        def send(pending: Pending) -> bool:
            assert isinstance(pending, CountedPending)
            if pending.number in self.unencodable:
                pending.settle(PublishError("cannot encode"))
                return False
            self.wire.append(pending)
            return True

        self.book.send_all(send)

    @precondition(lambda self: self.channel_open)
    @rule(data=st.data(), accepted=st.booleans(), multiple=st.booleans())
    def broker_confirms(self, data: Any, accepted: bool, multiple: bool) -> None:
        if not self.wire:
            return
        tag = data.draw(st.integers(1, len(self.wire)))
        before = {p.number: p.settled for p in self.pendings}
        kept = self.book.confirmed(tag, multiple, accepted)
        covered = self.wire[:tag] if multiple else [self.wire[tag - 1]]
        for pending in covered:
            if accepted and not before[pending.number]:
                assert pending.settled and pending.error is None
        if kept:
            # The publisher renews the channel to send them again.
            self.channel_lost()

    @precondition(lambda self: self.channel_open)
    @rule()
    def channel_lost(self) -> None:
        self.book.channel_lost()
        self.channel_open = False

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    # What must always hold ---------------------------------------------------------------------
    @invariant()
    def never_settled_twice(self) -> None:
        for pending in self.pendings:
            assert pending.settle_calls <= 1, pending.number

    @invariant()
    def never_lost(self) -> None:
        book = self.book
        held = (
            [p.number for p in book.incoming]
            + [p.number for p in book._resend]
            + [p.number for p in book._unconfirmed.values()]
        )
        for pending in self.pendings:
            if pending.settled:
                continue
            count = held.count(pending.number)
            if pending.abandoned:
                assert count <= 1
            else:
                assert count == 1, (pending.number, held)

    @invariant()
    def each_channel_sends_in_hand_over_order(self) -> None:
        numbers = [pending.number for pending in self.wire]
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == len(numbers)

    @invariant()
    def a_refusal_is_final_only_after_the_grace(self) -> None:
        for pending in self.pendings:
            refused = isinstance(pending.error, PublishError) and "refused" in str(pending.error)
            if refused and pending.first_nacked is not None and not pending.abandoned:
                assert self.clock.now - pending.first_nacked >= 5.0


TestPublishInterleavings = PublishInterleavings.TestCase
TestPublishInterleavings.settings = settings(max_examples=300, stateful_step_count=40)


def make(n: int) -> list[CountedPending]:
    return [CountedPending(i) for i in range(n)]


def test_after_a_nack_the_refused_and_the_other_unconfirmed_go_out_again_in_order() -> None:
    book = ConfirmBook()
    pendings = make(4)
    book.submit(pendings)
    book.channel_opened()
    book.send_all(lambda pending: True)
    kept = book.confirmed(2, multiple=False, accepted=False)  # the 2nd is refused
    assert kept == [pendings[1]]
    book.channel_opened()  # the fresh channel; 1, 3 and 4 were not confirmed either
    book.submit(make(0))
    sent: list[Pending] = []
    book.send_all(lambda pending: sent.append(pending) or True)
    assert sent == pendings


def test_a_refusal_becomes_final_after_the_grace() -> None:
    clock = Clock()
    book = ConfirmBook("RabbitMQ at amqp://h/", nack_grace=5.0, clock=clock)
    (pending,) = make(1)
    book.submit([pending])
    book.channel_opened()
    book.send_all(lambda p: True)
    assert book.confirmed(1, False, False) == [pending]
    clock.now += 5.0
    book.channel_opened()
    book.send_all(lambda p: True)
    assert book.confirmed(1, False, False) == []
    assert pending.settled
    assert "refused an event for 'test.event'" in str(pending.error)


def test_fail_all_settles_everything_once() -> None:
    book = ConfirmBook()
    pendings = make(3)
    book.submit(pendings)
    book.channel_opened()

    def send(pending: Pending) -> bool:
        if pending is pendings[1]:
            pending.settle(PublishError("cannot encode"))  # send settles what it cannot send
            return False
        return True

    book.send_all(send)
    assert book.unconfirmed_count == 2
    assert book.fail_all(PublishError("stopped")) == 2
    assert [p.settle_calls for p in pendings] == [1, 1, 1]
    assert [str(p.error) for p in pendings] == ["stopped", "cannot encode", "stopped"]


# Fork during connect: a parent thread holds the connection slot's lock, connecting, when the
# process forks. The child inherits the lock held for ever; it must start afresh instead.


def test_a_forked_child_does_not_wait_on_the_lock_a_parent_thread_held() -> None:
    pid = [100]
    slot: ProcessSlot[str] = ProcessSlot(getpid=lambda: pid[0])
    connecting = threading.Event()
    release = threading.Event()

    def parent_connects() -> str:
        connecting.set()
        release.wait(5)
        return "parent connection"

    parent = threading.Thread(target=lambda: slot.get(lambda v: True, parent_connects))
    parent.start()
    connecting.wait(5)
    try:
        pid[0] = 101  # the fork happens now, the lock held by the connecting thread
        assert slot.get(lambda v: True, lambda: "child connection") == "child connection"
    finally:
        release.set()
        parent.join(5)


def test_a_forked_child_never_uses_nor_closes_the_parents_connection() -> None:
    pid = [100]
    slot: ProcessSlot[str] = ProcessSlot(getpid=lambda: pid[0])
    assert slot.get(lambda v: True, lambda: "parent connection") == "parent connection"
    pid[0] = 101
    assert slot.take() is None  # disconnect() in the child leaves the parent's socket alone
    assert slot.get(lambda v: True, lambda: "child connection") == "child connection"


@pytest.mark.parametrize("unusable", ["closed", "dead thread"])
def test_an_unusable_value_is_replaced(unusable: str) -> None:
    slot: ProcessSlot[str] = ProcessSlot()
    slot.get(lambda v: True, lambda: unusable)
    assert slot.get(lambda v: v != unusable, lambda: "fresh") == "fresh"
