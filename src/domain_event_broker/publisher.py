"""Publishing domain events with publisher confirms over one long-lived connection.

Every :class:`Publisher` owns one connection, driven by an I/O thread of its
own. Callers from any thread hand it messages; the I/O thread publishes them
on a confirm-mode channel and tracks the broker's confirms by delivery tag
(:mod:`.confirms`), so messages from many threads (or a batch) are
pipelined. A publish returns once RabbitMQ has confirmed the message.

The publish path, top to bottom:

1. :meth:`Publisher.publish` / :meth:`Publisher.publish_batch` check the body
   and build a :class:`~.confirms.Pending` per message on the caller's thread
   (headers from :func:`.observability.outgoing_headers` included);
2. :meth:`_ConfirmingConnection.submit` hands them to the I/O thread;
3. :meth:`_ConfirmingConnection._flush` (I/O thread) sends them, and
   :meth:`_ConfirmingConnection._on_confirm` settles them as confirms arrive;
4. :meth:`_ConfirmingConnection.wait` wakes the caller with the outcome.

:class:`_Link` keeps the connection and channel up (connect, reconnect with
capped, jittered backoff, alarms), and the bookkeeping re-sends every message
not yet confirmed when it comes back; callers keep waiting until their
publish timeout. An event the broker refuses (``basic.nack``) is re-sent on a
fresh channel for up to :data:`NACK_GRACE` seconds before the caller gets the
refusal: a quorum queue refuses events while it elects a new leader.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

import pika
import pika.exceptions
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection

from . import observability, settings
from ._pika import check_properties, coalesce_output
from ._transport import Transport
from .confirms import NACK_GRACE, ConfirmBook, Pending
from .connection import Backoff, cluster_parameters, explain_connection_error
from .errors import (
    BrokerUnavailable,
    ConfirmTimeout,
    EventRefused,
    PublishError,
    TopologyMismatch,
)
from .events import DomainEvent, validate_routing_key
from .forking import ProcessSlot
from .messages import OutgoingMessage, PublishOutcome
from .observability import Occurrence
from .outage import OutageLog, reconnecting
from .settings import BrokerSettings, ConnectionSettings, mask_url, resolve_url
from .topology import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_TYPE

RECONNECTING = reconnecting(then="re-sending unconfirmed events")

log = logging.getLogger(__name__)

__all__ = ["NACK_GRACE", "Publisher", "publish_domain_event"]

#: Seconds a publish waits for the broker's confirm by default, riding out
#: reconnects: ``settings.PUBLISH_TIMEOUT``, read at call time, starts as this.
PUBLISH_TIMEOUT = 30.0

_PERSISTENT_JSON = pika.BasicProperties(delivery_mode=2, content_type="application/json")
_F = TypeVar("_F", bound=Callable[..., Any])


class _IOThread:
    """Runs one pika I/O loop on a daemon thread; no exception ends it unnoticed.

    Every callback handed to pika goes through :meth:`guard`: an unexpected
    exception in it is logged and given to ``on_error`` (which fails the
    affected publishes), and the loop keeps running. Should the loop itself
    stop on an error, ``on_exit`` fails every publish still waiting at once.
    """

    def __init__(
        self,
        name: str,
        on_error: Callable[[BaseException], None],
        on_exit: Callable[[BaseException | None], None],
    ) -> None:
        self.ioloop = IOLoop()
        self._on_error = on_error
        self._on_exit = on_exit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, first: Callable[[], None]) -> None:
        self._first = first
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the I/O thread (from any thread)."""
        self.ioloop.add_callback_threadsafe(callback)

    def join(self, timeout: float) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def guard(self, callback: _F) -> _F:
        """``callback``, made unable to kill the I/O thread."""

        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception as error:
                log.exception("unexpected error in the publisher's I/O thread (%s)", error)
                self._on_error(error)
                return None

        return guarded  # type: ignore[return-value]

    def _run(self) -> None:
        stopped_by: BaseException | None = None
        try:
            self.guard(self._first)()
            self.ioloop.start()
        except BaseException as error:
            stopped_by = error
            log.exception("the publisher's I/O thread stopped on an error")
        finally:
            self._on_exit(stopped_by)
            self.ioloop.close()


class _Link:
    """Keeps one connection and confirm-mode channel open (I/O thread only).

    The pika callback chain, in order: :meth:`connect` → connection open →
    channel open → confirm mode on → exchange declared → ``on_ready``. A lost
    connection or channel hands the unconfirmed messages back to the book and
    starts again after a backoff, trying the cluster's nodes in turn.
    """

    def __init__(self, owner: _ConfirmingConnection, url: BrokerSettings) -> None:
        self._owner = owner
        self._book = owner.book
        self._guard = owner.io.guard
        self._ioloop = owner.io.ioloop
        self.url = url
        self.masked_url = owner.masked_url
        self._nodes = cluster_parameters(url, "publisher")
        self._node = 0  # index into _nodes of the node to connect to next
        self._first_attempts_left = len(self._nodes)
        self._outage = OutageLog(
            log, f"RabbitMQ at {self.masked_url}", backoff=Backoff(), wording=RECONNECTING
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
            self._nodes[self._node],
            on_open_callback=guard(self._on_connection_open),
            on_open_error_callback=guard(self._on_connection_open_error),
            on_close_callback=guard(self._on_connection_closed),
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: SelectConnection) -> None:
        self.blocked_reason = None
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
        self._outage.succeeded()
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
        self._node = (self._node + 1) % len(self._nodes)
        if not self.first_attempt.is_set():
            self._first_attempts_left -= 1
            if self._first_attempts_left > 0:
                self.connect()  # try the cluster's next node before giving up
                return
            self.first_error = explain_connection_error(self.url, error)
            self.first_attempt.set()
            self._ioloop.stop()
            return
        self._ioloop.call_later(self._outage.failed(error), self._guard(self.connect))

    def _on_connection_closed(self, _connection: object, reason: BaseException) -> None:
        self.connection = None
        self.channel = None
        self.ready = False
        self._book.channel_lost()
        if self._owner.closing:
            self._ioloop.stop()
            return
        self._node = (self._node + 1) % len(self._nodes)
        self._ioloop.call_later(self._outage.failed(reason), self._guard(self.connect))

    def _on_channel_closed(self, _channel: object, reason: BaseException) -> None:
        was_ready = self.ready
        self.channel = None
        self.ready = False
        self._book.channel_lost()
        connection = self.connection
        if connection is None or not connection.is_open:
            return  # the connection's own close callback takes over
        if self._owner.closing:
            connection.close()
            return
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and not was_ready:
            # The exchange could not be declared: waiting will not fix that.
            self._book.fail_unsent(
                TopologyMismatch(
                    f"cannot publish to exchange {self._owner.exchange!r} on {self.masked_url}: "
                    f"{reason.reply_text}. The exchange must be a durable "
                    f"{self._owner.exchange_type} exchange; delete it or pick another exchange "
                    "name."
                )
            )
        else:
            log.warning("channel to RabbitMQ at %s closed (%s); reopening", self.masked_url, reason)
        delay = self._outage.backoff.next_delay()
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


class _ConfirmingConnection:
    """Hands messages to an I/O thread that publishes them with confirms; callers wait.

    Only the I/O thread touches pika objects (pika is not thread-safe: a
    socket error handled on a caller's thread once killed the I/O thread);
    callers :meth:`submit` messages and :meth:`wait` for each to be settled.
    """

    def __init__(
        self,
        url: BrokerSettings,
        exchange: str,
        exchange_type: str,
        connect_timeout: float,
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
        self.io = _IOThread(
            f"domain-event-publisher-{exchange}", self._on_internal_error, self._on_io_exit
        )
        self.link = _Link(self, url)
        self.on_confirm = self.io.guard(self._on_confirm)
        self.flush = self.io.guard(self._flush)
        self.io.start(self.link.connect)
        self._await_first_attempt(connect_timeout)

    def _await_first_attempt(self, connect_timeout: float) -> None:
        if not self.link.first_attempt.wait(connect_timeout):
            self.close()
            raise BrokerUnavailable(
                f"cannot reach RabbitMQ at {self.masked_url}: no answer within "
                f"{connect_timeout:.0f} s; is RabbitMQ running and reachable?"
            )
        if self.link.first_error is not None:
            self.close()
            raise self.link.first_error

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

    def wait(self, pending: Pending, deadline: float) -> None:
        """Return once ``pending`` is confirmed; raise why not, or when ``deadline`` passes."""
        if not pending.wait(max(0.0, deadline - time.monotonic())):
            pending.abandoned = True
            raise self._timeout_error(_described(pending))
        if pending.error is not None:
            raise pending.error

    def _timeout_error(self, what: str) -> BaseException:
        if self._stopped is not None or not self.io.alive:
            return PublishError(
                f"the publisher for {self.masked_url} stopped ({self._stopped}); {what} "
                "was not confirmed and may not have been stored"
            )
        if not self.link.ready:
            return BrokerUnavailable(
                f"lost the connection to RabbitMQ at {self.masked_url} and could not "
                f"reconnect in time to publish {what}; it may not have been stored. "
                "Is RabbitMQ running? Raise publish_timeout to ride out longer outages."
            )
        if self.link.blocked_reason is not None:
            return ConfirmTimeout(
                f"RabbitMQ at {self.masked_url} is blocking publishers "
                f"({self.link.blocked_reason}: a memory or disk alarm), so {what} was not "
                "confirmed in time; free memory or disk on the broker"
            )
        return ConfirmTimeout(
            f"RabbitMQ at {self.masked_url} did not confirm {what} in time; "
            "it may or may not have been stored"
        )

    def close(self, timeout: float = 5.0) -> None:
        if self.closing:
            return
        self.closing = True
        if self.io.alive:
            self.io.call_soon(self.io.guard(self.link.close))
            self.io.join(timeout)
        if not self.io.alive:
            self.book.fail_all(PublishError(f"the publisher for {self.masked_url} was closed"))

    # I/O thread -------------------------------------------------------------------------------
    def _flush(self) -> None:
        with self._flush_lock:
            self._flush_scheduled = False
        link = self.link
        if not link.ready:
            return  # sent once the channel is ready again
        try:
            self.book.send_all(_sender(link.channel, self.exchange))
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


def _sender(channel: Any, exchange: str) -> Callable[[Pending], bool]:
    """Send one message on ``channel``; settle it with the reason when it cannot be encoded."""
    publish = channel.basic_publish

    def send(pending: Pending) -> bool:
        try:
            publish(exchange, pending.routing_key, pending.body, pending.properties)
        except Exception as error:
            if not channel.is_open:
                raise  # the channel died: its close callback hands the message back
            # Nothing went out (pika encodes before writing); only this message fails.
            pending.settle(
                EventRefused(f"cannot send an event for {pending.routing_key!r}: {error}")
            )
            return False
        return True

    return send


class _Extra(NamedTuple):
    """What :func:`publish_domain_event` adds to the two arguments it gives ``publish``."""

    message_id: str | None
    publish_timeout: float | None


#: Set by :func:`publish_domain_event` around its call of ``Publisher.publish``,
#: which 3.x test suites patch and check for exactly ``(json_body, routing_key)``.
_extra: contextvars.ContextVar[_Extra | None] = contextvars.ContextVar(
    "domain_event_broker_publish_extra", default=None
)


class Publisher(Transport):
    """Publishes messages to the events exchange, each confirmed by the broker.

    One publisher holds one connection; it is safe to share between threads.

    >>> publisher = Publisher()  # doctest: +SKIP
    >>> publisher.publish(DomainEvent("user.registered").to_json(), "user.registered")
    ... # doctest: +SKIP
    >>> publisher.disconnect()  # doctest: +SKIP

    ``connection_settings``: an AMQP URL, ``''`` for the default broker or
    ``None`` for no broker (every publish is then a no-op).
    ``publish_timeout``: seconds a publish waits for the broker's confirm;
    ``settings.PUBLISH_TIMEOUT`` (read at each publish) when not given.
    ``nack_grace``: seconds a refused event is re-sent on a fresh channel before
    the refusal is final (0: at once, for callers that retry on their own).
    """

    def __init__(
        self,
        connection_settings: ConnectionSettings = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
        *,
        publish_timeout: float | None = None,
        connect_timeout: float = 15.0,
        nack_grace: float = NACK_GRACE,
    ) -> None:
        super().__init__(connection_settings, exchange, exchange_type)
        self.nack_grace = nack_grace
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        # Started afresh in a forked child, lock included (a parent thread may
        # have held it, connecting, at the fork).
        self._slot: ProcessSlot[_ConfirmingConnection] = ProcessSlot()
        if self.connection_settings is not None:
            self._confirming_connection()

    @property
    def _lock(self) -> threading.Lock:
        return self._slot.lock

    @property
    def connected(self) -> bool:
        """Whether this process's publishing connection is open now (no I/O: for health probes)."""
        connection = self._slot.value
        return connection is not None and connection.usable

    def ensure_connected(self) -> None:
        """Open the publishing connection now unless it is open.

        Raises :class:`~domain_event_broker.errors.BrokerUnavailable` when the
        broker cannot be reached. Nothing happens without a broker configured.
        """
        if self.connection_settings is not None:
            self._confirming_connection()

    def _confirming_connection(self) -> _ConfirmingConnection:
        return self._slot.get(_is_usable, self._connect)

    def _connect(self) -> _ConfirmingConnection:
        assert self.connection_settings is not None
        return _ConfirmingConnection(
            self.connection_settings,
            self.exchange,
            self.exchange_type,
            self.connect_timeout,
            self.nack_grace,
        )

    def _timeout(self, publish_timeout: float | None) -> float:
        if publish_timeout is not None:
            return publish_timeout
        if self.publish_timeout is not None:
            return self.publish_timeout
        return float(getattr(settings, "PUBLISH_TIMEOUT", PUBLISH_TIMEOUT))

    def publish(
        self,
        message: str | bytes | bytearray | memoryview,
        routing_key: str,
        *,
        properties: pika.BasicProperties | None = None,
        publish_timeout: float | None = None,
    ) -> None:
        """Publish an already-serialised event body; return once the broker confirmed it.

        ``message`` is a str (sent as UTF-8) or bytes-like. Raises TypeError
        for any other body, :class:`InvalidRoutingKey` before sending
        anything, :class:`BrokerUnavailable` or :class:`PublishError` when the
        event was not confirmed within ``publish_timeout`` seconds.
        """
        body = _body_bytes(message)
        validate_routing_key(routing_key)
        if self.connection_settings is None:
            log.debug("no broker configured: not publishing %s", routing_key)
            return
        extra = _extra.get()
        if extra is not None:
            message_id = extra.message_id
            if publish_timeout is None:
                publish_timeout = extra.publish_timeout
        else:
            message_id = None if properties is None else properties.message_id
        pending = Pending(body, routing_key, _properties(properties, routing_key, message_id))
        start = time.monotonic()
        connection = self._confirming_connection()
        connection.submit((pending,))
        connection.wait(pending, start + self._timeout(publish_timeout))
        if observability.listening():
            observability.notify(
                Occurrence("published", routing_key, message_id, seconds=time.monotonic() - start)
            )

    def publish_event(self, event: DomainEvent) -> None:
        """Publish a :class:`DomainEvent`; return once the broker confirmed it."""
        self.publish_many((event,))

    def publish_many(self, events: Iterable[DomainEvent]) -> list[DomainEvent]:
        """Publish several events at once, confirms pipelined; return once all are confirmed.

        Much faster than one :meth:`publish_event` after another. Every event
        is validated and serialised before the first is sent. When some are
        not confirmed in time the error says how many.

        >>> publisher.publish_many(DomainEvent("user.registered", {"id": n}) for n in range(500))
        ... # doctest: +SKIP
        """
        batch = list(events)
        pendings = [_pending_event(event) for event in batch]  # every one checked first
        if self.connection_settings is None:
            failures: list[BaseException] = [_not_sent()] * len(batch)
        else:
            errors = self._send_and_wait(pendings, None)
            failures = [error for error in errors if error is not None]
        if len(failures) == 1 and len(batch) == 1:
            raise failures[0]
        if failures:
            raise type(failures[0])(
                f"{len(failures)} of {len(batch)} events were not confirmed; first: {failures[0]}"
            )
        return batch

    def publish_batch(
        self, messages: Iterable[OutgoingMessage], *, publish_timeout: float | None = None
    ) -> list[PublishOutcome]:
        """Publish messages with pipelined confirms; report what became of each, in order.

        Unlike :meth:`publish_many` this does not raise when some are refused or
        not confirmed in time: each :class:`PublishOutcome` says so, and the
        others are unaffected. With no broker configured nothing is sent and
        every outcome is an error.
        """
        batch = list(messages)
        if self.connection_settings is None:
            error = _not_sent()
            return [PublishOutcome(message, error) for message in batch]
        errors = self._send_and_wait(
            [_pending_message(message) for message in batch], publish_timeout
        )
        return [
            PublishOutcome(message, error) for message, error in zip(batch, errors, strict=True)
        ]

    def _send_and_wait(
        self, pendings: list[Pending], publish_timeout: float | None
    ) -> list[BaseException | None]:
        """Send ``pendings`` (confirms pipelined); the error of each, None when confirmed."""
        start = time.monotonic()
        try:
            connection = self._confirming_connection()
            connection.submit(pendings)
        except (PublishError, BrokerUnavailable, TopologyMismatch) as error:
            return [error] * len(pendings)
        deadline = start + self._timeout(publish_timeout)
        listening = observability.listening()
        errors: list[BaseException | None] = []
        for pending in pendings:
            try:
                connection.wait(pending, deadline)
            except (PublishError, BrokerUnavailable, TopologyMismatch) as error:
                errors.append(error)
                continue
            errors.append(None)
            if listening:
                observability.notify(
                    Occurrence(
                        "published",
                        pending.routing_key,
                        pending.properties.message_id,
                        seconds=time.monotonic() - start,
                    )
                )
        return errors

    def disconnect(self) -> None:
        """Close the connection. The publisher reconnects if used again."""
        super().disconnect()  # the 3.x transport's .connection, when it was used
        connection = self._slot.take()
        if connection is not None:
            connection.close()

    close = disconnect

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()


def _is_usable(connection: _ConfirmingConnection) -> bool:
    return connection.usable


def _body_bytes(message: object) -> bytes:
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, bytes):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)  # a copy: the caller may change theirs meanwhile
    raise TypeError(
        f"a message body must be str or bytes-like (the serialised event), "
        f"not {type(message).__name__}"
    )


def _properties(
    properties: pika.BasicProperties | None, routing_key: str, message_id: str | None
) -> pika.BasicProperties:
    """The message's properties: persistent JSON, its id, and injected headers."""
    headers = observability.outgoing_headers(routing_key, message_id)
    if properties is not None:
        check_properties(properties)
        if headers:
            properties = copy.copy(properties)  # the caller may reuse theirs
            properties.headers = {**headers, **(properties.headers or {})}
        return properties
    if message_id is None and headers is None:
        return _PERSISTENT_JSON
    return pika.BasicProperties(
        delivery_mode=2, content_type="application/json", message_id=message_id, headers=headers
    )


def _not_sent() -> PublishError:
    return PublishError("no broker configured (connection_settings=None): not sent")


def _described(pending: Pending) -> str:
    """How an error names the message: by its id when it has one."""
    message_id = pending.properties.message_id
    if message_id is None:
        return f"an event for {pending.routing_key!r}"
    return f"event {message_id} ({pending.routing_key})"


def _pending_event(event: DomainEvent) -> Pending:
    """What :func:`_pending_message` makes of ``OutgoingMessage.of_event(event)``, faster:
    ``publish_many`` builds one per event, before the first is sent."""
    routing_key = validate_routing_key(event.routing_key)
    message_id = event.uuid_string
    headers = observability.outgoing_headers(routing_key, message_id)
    return _pending(event.to_json().encode("utf-8"), routing_key, message_id, headers)


def _pending_message(message: OutgoingMessage) -> Pending:
    headers = observability.message_headers(
        message.routing_key, message.message_id, message.headers, message.injected
    )
    return _pending(message.body, message.routing_key, message.message_id, headers)


def _pending(
    body: bytes, routing_key: str, message_id: str | None, headers: dict[str, Any] | None
) -> Pending:
    """A persistent JSON message on its way, as every publish path sends one."""
    return Pending(
        body,
        routing_key,
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/json",
            message_id=message_id,
            headers=headers,
        ),
    )


_shared: dict[tuple[BrokerSettings, str, str], Publisher] = {}
_shared_lock = threading.Lock()


def shared_publisher(
    url: BrokerSettings,
    exchange: str = DEFAULT_EXCHANGE,
    exchange_type: str = DEFAULT_EXCHANGE_TYPE,
) -> Publisher:
    """The process-wide publisher for ``url``, created on first use."""
    key = (url, exchange, exchange_type)
    publisher = _shared.get(key)
    if publisher is not None:
        return publisher
    with _shared_lock:
        publisher = _shared.get(key)
        if publisher is None:
            publisher = Publisher(url, exchange, exchange_type)
            _shared[key] = publisher
        return publisher


def close_shared_publishers() -> None:
    """Close every process-wide publisher (done at interpreter exit)."""
    with _shared_lock:
        publishers = list(_shared.values())
        _shared.clear()
    for publisher in publishers:
        publisher.disconnect()


def _forget_shared_publishers_after_fork() -> None:
    # The child has a copy of the parent's sockets but none of its threads.
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_publishers_after_fork)
atexit.register(close_shared_publishers)


EventSink = Callable[[DomainEvent], object]
_event_sink: EventSink | None = None


def redirect_events(sink: EventSink | None) -> EventSink | None:
    """Hand every :func:`publish_domain_event` to ``sink`` instead of RabbitMQ; return the old one.

    For tests: :class:`domain_event_broker.testing.InMemoryBroker` uses it.
    Events are still validated and serialised first. ``None`` restores RabbitMQ.
    """
    global _event_sink
    previous, _event_sink = _event_sink, sink
    return previous


#: The publisher of ``connection_settings=None``: its ``publish`` is a logged no-op.
_no_broker = Publisher(None)


def publish_domain_event(
    routing_key: str,
    data: Any,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
    connection_settings: ConnectionSettings = "",
    *,
    publish_timeout: float | None = None,
) -> DomainEvent:
    """Send a domain event to RabbitMQ; return it once the broker has stored it.

    The broker dispatches it to every subscriber whose binding keys match.

    >>> publish_domain_event("user.registered", {"user_id": 7})  # doctest: +SKIP
    DomainEvent('user.registered', {'user_id': 7}, ...)

    :param routing_key: what happened, as ``<domain>.<event_type>``, e.g. ``user.registered``.
    :param data: the event's data; must be JSON-serialisable.
    :param domain_object_id: optional id of the domain object the event is about.
    :param uuid_string: the event's id; a new UUID4 when not given.
    :param timestamp: seconds since the Unix epoch (UTC); now when not given.
    :param connection_settings: an AMQP URL, ``''`` for the default broker, or
        ``None`` to build and return the event without sending it.
    :param publish_timeout: seconds to wait for the broker's confirm;
        ``settings.PUBLISH_TIMEOUT`` when not given.
    """
    event = DomainEvent(
        routing_key=routing_key,
        data=data,
        domain_object_id=domain_object_id,
        uuid_string=uuid_string,
        timestamp=timestamp,
    )
    body = event.to_json()  # serialise first: a bad event fails before any I/O
    validate_routing_key(event.routing_key)
    if _event_sink is not None:
        _event_sink(event)
        return event
    url = resolve_url(connection_settings)
    publisher = _no_broker if url is None else shared_publisher(url)
    # publish() gets exactly the two arguments 3.x gave it (test suites patch it
    # and check them); the event's id and the timeout travel beside them.
    token = _extra.set(_Extra(event.uuid_string, publish_timeout))
    try:
        publisher.publish(body, event.routing_key)
    finally:
        _extra.reset(token)
    return event
