"""Which deliveries of a consume channel to ack, and how: pure bookkeeping, no I/O.

RabbitMQ numbers the deliveries of a channel 1, 2, 3, ... A ``multiple`` ack
of tag ``T`` settles every unsettled delivery up to ``T`` in one frame, so it
is safe only when none of them is still being handled; RabbitMQ also refuses
one whose own tag ``T`` is settled already. The book keeps just two sets, both
bounded by the prefetch count: deliveries being handled (or whose failure copy
is being stored) and handled ones not acked yet. Deliveries settled one by one
(a nack) leave the book at once, so nothing grows while every event fails.

>>> book = AckBook()
>>> first, second, third = (book.delivered(tag) for tag in (1, 2, 3))
>>> book.finished(second)
>>> book.take_acks()  # 1 is still being handled: 2 is acked on its own
Acks(multiple_up_to=None, singles=(2,))
>>> book.finished(first)
>>> book.take_acks()
Acks(multiple_up_to=1, singles=())

After a lost connection (:meth:`AckBook.reset`) the tickets of the old
channel are stale: RabbitMQ redelivers those events, and nothing acks them.
"""

from __future__ import annotations

from typing import NamedTuple


class Ticket(NamedTuple):  # a tuple: built for every delivery, several times cheaper
    """One delivery: its tag, on the channel of one connection (``generation``)."""

    generation: int
    tag: int


class Acks(NamedTuple):
    """What to send: one ``multiple`` ack up to a tag (if any), then single acks."""

    multiple_up_to: int | None
    singles: tuple[int, ...]

    def __bool__(self) -> bool:
        return self.multiple_up_to is not None or bool(self.singles)


NO_ACKS = Acks(None, ())
#: Tags walked from the lower bound before looking at every unfinished tag.
_WALK = 16


class AckBook:
    """Delivery tags of the current consume channel: being handled, or handled and due an ack."""

    def __init__(self) -> None:
        self.generation = 0
        self._unfinished: set[int] = set()
        self._due: set[int] = set()
        # No unfinished tag is below it. RabbitMQ numbers a channel's deliveries
        # 1, 2, 3, ...: finding the oldest unfinished one walks a few tags from
        # here, not the whole set (it runs once per ack sent).
        self._oldest_bound = 0

    def reset(self) -> None:
        """The channel is gone: forget its deliveries; their tickets become stale."""
        self.generation += 1
        self._unfinished.clear()
        self._due.clear()
        self._oldest_bound = 0

    def delivered(self, tag: int) -> Ticket:
        """RabbitMQ delivered ``tag`` on the current channel."""
        self._unfinished.add(tag)
        if tag < self._oldest_bound:
            self._oldest_bound = tag
        return Ticket(self.generation, tag)

    def is_current(self, ticket: Ticket) -> bool:
        return ticket.generation == self.generation

    def finished(self, ticket: Ticket) -> None:
        """The delivery may be acked (handled, dropped, or its copy is stored)."""
        if ticket.generation == self.generation and ticket.tag in self._unfinished:
            self._unfinished.remove(ticket.tag)
            self._due.add(ticket.tag)

    def settle_alone(self, ticket: Ticket) -> bool:
        """Take the delivery out of the book: the caller nacks it on its own.

        Returns False for a stale or already settled ticket (then send nothing).
        """
        if ticket.generation != self.generation or ticket.tag not in self._unfinished:
            return False
        self._unfinished.remove(ticket.tag)
        return True

    def take_acks(self) -> Acks:
        """The acks to send now for every delivery due one; they leave the book.

        The multiple ack ends at the newest due tag below the oldest delivery
        still unfinished: every unsettled tag up to it is due. Due tags above
        that are acked one by one.
        """
        due = self._due
        if not due:
            return NO_ACKS
        oldest_unfinished = self._oldest_unfinished()
        if oldest_unfinished is None:
            acks = Acks(max(due), ())
        else:
            below = [tag for tag in due if tag < oldest_unfinished]
            above = sorted(tag for tag in due if tag > oldest_unfinished)
            acks = Acks(max(below) if below else None, tuple(above))
        due.clear()
        return acks

    def _oldest_unfinished(self) -> int | None:
        unfinished = self._unfinished
        if not unfinished:
            return None
        tag = self._oldest_bound
        for _ in range(_WALK):
            if tag in unfinished:
                break
            tag += 1
        else:  # tags with gaps (not RabbitMQ's numbering): look at them all
            tag = min(unfinished)
        self._oldest_bound = tag
        return tag

    @property
    def unsettled(self) -> int:
        """Deliveries not acked or nacked yet (being handled, or due an ack)."""
        return len(self._unfinished) + len(self._due)

    @property
    def size(self) -> int:
        """Tags held in memory (never more than the deliveries RabbitMQ has outstanding)."""
        return len(self._unfinished) + len(self._due)


class StreamAcks:
    """The acks of a stream consumer (the archive): its credit, not its progress.

    A stream keeps every message whatever its readers ack, and redelivers
    nothing: an ack only lets RabbitMQ send more (up to the prefetch). So one
    ``multiple`` ack up to the newest delivery that is done (handled, skipped,
    or its copy stored) is safe even while older ones are still being handled:
    a reader resumes from its saved progress (``core.history``), which never
    passes an event not settled, never from its acks. One ack goes out per
    ``batch`` deliveries done, or sooner when the credit runs low.

    >>> acks = StreamAcks(prefetch=10, batch=3)
    >>> for tag in (1, 2, 3, 4):
    ...     acks.delivered(tag)
    >>> acks.done(2), acks.take()  # 1 is still being handled: 2 done is not a batch yet
    (None, None)
    >>> acks.done(4), acks.take()  # 4 done: a batch since the last ack, 1 still in flight
    (None, 4)
    """

    def __init__(self, prefetch: int, batch: int) -> None:
        if not 1 <= batch <= prefetch:
            raise ValueError(f"an ack batch of {batch} for a prefetch of {prefetch}")
        self.prefetch = prefetch
        self.batch = batch
        self._newest_delivered = 0
        self._newest_done = 0
        self._acked = 0

    @classmethod
    def for_prefetch(cls, prefetch: int) -> StreamAcks:
        """A quarter of the prefetch per ack: few ack frames, and credit before it runs out."""
        return cls(prefetch, max(1, prefetch // 4))

    def delivered(self, tag: int) -> None:
        if tag > self._newest_delivered:
            self._newest_delivered = tag

    def done(self, tag: int) -> None:
        if tag > self._newest_done:
            self._newest_done = tag

    @property
    def due(self) -> bool:
        """An ack is to be sent now: a batch is done, or RabbitMQ is about to wait for credit."""
        done = self._newest_done - self._acked
        if done <= 0:
            return False
        return done >= self.batch or (
            self._newest_delivered - self._acked > self.prefetch - self.batch
        )

    def take(self) -> int | None:
        """The tag of the ``multiple`` ack to send now, if one is due."""
        if not self.due:
            return None
        self._acked = self._newest_done
        return self._acked
