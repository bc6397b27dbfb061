"""Bookkeeping for a subscriber's wait queues: which are declared, which are idle.

New-style wait queues have no ``x-expires`` lease (a lease counts from the last
declare, not from the last message, and deleted queues with copies inside).
Instead the subscriber that uses a classic wait queue removes it itself, with
``queue.delete(if_empty=True)``, once it has not published to it for a long
while: RabbitMQ refuses to delete a queue that still holds a copy, so no copy,
ours or another instance's, is ever deleted with it. Quorum queues do not
support ``if_empty`` (RabbitMQ closes the connection), so quorum wait queues are
kept: there is one per distinct delay.

A retry's delay picks its wait queue, so every distinct delay is a queue of its
own. :func:`wait_delay_ms` keeps whole seconds as they are and rounds any other
delay to an eighth of its decade (125 ms steps from 1 to 10 s, 1.25 s from 10 to
100 s, ...), at most 6.25 % off (plus rounding to whole milliseconds): jittered
delays (``Retry(random.uniform(1, 3))``) share 17 wait queues instead of making one
per millisecond value.

Nothing here does I/O; :class:`~domain_event_broker.topology.SubscriberTopology`
declares and deletes around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Seconds after its delay that a wait queue must have gone unused before its
#: subscriber tries to remove it. Long, so that steady retries never re-declare.
IDLE_AFTER = 600.0
#: Seconds between two looks for idle wait queues.
CHECK_INTERVAL = 30.0
#: Steps per decade that a delay that is not a whole number of seconds is rounded to.
STEPS_PER_DECADE = 8


def others_may_route(consumers_on_subscriber_queue: int) -> bool:
    """Whether another instance of the subscriber may route a copy into its wait queues now.

    RabbitMQ confirms a copy routed to a queue that is deleted before the copy is
    in it: removing an idle wait queue while another instance stores a copy there
    could lose that copy. Only an instance that consumes the subscriber's queue
    gets events to retry, so a wait queue is removed only while this instance is
    the sole consumer (one consumer: ours); otherwise it is kept and looked at later.
    """
    return consumers_on_subscriber_queue > 1


def wait_delay_ms(delay: float) -> int:
    """The delay in milliseconds of the wait queue a ``Retry(delay)`` copy goes to.

    Whole seconds stay exact (``Retry(5)`` waits 5000 ms in ``N-wait-5000``);
    any other delay is rounded to the nearest eighth of its decade, so that
    delays spread over a range share a few wait queues.

    >>> wait_delay_ms(5), wait_delay_ms(1.2), wait_delay_ms(2.3456), wait_delay_ms(0.1)
    (5000, 1250, 2375, 100)
    """
    milliseconds = round(delay * 1000)
    if milliseconds % 1000 == 0:  # 0 included
        return milliseconds
    step = 10 ** math.floor(math.log10(milliseconds)) / STEPS_PER_DECADE
    return int(round(milliseconds / step) * step + 0.5)


@dataclass
class WaitQueueBook:
    """Which wait queues (by delay in ms) this connection declared, and when each was last used."""

    # Read when a book is made, so that a test can shorten them for its subscribers.
    idle_after: float = field(default_factory=lambda: IDLE_AFTER)
    check_interval: float = field(default_factory=lambda: CHECK_INTERVAL)
    _declared: set[int] = field(default_factory=set)
    _last_used: dict[int, float] = field(default_factory=dict)
    _next_check: float | None = None

    def needs_declare(self, delay_ms: int) -> bool:
        return delay_ms not in self._declared

    def declared(self, delay_ms: int, now: float) -> None:
        self._declared.add(delay_ms)
        self.used(delay_ms, now)

    def used(self, delay_ms: int, now: float) -> None:
        self._last_used[delay_ms] = now

    def forget(self) -> None:
        """After a reconnect (or an unroutable copy) the queues may be gone: declare again."""
        self._declared.clear()

    def idle(self, now: float) -> list[int]:
        """Delays whose wait queue this subscriber has not used for ``delay + idle_after`` s.

        Checked at most every ``check_interval`` seconds; an empty list otherwise.
        """
        if self._next_check is None:
            self._next_check = now + self.check_interval
        if now < self._next_check:
            return []
        self._next_check = now + self.check_interval
        return sorted(
            delay_ms
            for delay_ms, last in self._last_used.items()
            if now - last > delay_ms / 1000 + self.idle_after
        )

    def removed(self, delay_ms: int) -> None:
        self._declared.discard(delay_ms)
        self._last_used.pop(delay_ms, None)

    def still_holds_copies(self, delay_ms: int, now: float) -> None:
        """Not empty (another instance's copies, or ours not yet expired): look again later."""
        self._last_used[delay_ms] = now
