"""Publisher-confirm bookkeeping: which message each delivery tag stands for. No I/O.

A :class:`ConfirmBook` follows every message from the caller's hand-over to
its settlement: waiting to be sent, sent and unconfirmed under a delivery
tag, refused (``basic.nack``) and waiting to be sent again, or settled
(confirmed, or failed with an error). The I/O thread drives it from pika's
callbacks; the rules live here so that they can be tested without a broker:

- a message is settled exactly once, and never lost: until it is settled it
  is waiting to be sent, or unconfirmed;
- messages are (re-)sent in the order they were handed over: after a lost
  channel, a nack or both, the refused and the other unconfirmed messages go
  out again first, in their original order, before anything handed over later;
- a refused message is re-sent for up to ``nack_grace`` seconds after its
  first refusal, then settled with the refusal.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import EventRefused
from .messages import over_size_limit

#: Seconds a refused (nacked) message is re-sent before the refusal is final.
#: A quorum queue whose leader's node was lost nacks messages until a new
#: leader is elected, and RabbitMQ 3.10 keeps nacking on a channel that first
#: published to it meanwhile; a fresh channel then succeeds. A full
#: ``reject-publish`` queue is still refused after this grace.
NACK_GRACE = 5.0


class Pending:
    """One message on its way: handed over by a caller, settled once by the I/O thread."""

    __slots__ = (
        "_done",
        "abandoned",
        "body",
        "error",
        "first_nacked",
        "properties",
        "routing_key",
        "seq",
        "settled",
        "settled_at",
    )

    def __init__(self, body: bytes, routing_key: str, properties: Any) -> None:
        self.body = body
        self.routing_key = routing_key
        self.properties = properties
        # Held until settled: a bare lock costs a tenth of a threading.Event.
        self._done = threading.Lock()
        self._done.acquire()
        self.settled = False
        #: ``time.monotonic()`` when it was settled: a confirm counts only within the deadline.
        self.settled_at = 0.0
        self.error: BaseException | None = None
        #: Set by a caller that gave up waiting, so it is not sent later behind its back.
        self.abandoned = False
        #: When the broker first refused it (basic.nack), for the nack grace.
        self.first_nacked: float | None = None
        #: Its place in the hand-over order, given when first sent.
        self.seq = -1

    def settle(self, error: BaseException | None = None) -> bool:
        """Confirmed (``error`` None) or failed; wake its caller. False if settled already."""
        if self.settled:
            return False
        self.error = error
        self.settled_at = time.monotonic()
        self.settled = True
        with contextlib.suppress(RuntimeError):  # released already
            self._done.release()
        return True

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until settled; only its one caller waits."""
        return self.settled or self._done.acquire(True, timeout)


def _by_seq(pending: Pending) -> int:
    return pending.seq


class ConfirmBook:
    """Delivery tag to pending message, re-send order and nack grace for one publisher.

    Callers :meth:`submit` from any thread (a deque's ``extend`` is atomic);
    every other method runs on the I/O thread, or on a thread that holds the
    I/O thread's lock.
    """

    def __init__(
        self,
        where: str = "RabbitMQ",
        nack_grace: float = NACK_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: The broker in words (its masked URL), for the refusal error.
        self.where = where
        self.nack_grace = nack_grace
        self._clock = clock
        #: Handed over by callers, never sent yet, in hand-over order.
        self.incoming: deque[Pending] = deque()
        #: Sent before and to be sent again first, sorted by ``seq``.
        self._resend: list[Pending] = []
        #: Sent on the current channel and not confirmed, by delivery tag (ordered:
        #: confirms settle the oldest first).
        self._unconfirmed: OrderedDict[int, Pending] = OrderedDict()
        self._tag = 0
        self._seq = 0
        #: The broker's max_message_size once it refused a message for it (None: not
        #: known). A larger body then fails at once, without closing another channel.
        self.size_limit: int | None = None

    # Any thread --------------------------------------------------------------
    def submit(self, pendings: Iterable[Pending]) -> None:
        self.incoming.extend(pendings)

    # I/O thread ----------------------------------------------------------------
    @property
    def has_unsent(self) -> bool:
        return bool(self._resend or self.incoming)

    @property
    def unconfirmed_count(self) -> int:
        return len(self._unconfirmed)

    def channel_opened(self) -> None:
        """A fresh confirm-mode channel numbers its deliveries from 1 again."""
        self.channel_lost()
        self._tag = 0

    def send_all(self, send: Callable[[Pending], bool]) -> None:
        """Send every unsent message, oldest first, through ``send``.

        Each message is recorded under its delivery tag before ``send`` is
        called. ``send`` returns False when it could not even encode the
        message (nothing went out; it settled the message itself): its tag is
        given back. When ``send`` raises (the channel died), that message is
        unconfirmed like the others, the rest wait, and the exception propagates.
        """
        unconfirmed = self._unconfirmed
        if self._resend:
            resend, self._resend = self._resend, []
            for index, pending in enumerate(resend):
                if pending.settled or pending.abandoned:
                    continue
                if self.size_limit is not None and self._refused_for_size(pending):
                    continue
                self._tag += 1
                unconfirmed[self._tag] = pending
                try:
                    if not send(pending):
                        self._give_back_tag()
                except BaseException:
                    self._resend = resend[index + 1 :]
                    raise
        incoming = self.incoming
        while incoming:
            pending = incoming.popleft()
            if not pending.abandoned:
                self.send_new(pending, send)

    @property
    def idle(self) -> bool:
        """Nothing waiting to be sent and nothing unconfirmed."""
        return not (self._unconfirmed or self._resend or self.incoming)

    def send_new(self, pending: Pending, send: Callable[[Pending], bool]) -> None:
        """Send ``pending``, never sent before, through ``send`` (see :meth:`send_all`)."""
        if self.size_limit is not None and self._refused_for_size(pending):
            return
        pending.seq = self._seq
        self._seq += 1
        self._tag += 1
        self._unconfirmed[self._tag] = pending
        if not send(pending):
            self._give_back_tag()

    def _give_back_tag(self) -> None:
        # The broker numbers only what it received: the next message takes this tag.
        self._unconfirmed.popitem(last=True)
        self._tag -= 1

    def confirmed(self, tag: int, multiple: bool, accepted: bool) -> list[Pending]:
        """A ``basic.ack``/``basic.nack``: settle, or keep for re-sending; return those kept."""
        unconfirmed = self._unconfirmed
        if multiple:
            taken = []
            while unconfirmed:
                first = next(iter(unconfirmed))
                if first > tag:
                    break
                taken.append(unconfirmed.pop(first))
        else:
            pending = unconfirmed.pop(tag, None)
            taken = [] if pending is None else [pending]
        if accepted:
            for pending in taken:
                pending.settle()
            return []
        return self._refused(taken)

    def _refused(self, taken: list[Pending]) -> list[Pending]:
        now = self._clock()
        kept = []
        for pending in taken:
            if pending.first_nacked is None:
                pending.first_nacked = now
            if now - pending.first_nacked < self.nack_grace and not pending.abandoned:
                kept.append(pending)
            else:
                pending.settle(
                    EventRefused(
                        f"{self.where} refused an event for {pending.routing_key!r} "
                        "(basic.nack: an internal error or a queue limit); it was not stored"
                    )
                )
        self._merge(kept)
        return kept

    def over_size_limit(self, limit: int) -> int:
        """The broker closed the channel because a message exceeded ``limit`` bytes.

        Those larger than ``limit`` fail with :class:`EventTooLarge`; the other
        unconfirmed ones are sent again, as after any lost channel. Returns how
        many failed.
        """
        self.size_limit = limit
        failed = sum(self._refused_for_size(pending) for pending in self._unconfirmed.values())
        self.channel_lost()
        return failed

    def _refused_for_size(self, pending: Pending) -> bool:
        """Settle ``pending`` with :class:`EventTooLarge` if it is over the known limit."""
        refused = over_size_limit(
            self.size_limit,
            pending.body,
            self.where,
            pending.routing_key,
            getattr(pending.properties, "message_id", None),
        )
        return refused is not None and pending.settle(refused)

    def channel_lost(self) -> None:
        """Sent and unconfirmed: maybe stored, maybe not, so send it again (at-least-once)."""
        if self._unconfirmed:
            lost = list(self._unconfirmed.values())
            self._unconfirmed.clear()
            self._merge(lost)

    def _merge(self, pendings: list[Pending]) -> None:
        if not pendings:
            return
        if not self._resend:
            self._resend = sorted(pendings, key=_by_seq)
            return
        for pending in pendings:
            bisect.insort(self._resend, pending, key=_by_seq)

    def fail_unsent(self, error: BaseException) -> int:
        """Settle every message not sent yet with ``error``; return how many."""
        failed = 0
        resend, self._resend = self._resend, []
        for pending in resend:
            failed += pending.settle(error)
        while self.incoming:
            failed += self.incoming.popleft().settle(error)
        return failed

    def fail_all(self, error: BaseException) -> int:
        """Settle every message not settled yet with ``error`` (sent or not); return how many."""
        self.channel_lost()
        return self.fail_unsent(error)
