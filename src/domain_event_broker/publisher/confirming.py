"""Handing messages to the I/O thread, which publishes them with confirms; callers wait.

The publish path, top to bottom:

1. :meth:`Publisher.publish` / :meth:`Publisher.publish_batch` check the body
   and build a :class:`~..core.confirms.Pending` per message on the caller's
   thread (:mod:`.messages`);
2. :meth:`ConfirmingConnection.submit` hands them to the I/O thread;
3. :meth:`ConfirmingConnection._flush` (I/O thread) sends them, and
   :meth:`ConfirmingConnection._on_confirm` settles them as confirms arrive
   (the bookkeeping is the core's :class:`~..core.confirms.ConfirmBook`);
4. :meth:`ConfirmingConnection.wait` wakes the caller with the outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pika.spec

from .._pika import coalesce_output
from ..core.confirms import NACK_GRACE, ConfirmBook, Pending
from ..core.messages import confirm_timed_out, outage_outlasted
from ..errors import BrokerUnavailable, PublishError
from ..settings import BrokerSettings, mask_url
from .direct import DirectSend, sender
from .io_thread import IOThread
from .link import Link
from .messages import described

log = logging.getLogger(__package__)

#: Seconds between looks at whether the broker still blocks a waiting caller.
BLOCKED_LOOK = 1.0


class ConfirmingConnection:
    """Hands messages to an I/O thread that publishes them with confirms; callers wait.

    Only the I/O thread touches pika objects, or a caller that holds its lock
    (pika is not thread-safe: a socket error handled on a caller's thread
    without it once killed the I/O thread); callers :meth:`submit` messages and
    :meth:`wait` for each to be settled, or :meth:`publish` one.
    """

    def __init__(
        self,
        url: BrokerSettings,
        exchange: str,
        exchange_type: str,
        nack_grace: float = NACK_GRACE,
    ) -> None:
        self.masked_url = mask_url(url)
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.closing = False
        self.book = ConfirmBook(f"RabbitMQ at {self.masked_url}", nack_grace=nack_grace)
        self._flush_lock = threading.Lock()
        self._flush_scheduled = False
        self._stopped: str | None = None  # why the I/O thread stopped, if it did
        self.io = IOThread(
            f"domain-event-publisher-{exchange}", self._on_internal_error, self._on_io_exit
        )
        self.link = Link(self, url)
        self.on_confirm = self.io.guard(self._on_confirm)
        self.flush = self.io.guard(self._flush)
        self.direct = DirectSend(self)
        self._callers_lock = threading.Lock()
        self._callers = 0  # in publish() now

    def open(self, connect_timeout: float) -> ConfirmingConnection:
        """Start the I/O thread and connect; return once the channel is ready.

        Raises :class:`BrokerUnavailable` (every node tried once) or
        :class:`~..errors.TopologyMismatch` without waiting for a reconnect.
        """
        self.io.start(self.link.connect)
        if not self.link.first_attempt.wait(connect_timeout):
            self.close()
            raise BrokerUnavailable(
                f"cannot reach RabbitMQ at {self.masked_url}: no answer within "
                f"{connect_timeout:.0f} s; is RabbitMQ running and reachable?"
            )
        if self.link.first_error is not None:
            self.close()
            raise self.link.first_error
        return self

    @property
    def usable(self) -> bool:
        """Not closed, and its I/O thread runs (a stopped one is replaced, not waited on)."""
        return not self.closing and self.io.alive

    # Caller side (any thread) -----------------------------------------------------------
    def submit(self, pendings: Iterable[Pending]) -> None:
        if self.closing:
            raise PublishError(f"the publisher for {self.masked_url} is closed")
        with self._flush_lock:
            self.book.submit(pendings)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self.io.call_soon(self.flush)

    def publish(self, pending: Pending, deadline: float) -> None:
        """Send one message and return once it is confirmed; raise why not.

        On an idle connection the caller sends it and reads its confirm itself
        (:mod:`.direct`); otherwise the I/O thread does, pipelined with the others.
        """
        if self.closing:
            raise PublishError(f"the publisher for {self.masked_url} is closed")
        with self._callers_lock:
            self._callers += 1
            alone = self._callers == 1
        try:
            # With other callers publishing, the I/O thread pipelines them all better.
            if alone and self.direct.try_send(pending):
                self.direct.wait(pending, deadline)
            else:
                self.submit((pending,))
            self.wait(pending, deadline)
        finally:
            with self._callers_lock:
                self._callers -= 1

    def wait(
        self,
        pending: Pending,
        deadline: float,
        while_blocked: Callable[[], bool] | None = None,
        patience: float = 0.0,
    ) -> None:
        """Return once ``pending`` is confirmed; raise why not, or when ``deadline`` passes.

        While the broker blocks this connection (a memory or disk alarm) and
        ``while_blocked()`` says so, the deadline moves on: ``patience`` seconds
        after the last look that found it blocked. The broker holds what it read,
        and a time-out would only have the caller send it all again.
        """
        settled = pending.wait(max(0.0, deadline - time.monotonic()))
        while not settled:
            if self.blocked and while_blocked is not None and while_blocked():
                deadline = time.monotonic() + max(patience, BLOCKED_LOOK)
                settled = pending.wait(BLOCKED_LOOK)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            settled = pending.wait(left)  # the alarm cleared: the rest of the patience
        if settled and pending.error is not None:
            raise pending.error
        # A confirm counts when it came before the deadline, however late this caller
        # looks (a caller descheduled past its deadline must not see success by luck).
        if not settled or pending.settled_at > deadline:
            pending.abandoned = True
            raise self._timeout_error(described(pending))

    @property
    def blocked(self) -> bool:
        """Whether the broker blocks this connection now (a memory or disk alarm)."""
        return self.link.blocked_reason is not None

    def _timeout_error(self, what: str) -> BaseException:
        if self._stopped is not None or not self.io.alive:
            return PublishError(
                f"the publisher for {self.masked_url} stopped ({self._stopped}); {what} "
                "was not confirmed and may not have been stored"
            )
        if not self.link.ready:
            return outage_outlasted(self.masked_url, what)
        return confirm_timed_out(self.masked_url, what, self.link.blocked_reason)

    def close(self, timeout: float = 5.0) -> None:
        if self.closing:
            return
        self.closing = True
        if self.io.alive:
            self.io.call_soon(self.io.guard(self.link.close))
            self.io.join(timeout)
        if not self.io.alive:
            self.book.fail_all(PublishError(f"the publisher for {self.masked_url} was closed"))
        self.direct.close()

    # I/O thread -------------------------------------------------------------------------------
    def _flush(self) -> None:
        with self._flush_lock:
            self._flush_scheduled = False
        link = self.link
        if not link.ready:
            return  # sent once the channel is ready again
        try:
            self.book.send_all(sender(link.channel, self.exchange))
        except Exception:
            if link.channel is not None and link.channel.is_open:
                raise
            return  # the channel died under us; its close callback hands back the rest
        coalesce_output(link.connection)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        refused = self.book.confirmed(
            method.delivery_tag, method.multiple, isinstance(method, pika.spec.Basic.Ack)
        )
        self.direct.wake_borrower()
        if refused:
            log.warning(
                "RabbitMQ at %s refused %d event(s) (basic.nack); re-sending on a fresh channel "
                "(a quorum queue refuses events while it elects a new leader)",
                self.masked_url,
                len(refused),
            )
            self.link.renew_channel()

    def _on_internal_error(self, error: BaseException) -> None:
        # A bug, or pika in a state we did not foresee: fail what is in flight
        # with a clear error and start on a fresh connection, rather than leave
        # callers waiting on a connection in an unknown state.
        failed = self.book.fail_all(
            PublishError(
                f"the publisher for {self.masked_url} failed internally "
                f"({type(error).__name__}: {error}); the event may not have been stored"
            )
        )
        log.error("failed %d waiting event(s); reconnecting", failed)
        if not self.link.first_attempt.is_set():
            # Still connecting for the first time: the caller gets this error now.
            self.link.first_error = BrokerUnavailable(
                f"cannot connect to RabbitMQ at {self.masked_url}: {type(error).__name__}"
            )
            self.link.first_attempt.set()
            self.io.ioloop.stop()
            return
        self.link.ready = False
        if self.link.connection is not None and self.link.connection.is_open:
            self.link.connection.close()  # its close callback reconnects

    def _on_io_exit(self, error: BaseException | None) -> None:
        self.link.ready = False
        self._stopped = "closed" if error is None else f"{type(error).__name__}: {error}"
        self.book.fail_all(
            PublishError(f"the publisher for {self.masked_url} stopped ({self._stopped})")
        )
