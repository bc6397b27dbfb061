"""Receiving domain events: delivery -> handler -> ack, retry or dead-letter.

The thread that calls :meth:`Subscriber.start_consuming` drives the
connection (the I/O thread). Handlers run on worker threads, so heartbeats keep
flowing while a handler is slow. Workers hand their outcome back to the I/O
thread, which alone touches the channels:

- success: ack;
- :class:`Retry` below ``max_retries``: publish a delayed copy to the wait
  queue for that delay, wait for the broker's confirm, then ack;
- anything else (or too many retries, or a body that is not an event): publish
  a copy with failure headers to the dead-letter queue (when the subscriber has
  one), wait for the confirm, then ack; without a dead-letter queue the event is
  dropped and logged as an error.

When the connection is lost the subscriber reconnects with backoff, declares
its topology again and resumes; outcomes of deliveries from the lost channel
are discarded, since RabbitMQ redelivers those events.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from . import observability
from .connection import CONNECTION_LOST, Backoff, connect_blocking
from .errors import InvalidEvent, Retry
from .events import DomainEvent
from .observability import Occurrence
from .settings import mask_url, resolve_url
from .topology import (
    DEFAULT_EXCHANGE,
    DEFAULT_EXCHANGE_TYPE,
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    FAILED_AT_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    RETRIES_HEADER,
    ROUTING_KEY_HEADER,
    QueueType,
    SubscriberTopology,
    normalise_binding_keys,
)

log = logging.getLogger(__name__)

#: Deliveries RabbitMQ may send to each handler's consumer before they are acked.
PREFETCH_COUNT = 64
#: Threads that run handlers. One keeps events of a subscriber in order.
WORKERS = 1
#: Seconds in-flight handlers get to finish after a stop (SIGTERM, stop_consuming()).
SHUTDOWN_GRACE_PERIOD = 30.0

Handler = Callable[[DomainEvent], object]

_LOST = (*CONNECTION_LOST, pika.exceptions.ChannelClosed)


@dataclass(frozen=True)
class _Registration:
    handler: Handler
    topology: SubscriberTopology
    max_retries: int


class _Delivery:
    """One message from RabbitMQ, as handed from the I/O thread to a worker and back."""

    __slots__ = (
        "body",
        "delivery_tag",
        "event_id",
        "generation",
        "properties",
        "registration",
        "retries",
        "routing_key",
    )

    def __init__(
        self,
        registration: _Registration,
        generation: int,
        delivery_tag: int,
        routing_key: str,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self.registration = registration
        self.generation = generation
        self.delivery_tag = delivery_tag
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.retries = 0
        self.event_id: str | None = properties.message_id


@dataclass(frozen=True)
class _Outcome:
    action: str  # one of the constants below
    delay: float = 0.0
    exception_type: str = ""
    reason: str = ""


_ACK = _Outcome("ack")
_REQUEUE = _Outcome("requeue")
_RETRY = "retry"
_DEAD_LETTER = "dead-letter"


class _ConsumerCancelled(Exception):
    """RabbitMQ cancelled a consumer (its queue was deleted): declare again and resume."""


def delivery_retries(headers: Mapping[str, Any] | None, subscriber_name: str) -> int:
    """How many times a message was delivered to ``subscriber_name`` before.

    Our own header counts retries; RabbitMQ 4.x ignores ``x-death`` headers that
    a client sets, so ``x-death`` is read only for messages that releases 2.x-3.x
    retried, summing the expiries from every wait queue of this subscriber (the
    old library read the first entry only, and miscounted mixed delays).
    """
    if not headers:
        return 0
    counted = headers.get(RETRIES_HEADER)
    if counted is not None:
        try:
            return int(counted)
        except (TypeError, ValueError):
            return 0
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return 0
    wait_queue_prefix = f"{subscriber_name}-delay-"
    retries = 0
    for death in deaths:
        if not isinstance(death, dict):
            continue
        queue_name = _text(death.get("queue"))
        if queue_name.startswith(wait_queue_prefix) and _text(death.get("reason")) == "expired":
            retries += int(death.get("count", 1))
    return retries


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """The properties of a re-published copy: persistent, with ``headers``.

    ``user_id`` is dropped (RabbitMQ refuses it unless it names our own user) and
    so is ``expiration`` (a copy must not expire in a queue).
    """
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=2,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
    )


class Subscriber:
    """Receives domain events for one or more registered handlers.

    >>> subscriber = Subscriber()  # doctest: +SKIP
    >>> subscriber.register(send_welcome_mail, "welcome-mailer", ["user.registered"],
    ...                     dead_letter=True, max_retries=3)  # doctest: +SKIP
    >>> subscriber.start_consuming()  # doctest: +SKIP

    ``connection_settings``: an AMQP URL, ``''`` for ``settings.BROKER`` or
    ``None`` for no broker (then nothing is consumed).
    ``prefetch_count``: deliveries each handler's queue may have outstanding.
    ``workers``: threads running handlers; more than one handles events of a
    subscriber concurrently and so out of order.
    ``shutdown_grace_period``: seconds in-flight handlers get to finish on stop.
    ``handle_signals``: on SIGTERM/SIGINT (main thread only) stop gracefully;
    a second signal stops at once.
    """

    def __init__(
        self,
        connection_settings: str | None = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
        *,
        prefetch_count: int = PREFETCH_COUNT,
        workers: int = WORKERS,
        shutdown_grace_period: float = SHUTDOWN_GRACE_PERIOD,
        handle_signals: bool = True,
    ) -> None:
        if prefetch_count < 1:
            raise ValueError(f"prefetch_count must be at least 1, got {prefetch_count}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.connection_settings = resolve_url(connection_settings)
        self.masked_url = mask_url(self.connection_settings)
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.prefetch_count = prefetch_count
        self.workers = workers
        self.shutdown_grace_period = shutdown_grace_period
        self.handle_signals = handle_signals
        self._registrations: list[_Registration] = []
        self._connection: BlockingConnection | None = None
        self._consume_channel: BlockingChannel | None = None
        self._publish_channel: BlockingChannel | None = None
        self._consumer_tags: list[str] = []
        # Bumped on every (re)connect: outcomes of older deliveries are stale.
        self._generation = 0
        self._unsettled = 0
        # Delivery tags on the consume channel, oldest first, and those settled
        # or due for an ack: handled events are acked with one multiple ack.
        self._in_flight: deque[int] = deque()
        self._done: set[int] = set()
        self._completions: deque[tuple[_Delivery, _Outcome]] = deque()
        self._wake_lock = threading.Lock()
        self._wake_scheduled = False
        self._tasks: queue.SimpleQueue[_Delivery | None] = queue.SimpleQueue()
        self._draining = False
        self._consuming = False
        self._stop_requested = threading.Event()
        self._outage_started: float | None = None
        if self.connection_settings is not None:
            self._ensure_connection()

    # Public API ---------------------------------------------------------------
    def register(
        self,
        handler: Handler,
        name: str,
        binding_keys: str | Sequence[str] = (),
        dead_letter: bool = False,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        max_retries: int = 0,
        *,
        queue_type: QueueType = "classic",
    ) -> None:
        """Register ``handler`` for events whose routing key matches ``binding_keys``.

        :param handler: called with each :class:`DomainEvent`; raise
            :class:`Retry` to handle it again later, any other exception to
            dead-letter (or drop) it.
        :param name: the subscriber's name, also the name of its queue.
        :param binding_keys: e.g. ``["user.registered", "order.*"]``; ``*``
            matches one word, ``#`` zero or more.
        :param dead_letter: keep failed events in the queue ``<name>-dl``.
        :param durable: keep the queue (and its events) while nobody consumes.
        :param max_retries: how often :class:`Retry` is honoured per event.
        :param queue_type: ``"quorum"`` for replicated queues on a cluster (opt-in;
            an existing classic queue cannot be switched in place).
        """
        topology = SubscriberTopology(
            name=name,
            binding_keys=normalise_binding_keys(binding_keys),
            exchange=self.exchange,
            exchange_type=self.exchange_type,
            dead_letter=dead_letter,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            queue_type=queue_type,
        )
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if any(r.topology.name == name for r in self._registrations):
            raise ValueError(f"a handler named {name!r} is already registered on this subscriber")
        if self.connection_settings is None:
            log.debug("no broker configured: handler %r is not registered", name)
            return
        connection = self._ensure_connection()
        with connection.channel() as channel:
            topology.declare(channel)
        self._registrations.append(_Registration(handler, topology, max_retries))
        if self._consume_channel is not None:
            self._consume(self._registrations[-1])
        log.info(
            "subscriber %s registered for %s on %s",
            name,
            ", ".join(topology.binding_keys),
            self.masked_url,
        )

    @property
    def registered_names(self) -> list[str]:
        """Names of the registered handlers (their queue names)."""
        return [registration.topology.name for registration in self._registrations]

    def start_consuming(self, timeout: float | None = None) -> None:
        """Receive events until :meth:`stop_consuming`, a signal, or ``timeout`` seconds.

        A lost connection is regained by itself (with backoff); the timeout
        holds across reconnects. On the way out, in-flight handlers get
        ``shutdown_grace_period`` seconds to finish and be acked.
        """
        if self.connection_settings is None:
            log.debug("no broker configured: not consuming")
            return
        if not self._registrations:
            raise RuntimeError("register() a handler before start_consuming()")
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop_requested.clear()
        self._draining = False
        self._consuming = True
        self._tasks = queue.SimpleQueue()
        self._start_workers(self._tasks)
        previous_handlers = self._install_signal_handlers()
        backoff = Backoff()
        try:
            while not self._should_stop(deadline):
                try:
                    self._ensure_connection()
                    self._start_consumers()
                    backoff.reset()
                    self._log_recovery()
                    self._consume_until(deadline)
                    self._drain()
                    break
                except (*_LOST, _ConsumerCancelled) as error:
                    self._forget_connection(error)
                    self._sleep(backoff.next_delay(), deadline)
        except KeyboardInterrupt:
            # Without our signal handlers (not the main thread, or turned off).
            self._drain()
        finally:
            self._consuming = False
            for _ in range(self.workers):
                self._tasks.put(None)
            self._restore_signal_handlers(previous_handlers)
            self._close_connection()

    def stop_consuming(self) -> None:
        """Stop consuming: no new events, in-flight handlers finish and are acked.

        Safe to call from any thread, a handler or a signal handler.
        """
        self._stop_requested.set()
        if self._consuming:
            self._wake()
        else:
            self._close_connection()

    def disconnect(self) -> None:
        """Close the connection (after :meth:`stop_consuming`, if consuming)."""
        self.stop_consuming()

    close = disconnect

    # Connection ----------------------------------------------------------------
    def _ensure_connection(self) -> BlockingConnection:
        connection = self._connection
        if connection is not None and connection.is_open:
            return connection
        assert self.connection_settings is not None
        connection = connect_blocking(self.connection_settings, "subscriber")
        self._connection = connection
        self._generation += 1
        self._unsettled = 0
        self._in_flight.clear()
        self._done.clear()
        with self._wake_lock:
            self._wake_scheduled = False
        for registration in self._registrations:
            registration.topology.forget_declarations()
            with connection.channel() as channel:
                registration.topology.declare(channel)
        return connection

    def _start_consumers(self) -> None:
        if self._consume_channel is not None:
            return
        connection = self._ensure_connection()
        self._publish_channel = connection.channel()
        self._publish_channel.confirm_delivery()
        self._consume_channel = connection.channel()
        self._consume_channel.basic_qos(prefetch_count=self.prefetch_count)
        self._consume_channel.add_on_cancel_callback(self._on_consumer_cancelled)
        self._consumer_tags = []
        for registration in self._registrations:
            self._consume(registration)

    def _consume(self, registration: _Registration) -> None:
        assert self._consume_channel is not None
        tag = self._consume_channel.basic_consume(
            queue=registration.topology.queue,
            on_message_callback=functools.partial(self._on_message, registration),
        )
        self._consumer_tags.append(tag)

    def _on_consumer_cancelled(self, frame: Any) -> None:
        raise _ConsumerCancelled(f"RabbitMQ cancelled consumer {frame.method.consumer_tag}")

    def _forget_connection(self, error: BaseException) -> None:
        if self._outage_started is None:  # once per outage, not per failed attempt
            self._outage_started = time.monotonic()
            log.warning(
                "lost the connection to RabbitMQ at %s (%s: %s); reconnecting with backoff",
                self.masked_url,
                type(error).__name__,
                error,
            )
        self._close_connection()

    def _log_recovery(self) -> None:
        if self._outage_started is not None:
            log.warning(
                "reconnected to RabbitMQ at %s after %.1f s; consuming %s again",
                self.masked_url,
                time.monotonic() - self._outage_started,
                ", ".join(self.registered_names),
            )
            self._outage_started = None

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._consume_channel = None
        self._publish_channel = None
        self._consumer_tags = []
        self._generation += 1  # outcomes still on their way are stale now
        if connection is not None and connection.is_open:
            with contextlib.suppress(*_LOST):
                connection.close()

    def _sleep(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        self._stop_requested.wait(seconds)

    def _should_stop(self, deadline: float | None) -> bool:
        return self._stop_requested.is_set() or (
            deadline is not None and time.monotonic() >= deadline
        )

    # I/O thread ------------------------------------------------------------------
    def _consume_until(self, deadline: float | None) -> None:
        connection = self._connection
        assert connection is not None
        while not self._should_stop(deadline):
            time_limit = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            connection.process_data_events(time_limit=max(0.0, time_limit))
            self._settle_completed()
            for registration in self._registrations:
                registration.topology.remove_idle_wait_queues(connection, time.monotonic())

    def _drain(self) -> None:
        """Stop taking events; let in-flight handlers finish and settle them."""
        self._draining = True
        connection, channel = self._connection, self._consume_channel
        if connection is None or channel is None or not connection.is_open:
            return
        try:
            for tag in self._consumer_tags:
                channel.basic_cancel(tag)
            deadline = time.monotonic() + self.shutdown_grace_period
            while self._unsettled > 0 and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.05)
                self._settle_completed()
        except _LOST as error:
            log.warning(
                "connection lost while stopping (%s); unacked events are redelivered", error
            )
            return
        if self._unsettled:
            log.warning(
                "%d events still being handled after the %.0f s grace period; "
                "RabbitMQ redelivers them",
                self._unsettled,
                self.shutdown_grace_period,
            )

    def _on_message(
        self,
        registration: _Registration,
        _channel: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self._unsettled += 1
        self._in_flight.append(method.delivery_tag)
        self._tasks.put(
            _Delivery(
                registration,
                self._generation,
                method.delivery_tag,
                registration.topology.event_routing_key(method.routing_key, properties.headers),
                properties,
                body,
            )
        )

    def _wake(self) -> None:
        connection = self._connection
        with self._wake_lock:
            if self._wake_scheduled or connection is None:
                return
            self._wake_scheduled = True
        try:
            connection.add_callback_threadsafe(self._settle_completed)
        except (pika.exceptions.ConnectionWrongStateError, *CONNECTION_LOST):
            with self._wake_lock:
                self._wake_scheduled = False

    def _settle_completed(self) -> None:
        with self._wake_lock:
            self._wake_scheduled = False
        completions = self._completions
        generation = self._generation
        acks: list[int] = []
        while completions:
            delivery, outcome = completions.popleft()
            if delivery.generation != generation:
                continue  # its channel is gone; RabbitMQ redelivers the event
            self._unsettled -= 1
            if outcome is _ACK:
                acks.append(delivery.delivery_tag)
            else:
                self._settle(delivery, outcome)
                self._done.add(delivery.delivery_tag)
        if acks:
            self._ack(acks)

    def _ack(self, tags: list[int]) -> None:
        """Ack handled deliveries now, with one ``multiple`` ack where they are in order.

        The multiple ack ends at the newest of ``tags`` in the longest run of
        oldest deliveries that are all handled or settled already (RabbitMQ
        refuses a multiple ack whose own tag is settled); others are acked one by one.
        """
        channel = self._consume_channel
        assert channel is not None
        in_flight, done = self._in_flight, self._done
        done.update(tags)
        acking = set(tags)
        last = 0
        while in_flight and in_flight[0] in done:
            tag = in_flight.popleft()
            done.discard(tag)
            if tag in acking:
                last = tag
        if last:
            channel.basic_ack(last, multiple=True)
        for tag in tags:
            if tag > last:
                channel.basic_ack(tag)

    def _settle(self, delivery: _Delivery, outcome: _Outcome) -> None:
        channel = self._consume_channel
        assert channel is not None
        tag = delivery.delivery_tag  # acks of handled events go through _ack()
        if outcome is _REQUEUE:
            channel.basic_nack(tag, requeue=True)
        elif outcome.action == _RETRY or delivery.registration.topology.dead_letter:
            if self._publish_copy(delivery, outcome):
                channel.basic_ack(tag)
            else:
                channel.basic_nack(tag, requeue=True)
        else:
            channel.basic_ack(tag)  # no dead-letter queue: dropped (logged by the worker)

    def _publish_copy(self, delivery: _Delivery, outcome: _Outcome) -> bool:
        """Store a retry or dead-letter copy, confirmed by the broker, before the ack."""
        channel = self._publish_channel
        assert channel is not None
        topology = delivery.registration.topology
        headers = dict(delivery.properties.headers or {})
        if outcome.action == _RETRY:
            delay_ms = round(outcome.delay * 1000)
            topology.declare_wait_queue(channel, delay_ms, time.monotonic())
            headers[RETRIES_HEADER] = delivery.retries + 1
            headers[ROUTING_KEY_HEADER] = delivery.routing_key
            exchange, routing_key = topology.retry_destination(delay_ms)
        else:
            headers[RETRIES_HEADER] = delivery.retries
            headers[FAILED_SUBSCRIBER_HEADER] = topology.name
            headers[EXCEPTION_TYPE_HEADER] = outcome.exception_type
            headers[EXCEPTION_MESSAGE_HEADER] = outcome.reason[:2000]
            headers[FAILED_AT_HEADER] = datetime.now(timezone.utc).isoformat()
            exchange, routing_key = topology.dead_letter_exchange, delivery.routing_key

        def store(exchange: str, routing_key: str) -> None:
            channel.basic_publish(
                exchange,
                routing_key,
                delivery.body,
                copy_properties(delivery.properties, headers),
                mandatory=True,
            )

        try:
            try:
                store(exchange, routing_key)
            except pika.exceptions.UnroutableError:
                if outcome.action == _RETRY:
                    # The wait queue was deleted behind our back: declare it again.
                    topology.forget_declarations()
                    topology.declare_wait_queue(channel, delay_ms, time.monotonic())
                    store(exchange, routing_key)
                else:
                    # The dead-letter exchange has no binding for this key (binding
                    # keys changed?): put it straight into the dead-letter queue.
                    headers[ROUTING_KEY_HEADER] = delivery.routing_key
                    store("", topology.dead_letter_queue)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as error:
            log.error(
                "subscriber %s: could not store the %s copy of event %s (%s): %s; "
                "returning it to the queue",
                topology.name,
                outcome.action,
                delivery.event_id,
                delivery.routing_key,
                error,
            )
            if isinstance(error, pika.exceptions.NackError):
                # RabbitMQ 3.10 keeps refusing on a channel that first published to
                # a quorum queue while it elected a new leader; a fresh one works.
                self._reopen_publish_channel()
            return False
        return True

    def _reopen_publish_channel(self) -> None:
        connection, channel = self._connection, self._publish_channel
        assert connection is not None
        if channel is not None and channel.is_open:
            channel.close()
        self._publish_channel = connection.channel()
        self._publish_channel.confirm_delivery()

    # Worker threads ----------------------------------------------------------------
    def _start_workers(self, tasks: queue.SimpleQueue[_Delivery | None]) -> None:
        for number in range(self.workers):
            threading.Thread(
                target=self._work,
                args=(tasks,),
                name=f"domain-event-worker-{number}",
                daemon=True,
            ).start()

    def _work(self, tasks: queue.SimpleQueue[_Delivery | None]) -> None:
        while True:
            delivery = tasks.get()
            if delivery is None:
                return
            if delivery.generation != self._generation:
                continue  # its channel is gone; RabbitMQ redelivers the event
            if self._draining:
                outcome = _REQUEUE
            elif observability.listening():
                started = time.perf_counter()
                outcome = self._handle(delivery)
                self._report(delivery, outcome, time.perf_counter() - started)
            else:
                outcome = self._handle(delivery)
            self._completions.append((delivery, outcome))
            self._wake()

    @staticmethod
    def _report(delivery: _Delivery, outcome: _Outcome, seconds: float) -> None:
        topology = delivery.registration.topology
        if outcome is _ACK:
            kind = "handled"
        elif outcome.action == _RETRY:
            kind = "retried"
        else:
            kind = "dead_lettered" if topology.dead_letter else "dropped"
        observability.notify(
            Occurrence(kind, delivery.routing_key, delivery.event_id, topology.name, seconds)
        )

    def _handle(self, delivery: _Delivery) -> _Outcome:
        registration = delivery.registration
        name = registration.topology.name
        try:
            event = DomainEvent.from_json(delivery.body)
        except InvalidEvent as error:
            log.error(
                "subscriber %s: message %s (%s) is not a domain event: %s; %s",
                name,
                delivery.properties.message_id,
                delivery.routing_key,
                error,
                _fate_of_failed(registration.topology),
            )
            return _Outcome(_DEAD_LETTER, exception_type=_qualified_name(error), reason=str(error))
        event.retries = delivery.retries = delivery_retries(delivery.properties.headers, name)
        delivery.event_id = event.uuid_string
        try:
            registration.handler(event)
        except Retry as retry:
            if event.retries < registration.max_retries:
                log.info(
                    "subscriber %s: event %s (%s) will be retried in %.1f s (retry %d of %d)",
                    name,
                    event.uuid_string,
                    event.routing_key,
                    retry.delay,
                    event.retries + 1,
                    registration.max_retries,
                )
                return _Outcome(_RETRY, delay=retry.delay)
            reason = f"exceeded max_retries ({registration.max_retries})"
            log.error(
                "subscriber %s: event %s (%s) %s; %s",
                name,
                event.uuid_string,
                event.routing_key,
                reason,
                _fate_of_failed(registration.topology),
            )
            return _Outcome(_DEAD_LETTER, exception_type=_qualified_name(retry), reason=reason)
        except Exception as error:
            log.exception(
                "subscriber %s: handler failed on event %s (%s) with %s: %s; %s",
                name,
                event.uuid_string,
                event.routing_key,
                type(error).__name__,
                error,
                _fate_of_failed(registration.topology),
            )
            return _Outcome(_DEAD_LETTER, exception_type=_qualified_name(error), reason=str(error))
        log.debug(
            "subscriber %s: handled event %s (%s)", name, event.uuid_string, event.routing_key
        )
        return _ACK

    # Signals ---------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[signal.Signals, Any] | None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stop_requested.is_set():
                log.warning("second %s: stopping at once; unacked events are redelivered", name)
                raise SystemExit(128 + signum)
            log.info(
                "%s: finishing in-flight events (up to %.0f s), then stopping; "
                "send it again to stop at once",
                name,
                self.shutdown_grace_period,
            )
            self.stop_consuming()

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[signal.Signals, Any] | None) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)


def _fate_of_failed(topology: SubscriberTopology) -> str:
    """What happens to a failed event, for the log line that reports the failure."""
    if topology.dead_letter:
        return f"moved to dead-letter queue {topology.dead_letter_queue}"
    return "dropped (register with dead_letter=True to keep failed events)"


def _qualified_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
