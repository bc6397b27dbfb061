"""The publisher's connection and confirm-mode channel, kept open on the I/O thread.

When to try again and which node of a cluster to try next is the core's
:class:`~domain_event_broker.core.supervisor.Supervisor`; this carries it out
with pika's callbacks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import pika.exceptions
from pika.adapters.select_connection import SelectConnection

from ..connection import cluster_parameters, explain_connection_error
from ..core.confirms import ConfirmBook
from ..core.messages import size_limit_in
from ..core.supervisor import connection_supervisor
from ..errors import TopologyMismatch
from ..settings import BrokerSettings
from .io_thread import IOThread

log = logging.getLogger(__package__)


class LinkOwner(Protocol):
    """What a :class:`Link` needs of the connection it keeps up (a ``ConfirmingConnection``)."""

    exchange: str
    exchange_type: str
    masked_url: str
    closing: bool
    book: ConfirmBook
    io: IOThread
    on_confirm: Callable[[Any], None]
    flush: Callable[[], None]


class Link:
    """Keeps one connection and confirm-mode channel open (I/O thread only).

    The pika callback chain, in order: :meth:`connect` → connection open →
    channel open → confirm mode on → exchange declared → ``on_ready``. A lost
    connection or channel hands the unconfirmed messages back to the book and
    starts again after a backoff, trying the cluster's nodes in turn.
    """

    def __init__(self, owner: LinkOwner, url: BrokerSettings) -> None:
        self._owner = owner
        self._book = owner.book
        self._guard = owner.io.guard
        self._ioloop = owner.io.ioloop
        self.url = url
        self.masked_url = owner.masked_url
        self._nodes = cluster_parameters(url, "publisher")
        self._first_attempts_left = len(self._nodes)
        self._supervisor = connection_supervisor(
            log,
            self.masked_url,
            then="re-sending unconfirmed events",
            nodes=len(self._nodes),
            stable_after=0.0,  # a channel ready with the exchange declared is a success
        )
        self.connection: SelectConnection | None = None
        self.channel: Any = None
        #: The channel is open, in confirm mode, and the exchange declared.
        self.ready = False
        #: Why the broker blocks this connection (a memory or disk alarm), if it does.
        self.blocked_reason: str | None = None
        self.first_attempt = threading.Event()
        self.first_error: BaseException | None = None

    # The callback chain -----------------------------------------------------------
    def connect(self) -> None:
        if self._owner.closing:
            self._ioloop.stop()
            return
        guard = self._guard
        self.connection = SelectConnection(
            self._nodes[self._supervisor.node],
            on_open_callback=guard(self._on_connection_open),
            on_open_error_callback=guard(self._on_connection_open_error),
            on_close_callback=guard(self._on_connection_closed),
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: SelectConnection) -> None:
        self.blocked_reason = None
        self._book.size_limit = None  # an operator may have raised it meanwhile
        connection.add_on_connection_blocked_callback(self._guard(self._on_blocked))
        connection.add_on_connection_unblocked_callback(self._guard(self._on_unblocked))
        self._open_channel()

    def _open_channel(self) -> None:
        assert self.connection is not None
        self.connection.channel(on_open_callback=self._guard(self._on_channel_open))

    def _on_channel_open(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._guard(self._on_channel_closed))
        channel.confirm_delivery(
            ack_nack_callback=self._guard(self._owner.on_confirm),
            callback=self._guard(self._on_confirm_mode_ok),
        )

    def _on_confirm_mode_ok(self, _frame: object) -> None:
        self.channel.exchange_declare(
            exchange=self._owner.exchange,
            exchange_type=self._owner.exchange_type,
            durable=True,
            callback=self._guard(self._on_exchange_ok),
        )

    def _on_exchange_ok(self, _frame: object) -> None:
        self._book.channel_opened()
        self.ready = True
        self._supervisor.connected()
        self.first_attempt.set()
        self._owner.flush()

    # Alarms -------------------------------------------------------------------------
    def _on_blocked(self, _connection: object, frame: Any) -> None:
        self.blocked_reason = str(getattr(frame.method, "reason", "") or "resource alarm")
        log.warning(
            "RabbitMQ at %s blocks publishing (%s); events wait until it resumes",
            self.masked_url,
            self.blocked_reason,
        )

    def _on_unblocked(self, _connection: object, _frame: object) -> None:
        self.blocked_reason = None
        log.warning("RabbitMQ at %s accepts events again", self.masked_url)

    # Losses and recovery --------------------------------------------------------------
    def _on_connection_open_error(self, _connection: object, error: BaseException) -> None:
        self.connection = None
        if not self.first_attempt.is_set():
            self._first_attempts_left -= 1
            if self._first_attempts_left > 0:
                self._supervisor.next_node()
                self.connect()  # try the cluster's next node before giving up
                return
            self.first_error = explain_connection_error(self.url, error)
            self.first_attempt.set()
            self._ioloop.stop()
            return
        self._ioloop.call_later(self._supervisor.lost(error), self._guard(self.connect))

    def _on_connection_closed(self, _connection: object, reason: BaseException) -> None:
        self.connection = None
        self.channel = None
        self.ready = False
        self._book.channel_lost()
        if self._owner.closing:
            self._ioloop.stop()
            return
        self._ioloop.call_later(self._supervisor.lost(reason), self._guard(self.connect))

    def _on_channel_closed(self, _channel: object, reason: BaseException) -> None:
        was_ready = self.ready
        self.channel = None
        self.ready = False
        size_limit = (
            size_limit_in(reason.reply_text)
            if isinstance(reason, pika.exceptions.ChannelClosedByBroker)
            else None
        )
        refused = 0
        if size_limit is None:
            self._book.channel_lost()
        else:
            # That event fails alone (EventTooLarge); the others go out again at once.
            refused = self._book.over_size_limit(size_limit)
            log.warning(
                "RabbitMQ at %s refused %d event(s) larger than its max_message_size (%d "
                "bytes); reopening the channel for the others",
                self.masked_url,
                refused,
                size_limit,
            )
        connection = self.connection
        if connection is None or not connection.is_open:
            return  # the connection's own close callback takes over
        if self._owner.closing:
            connection.close()
            return
        if refused:
            # Checked before the exchange case: a size close can cross a renew_channel
            # (ready was set False there), and it is no exchange mismatch.
            self._ioloop.call_later(0, self._guard(self._reopen_channel))
            return
        # (A size close with nothing over the limit in flight: reopen after the usual pause.)
        if (
            size_limit is None
            and not was_ready
            and isinstance(reason, pika.exceptions.ChannelClosedByBroker)
        ):
            # The exchange could not be declared: waiting will not fix that.
            self._book.fail_unsent(
                TopologyMismatch(
                    f"cannot publish to exchange {self._owner.exchange!r} on {self.masked_url}: "
                    f"{reason.reply_text}. The exchange must be a durable "
                    f"{self._owner.exchange_type} exchange; delete it or pick another exchange "
                    "name."
                )
            )
        elif size_limit is None:
            log.warning("channel to RabbitMQ at %s closed (%s); reopening", self.masked_url, reason)
        delay = self._supervisor.pause()
        self._ioloop.call_later(delay, self._guard(self._reopen_channel))

    def _reopen_channel(self) -> None:
        connection = self.connection
        if connection is not None and connection.is_open and self.channel is None:
            self._open_channel()

    def renew_channel(self) -> None:
        """Send the refused messages again on a fresh channel (nothing goes out meanwhile)."""
        channel = self.channel
        if channel is not None and channel.is_open and self.ready:
            self.ready = False
            channel.close()  # its close callback hands back the unconfirmed and reopens

    def close(self) -> None:
        if self.connection is not None and self.connection.is_open:
            self.connection.close()
        elif self.connection is None or not self.connection.is_closing:
            self._ioloop.stop()
