"""Publishing domain events with publisher confirms over one long-lived connection.

Every :class:`Publisher` owns one connection, driven by an I/O thread of its
own. Callers from any thread hand it events; the I/O thread publishes them on
a confirm-mode channel and tracks the broker's confirms by delivery tag, so
events from many threads (or a batch from :meth:`Publisher.publish_many`)
are pipelined. A publish returns once RabbitMQ has confirmed the event.

When the connection drops, the I/O thread reconnects with capped, jittered
backoff and re-sends every event not yet confirmed; callers keep waiting until
their ``publish_timeout``. An event the broker refuses (``basic.nack``) is
re-sent on a fresh channel for up to :data:`NACK_GRACE` seconds before the
caller gets the refusal: a quorum queue refuses events while it elects a new
leader after a node loss.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection

from . import observability
from ._transport import Transport
from .connection import Backoff, cluster_parameters, explain_connection_error
from .errors import BrokerUnavailable, PublishError, TopologyMismatch
from .events import DomainEvent, validate_routing_key
from .messages import OutgoingMessage, PublishOutcome
from .observability import Occurrence
from .settings import BrokerSettings, ConnectionSettings, mask_url, resolve_url
from .topology import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_TYPE

log = logging.getLogger(__name__)

#: Seconds a publish may wait for the broker's confirm, riding out reconnects.
PUBLISH_TIMEOUT = 30.0
#: Seconds a refused (nacked) event is re-sent, each time on a fresh channel,
#: before the refusal is final. A quorum queue whose leader's node was lost
#: nacks events until a new leader is elected, and RabbitMQ 3.10 keeps nacking
#: on a channel that first published to it meanwhile; a fresh channel then
#: succeeds. A full ``reject-publish`` queue is still refused after this grace.
NACK_GRACE = 5.0

_PERSISTENT_JSON = pika.BasicProperties(delivery_mode=2, content_type="application/json")


class _PendingPublish:
    """One message on its way: handed over by a caller, settled by the I/O thread."""

    __slots__ = (
        "_done",
        "abandoned",
        "body",
        "error",
        "first_nacked",
        "properties",
        "routing_key",
        "settled",
    )

    def __init__(self, body: bytes, routing_key: str, properties: pika.BasicProperties) -> None:
        self.body = body
        self.routing_key = routing_key
        self.properties = properties
        # Held until settled: a bare lock costs a tenth of a threading.Event.
        self._done = threading.Lock()
        self._done.acquire()
        self.settled = False
        self.error: BaseException | None = None
        # Set by a caller that gave up waiting, so it is not sent later behind its back.
        self.abandoned = False
        # When the broker first refused it (basic.nack), for NACK_GRACE.
        self.first_nacked: float | None = None

    def settle(self) -> None:
        """Wake the caller: confirmed, or failed with ``error`` (any thread, idempotent)."""
        self.settled = True
        with contextlib.suppress(RuntimeError):  # settled already
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until settled; only its one caller waits."""
        return self.settled or self._done.acquire(True, timeout)


class _ConfirmingConnection:
    """A connection and confirm-mode channel driven by an I/O thread of its own.

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
        self.url = url
        self.nack_grace = nack_grace
        self.masked_url = mask_url(url)
        self.exchange = exchange
        self.exchange_type = exchange_type
        self._nodes = cluster_parameters(url, "publisher")
        self._node = 0  # index into _nodes of the node to connect to next
        self._first_attempts_left = len(self._nodes)
        self._ioloop = IOLoop()
        self._outbox: deque[_PendingPublish] = deque()
        # Ordered: confirms settle the oldest first (popping a dict's first key slows
        # down as deleted entries pile up in front).
        self._unconfirmed: OrderedDict[int, _PendingPublish] = OrderedDict()
        self._delivery_tag = 0
        self._flush_lock = threading.Lock()
        self._flush_scheduled = False
        self._connection: SelectConnection | None = None
        self._channel: Any = None
        self._backoff = Backoff()
        self._first_attempt = threading.Event()
        self._first_error: BaseException | None = None
        self._outage_logged = False
        self.ready = False
        self.closing = False
        #: Why the broker blocks this connection (a memory or disk alarm), if it does.
        self.blocked_reason: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"domain-event-publisher-{exchange}", daemon=True
        )
        self._thread.start()
        if not self._first_attempt.wait(connect_timeout):
            self.close()
            raise BrokerUnavailable(
                f"cannot reach RabbitMQ at {self.masked_url}: no answer within "
                f"{connect_timeout:.0f} s; is RabbitMQ running and reachable?"
            )
        error = self._startup_error()
        if error is not None:
            self.close()
            raise error

    @property
    def usable(self) -> bool:
        """Not closed, and its I/O thread runs (a crashed one is replaced, not waited on)."""
        return not self.closing and self._thread.is_alive()

    def _startup_error(self) -> BaseException | None:
        return self._first_error  # set by the I/O thread

    # Caller side (any thread) -------------------------------------------------
    def submit(self, pendings: Iterable[_PendingPublish]) -> None:
        if self.closing:
            raise PublishError(f"the publisher for {self.masked_url} is closed")
        with self._flush_lock:
            self._outbox.extend(pendings)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._ioloop.add_callback_threadsafe(self._flush)

    def wait(self, pending: _PendingPublish, deadline: float, what: str) -> None:
        if not pending.wait(max(0.0, deadline - time.monotonic())):
            pending.abandoned = True
            if not self.ready:
                raise BrokerUnavailable(
                    f"lost the connection to RabbitMQ at {self.masked_url} and could not "
                    f"reconnect in time to publish {what}; it may not have been stored. "
                    "Is RabbitMQ running? Raise publish_timeout to ride out longer outages."
                )
            if self.blocked_reason is not None:
                raise PublishError(
                    f"RabbitMQ at {self.masked_url} is blocking publishers "
                    f"({self.blocked_reason}: a memory or disk alarm), so {what} was not "
                    "confirmed in time; free memory or disk on the broker"
                )
            raise PublishError(
                f"RabbitMQ at {self.masked_url} did not confirm {what} in time; "
                "it may or may not have been stored"
            )
        if pending.error is not None:
            raise pending.error

    def close(self, timeout: float = 5.0) -> None:
        if self.closing:
            return
        self.closing = True
        if self._thread.is_alive():
            self._ioloop.add_callback_threadsafe(self._close_from_ioloop)
            self._thread.join(timeout)
        self._fail_waiting(PublishError(f"the publisher for {self.masked_url} was closed"))

    # I/O thread -----------------------------------------------------------------
    def _run(self) -> None:
        self._connect()
        try:
            self._ioloop.start()
        finally:
            self.ready = False
            self._ioloop.close()

    def _connect(self) -> None:
        if self.closing:
            return
        self._connection = SelectConnection(
            self._nodes[self._node],
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: SelectConnection) -> None:
        self.blocked_reason = None
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_channel_open)

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

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=self._on_confirm_mode_ok
        )

    def _on_confirm_mode_ok(self, _frame: object) -> None:
        self._channel.exchange_declare(
            exchange=self.exchange,
            exchange_type=self.exchange_type,
            durable=True,
            callback=self._on_exchange_ok,
        )

    def _on_exchange_ok(self, _frame: object) -> None:
        self._delivery_tag = 0
        self.ready = True
        self._backoff.reset()
        if self._outage_logged:
            log.info(
                "reconnected to RabbitMQ at %s; re-sending unconfirmed events", self.masked_url
            )
            self._outage_logged = False
        self._first_attempt.set()
        self._flush()

    def _on_connection_open_error(self, _connection: object, error: BaseException) -> None:
        self._connection = None
        self._node = (self._node + 1) % len(self._nodes)
        if not self._first_attempt.is_set():
            self._first_attempts_left -= 1
            if self._first_attempts_left > 0:
                self._connect()  # try the cluster's next node before giving up
                return
            self._first_error = explain_connection_error(self.url, error)
            self._first_attempt.set()
            self._ioloop.stop()
            return
        self._log_outage(error)
        self._schedule_reconnect()

    def _on_connection_closed(self, _connection: object, reason: BaseException) -> None:
        self._connection = None
        self._channel = None
        self.ready = False
        self._requeue_unconfirmed()
        if self.closing:
            self._ioloop.stop()
            return
        self._node = (self._node + 1) % len(self._nodes)
        self._log_outage(reason)
        self._schedule_reconnect()

    def _on_channel_closed(self, _channel: object, reason: BaseException) -> None:
        was_ready = self.ready
        self._channel = None
        self.ready = False
        self._requeue_unconfirmed()
        connection = self._connection
        if connection is None or not connection.is_open:
            return  # the connection's own close callback takes over
        if self.closing:
            connection.close()
            return
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and not was_ready:
            # The exchange could not be declared: waiting will not fix that.
            self._fail_waiting(
                TopologyMismatch(
                    f"cannot publish to exchange {self.exchange!r} on {self.masked_url}: "
                    f"{reason.reply_text}. The exchange must be a durable "
                    f"{self.exchange_type} exchange; delete it or pick another exchange name."
                )
            )
        else:
            log.warning("channel to RabbitMQ at %s closed (%s); reopening", self.masked_url, reason)
        self._ioloop.call_later(self._backoff.next_delay(), self._reopen_channel)

    def _reopen_channel(self) -> None:
        connection = self._connection
        if connection is not None and connection.is_open and self._channel is None:
            connection.channel(on_open_callback=self._on_channel_open)

    def _schedule_reconnect(self) -> None:
        self._ioloop.call_later(self._backoff.next_delay(), self._connect)

    def _log_outage(self, reason: BaseException) -> None:
        if not self._outage_logged:
            log.warning(
                "lost the connection to RabbitMQ at %s (%s); reconnecting with backoff",
                self.masked_url,
                reason,
            )
            self._outage_logged = True

    def _close_from_ioloop(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        elif self._connection is not None and self._connection.is_closing:
            return
        else:
            self._ioloop.stop()

    def _requeue_unconfirmed(self) -> None:
        if not self._unconfirmed:
            return
        # Sent but not confirmed: the broker may or may not have them, so send
        # them again, first, in their original order (at-least-once).
        resend = list(self._unconfirmed.values())  # ordered by delivery tag
        self._unconfirmed.clear()
        self._outbox.extendleft(reversed(resend))

    def _flush(self) -> None:
        with self._flush_lock:
            self._flush_scheduled = False
        if not self.ready:
            return
        channel = self._channel
        outbox = self._outbox
        unconfirmed = self._unconfirmed
        exchange = self.exchange
        while outbox:
            pending = outbox.popleft()
            if pending.abandoned:
                continue
            self._delivery_tag += 1
            unconfirmed[self._delivery_tag] = pending
            try:
                channel.basic_publish(
                    exchange, pending.routing_key, pending.body, pending.properties
                )
            except pika.exceptions.AMQPError:
                # The channel died under us; its close callback re-queues the rest.
                return
        _coalesce_output(self._connection)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        accepted = isinstance(method, pika.spec.Basic.Ack)
        unconfirmed = self._unconfirmed
        resend: list[_PendingPublish] = []
        if method.multiple:
            last = method.delivery_tag
            while unconfirmed:
                tag = next(iter(unconfirmed))
                if tag > last:
                    break
                self._settle(unconfirmed.pop(tag), accepted, resend)
        else:
            pending = unconfirmed.pop(method.delivery_tag, None)
            if pending is not None:
                self._settle(pending, accepted, resend)
        if resend:
            self._resend_on_fresh_channel(resend)

    def _resend_on_fresh_channel(self, resend: list[_PendingPublish]) -> None:
        log.warning(
            "RabbitMQ at %s refused %d event(s) (basic.nack); re-sending on a fresh channel "
            "(a quorum queue refuses events while it elects a new leader)",
            self.masked_url,
            len(resend),
        )
        self._outbox.extendleft(reversed(resend))
        channel = self._channel
        if channel is not None and channel.is_open and self.ready:
            # Not ready: nothing is sent until the channel is reopened (by its
            # close callback, which also re-queues the other unconfirmed events).
            self.ready = False
            channel.close()

    def _settle(
        self, pending: _PendingPublish, accepted: bool, resend: list[_PendingPublish]
    ) -> None:
        if not accepted:
            now = time.monotonic()
            if pending.first_nacked is None:
                pending.first_nacked = now
            if now - pending.first_nacked < self.nack_grace and not pending.abandoned:
                resend.append(pending)
                return
            pending.error = PublishError(
                f"RabbitMQ at {self.masked_url} refused an event for {pending.routing_key!r} "
                "(basic.nack: an internal error or a queue limit); it was not stored"
            )
        pending.settle()

    def _fail_waiting(self, error: BaseException) -> None:
        waiting = list(self._outbox)
        self._outbox.clear()
        for pending in waiting:
            pending.error = error
            pending.settle()


def _coalesce_output(connection: SelectConnection | None) -> None:
    """Join the frames waiting to be sent, so that they go out in one ``send()``.

    pika queues each frame (three per message) on its own and its I/O loop
    sends them one system call each; joined, a flush of one event or of a
    thousand costs one. Best effort: when pika's transport looks different
    (another pika release), the frames are left as they are.
    """
    buffers = getattr(getattr(connection, "_transport", None), "_tx_buffers", None)
    if isinstance(buffers, deque) and len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)


class Publisher(Transport):
    """Publishes messages to the events exchange, each confirmed by the broker.

    One publisher holds one connection; it is safe to share between threads.

    >>> publisher = Publisher()  # doctest: +SKIP
    >>> publisher.publish(DomainEvent("user.registered").to_json(), "user.registered")
    ... # doctest: +SKIP
    >>> publisher.disconnect()  # doctest: +SKIP

    ``connection_settings``: an AMQP URL, ``''`` for ``settings.BROKER`` or
    ``None`` for no broker (every publish is then a no-op).
    """

    def __init__(
        self,
        connection_settings: ConnectionSettings = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
        *,
        publish_timeout: float = PUBLISH_TIMEOUT,
        connect_timeout: float = 15.0,
        nack_grace: float = NACK_GRACE,
    ) -> None:
        super().__init__(connection_settings, exchange, exchange_type)
        self.connection_settings = resolve_url(connection_settings)
        #: Seconds a refused event is re-sent before the refusal is final (0: at once).
        self.nack_grace = nack_grace
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._connection: _ConfirmingConnection | None = None
        self._pid = os.getpid()
        if self.connection_settings is not None:
            self._confirming_connection()

    def _confirming_connection(self) -> _ConfirmingConnection:
        connection = self._connection
        if connection is not None and self._pid == os.getpid() and connection.usable:
            return connection
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not touch the parent's socket or its
                # (absent) I/O thread: start afresh.
                self._connection = None
                self._pid = os.getpid()
            if self._connection is None or not self._connection.usable:
                assert self.connection_settings is not None
                self._connection = _ConfirmingConnection(
                    self.connection_settings,
                    self.exchange,
                    self.exchange_type,
                    self.connect_timeout,
                    self.nack_grace,
                )
            return self._connection

    def publish(
        self,
        message: str | bytes,
        routing_key: str,
        *,
        properties: pika.BasicProperties | None = None,
    ) -> None:
        """Publish an already-serialised event body; return once the broker confirmed it.

        Raises :class:`InvalidRoutingKey` before sending anything,
        :class:`BrokerUnavailable` or :class:`PublishError` when the event was
        not confirmed within ``publish_timeout`` seconds.
        """
        validate_routing_key(routing_key)
        if self.connection_settings is None:
            log.debug("no broker configured: not publishing %s", routing_key)
            return
        body = message.encode("utf-8") if isinstance(message, str) else message
        properties = properties or _PERSISTENT_JSON
        added = observability.outgoing_headers(routing_key, properties.message_id)
        if added:
            properties = _with_headers(properties, added)
        pending = _PendingPublish(body, routing_key, properties)
        connection = self._confirming_connection()
        started = time.perf_counter()
        connection.submit((pending,))
        connection.wait(
            pending, time.monotonic() + self.publish_timeout, f"an event for {routing_key!r}"
        )
        if observability.listening():
            observability.notify(
                Occurrence(
                    "published",
                    routing_key,
                    pending.properties.message_id,
                    seconds=time.perf_counter() - started,
                )
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
        messages = [_pending_event(event) for event in batch]
        if self.connection_settings is not None:
            self._publish_pending(messages, batch)
        return batch

    def publish_batch(self, messages: Iterable[OutgoingMessage]) -> list[PublishOutcome]:
        """Publish messages with pipelined confirms; report what became of each, in order.

        Unlike :meth:`publish_many` this does not raise when some are refused or
        not confirmed in time: each :class:`PublishOutcome` says so, and the
        others are unaffected. With no broker configured nothing is sent and
        every outcome is an error.
        """
        batch = list(messages)
        if self.connection_settings is None:
            error = PublishError("no broker configured (connection_settings=None): not sent")
            return [PublishOutcome(message, error) for message in batch]
        pendings = [_pending_message(message) for message in batch]
        connection = self._confirming_connection()
        deadline = time.monotonic() + self.publish_timeout
        started = time.perf_counter()
        connection.submit(pendings)
        outcomes = []
        listening = observability.listening()
        for pending, message in zip(pendings, batch, strict=True):
            try:
                connection.wait(
                    pending, deadline, f"event {message.message_id} ({message.routing_key})"
                )
            except (PublishError, BrokerUnavailable, TopologyMismatch) as error:
                outcomes.append(PublishOutcome(message, error))
            else:
                outcomes.append(PublishOutcome(message))
                if listening:
                    observability.notify(
                        Occurrence(
                            "published",
                            message.routing_key,
                            message.message_id,
                            seconds=time.perf_counter() - started,
                        )
                    )
        return outcomes

    def _publish_pending(
        self, messages: Sequence[_PendingPublish], events: Sequence[DomainEvent]
    ) -> None:
        connection = self._confirming_connection()
        deadline = time.monotonic() + self.publish_timeout
        started = time.perf_counter()
        connection.submit(messages)
        failures: list[tuple[DomainEvent, BaseException]] = []
        listening = observability.listening()
        for pending, event in zip(messages, events, strict=True):
            try:
                connection.wait(
                    pending, deadline, f"event {event.uuid_string} ({event.routing_key})"
                )
            except (PublishError, BrokerUnavailable, TopologyMismatch) as error:
                failures.append((event, error))
            else:
                if listening:
                    observability.notify(
                        Occurrence(
                            "published",
                            event.routing_key,
                            event.uuid_string,
                            seconds=time.perf_counter() - started,
                        )
                    )
        if len(failures) == 1 and len(messages) == 1:
            raise failures[0][1]
        if failures:
            first_error = failures[0][1]
            raise type(first_error)(
                f"{len(failures)} of {len(messages)} events were not confirmed; "
                f"first: {first_error}"
            )

    def disconnect(self) -> None:
        """Close the connection. The publisher reconnects if used again."""
        super().disconnect()  # the 3.x transport's .connection, when it was used
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            connection.close()

    close = disconnect

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()


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


def publish_domain_event(
    routing_key: str,
    data: Any,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
    connection_settings: ConnectionSettings = "",
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
    :param connection_settings: an AMQP URL, ``''`` for ``settings.BROKER``, or
        ``None`` to build and return the event without sending it.
    """
    event = DomainEvent(
        routing_key=routing_key,
        data=data,
        domain_object_id=domain_object_id,
        uuid_string=uuid_string,
        timestamp=timestamp,
    )
    pending = _pending_event(event)  # serialise first: a bad event fails before any I/O
    if _event_sink is not None:
        _event_sink(event)
        return event
    url = resolve_url(connection_settings)
    if url is None:
        log.debug("no broker configured: event %s (%s) not sent", event.uuid_string, routing_key)
        return event
    shared_publisher(url)._publish_pending((pending,), (event,))
    log.debug("published event %s (%s)", event.uuid_string, routing_key)
    return event


def _pending_message(message: OutgoingMessage) -> _PendingPublish:
    headers = dict(message.headers) if message.headers else {}
    # Called on the caller's thread: injected headers (a trace context) are the caller's.
    headers.update(observability.outgoing_headers(message.routing_key, message.message_id) or {})
    return _PendingPublish(
        message.body,
        message.routing_key,
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/json",
            message_id=message.message_id,
            headers=headers or None,
        ),
    )


def _pending_event(event: DomainEvent) -> _PendingPublish:
    routing_key = validate_routing_key(event.routing_key)
    return _PendingPublish(
        event.to_json().encode("utf-8"),
        routing_key,
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/json",
            message_id=event.uuid_string,
            # Called on the caller's thread: injected headers (a trace context) are the caller's.
            headers=observability.outgoing_headers(routing_key, event.uuid_string),
        ),
    )


def _with_headers(properties: pika.BasicProperties, added: dict[str, Any]) -> pika.BasicProperties:
    """A copy of ``properties`` with ``added`` headers (the caller's own win)."""
    copy = pika.BasicProperties(**vars(properties))
    copy.headers = {**added, **(properties.headers or {})}
    return copy
