"""Receiving domain events in asyncio code: delivery -> async handler -> ack, retry or dead-letter.

Deliveries go into one queue; ``concurrency`` worker tasks take them in order,
await the handler (through the handler middleware), and settle each event by
the shared rule in :mod:`domain_event_broker.outcome`:

- handled: ack;
- :class:`Retry` below ``max_retries``: publish a delayed copy to the wait
  queue for that delay, wait for the broker's confirm, then ack;
- failed (or a body that is not an event): publish a copy with failure headers
  to the dead-letter queue when there is one, wait for the confirm, then ack;
  without one the event is dropped and logged as an error;
- a copy the broker refuses: the event goes back to its queue after a pause.

A lost connection is reopened with backoff, the topology declared again, and
consuming resumes; deliveries of the lost channel are never settled (RabbitMQ
redelivers them). :meth:`AsyncSubscriber.stop` (or SIGTERM/SIGINT) stops
taking events, lets in-flight handlers finish and settles them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from .. import observability, wait_queues
from ..connection import Backoff
from ..copies import COPIED_PROPERTIES
from ..errors import InvalidEvent
from ..events import DomainEvent
from ..observability import Handling, Occurrence
from ..outage import OutageLog, reconnecting
from ..outcome import (
    Action,
    Outcome,
    Policy,
    decide,
    failure,
    failure_headers,
    fate,
    parse_event,
    retry_headers,
    safe_text,
    undecodable,
)
from ..settings import ConnectionSettings, mask_url, resolve_url
from ..subscriber import PREFETCH_COUNT, SHUTDOWN_GRACE_PERIOD
from ..subscriber.loop import HOUSEKEEPING_INTERVAL
from ..topology import (
    DEFAULT_EXCHANGE,
    DEFAULT_EXCHANGE_TYPE,
    ROUTING_KEY_HEADER,
    QueueType,
    SubscriberTopology,
    registration_topology,
)
from . import topology as aio_topology
from .connection import CONNECTION_LOST, connect

log = logging.getLogger(__name__)

#: Errors of a copy that cannot be written at all (never a dead worker for them).
_UNWRITABLE: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    UnicodeError,
    aiormq.exceptions.AMQPError,
)
_REFUSED_OR_UNWRITABLE: tuple[type[BaseException], ...] = (
    aiormq.exceptions.DeliveryError,
    asyncio.TimeoutError,
    *_UNWRITABLE,
)

AsyncHandler = Callable[[DomainEvent], Awaitable[object]]

#: Seconds to wait for the broker's confirm of a retry or dead-letter copy.
CONFIRM_TIMEOUT = 30.0

RECONNECTING = reconnecting("asyncio subscriber", error_text=False)


@dataclass
class _Registration:
    handler: AsyncHandler
    topology: SubscriberTopology
    policy: Policy
    wait_queues: aio_topology.WaitQueues
    # A refused copy sends its event back after a pause that grows while refusals go on.
    refused: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=10.0))


@dataclass
class _Delivery:
    registration: _Registration
    message: aio_pika.abc.AbstractIncomingMessage
    generation: int


class _Session:
    """The channels of one connection: deliveries from an older session are never settled."""

    def __init__(
        self,
        connection: aio_pika.abc.AbstractConnection,
        consume: aio_pika.abc.AbstractChannel,
        publish: aio_pika.abc.AbstractChannel,
        generation: int,
    ) -> None:
        self.connection = connection
        self.consume = consume
        self.publish = publish
        self.generation = generation
        self.lost = asyncio.Event()
        self.consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self.acks = _Acks()
        self.ack_lock = asyncio.Lock()
        self.flush_scheduled = False


class _Acks:
    """Delivery tags of one channel: which are handled, and which one multiple ack covers.

    Handled events are acked together: one ``multiple`` ack for the longest run
    of oldest deliveries that are all handled or settled already (RabbitMQ
    refuses a multiple ack whose own tag is settled), the rest one by one. A
    tag settled on its own (nack, retry, dead letter) is marked :meth:`settled`
    only after its frame was sent, so no multiple ack can pass it before.
    """

    def __init__(self) -> None:
        self.in_flight: deque[int] = deque()  # arrival order
        self.done: set[int] = set()
        self.handled: list[tuple[int, aio_pika.abc.AbstractIncomingMessage]] = []

    def delivered(self, tag: int) -> None:
        self.in_flight.append(tag)

    def settled(self, tag: int) -> None:
        self.done.add(tag)

    def take(self) -> tuple[int, list[int]]:
        """(tag of a multiple ack or 0, tags to ack one by one) for the handled events."""
        tags = [tag for tag, _ in self.handled]
        self.handled.clear()
        in_flight, done = self.in_flight, self.done
        done.update(tags)
        acking = set(tags)
        last = 0
        while in_flight and in_flight[0] in done:
            tag = in_flight.popleft()
            done.discard(tag)
            if tag in acking:
                last = tag
        return last, [tag for tag in tags if tag > last]


class AsyncSubscriber:
    """Receives domain events for registered ``async def`` handlers.

    >>> subscriber = AsyncSubscriber(prefetch_count=100, concurrency=10)  # doctest: +SKIP
    >>> subscriber.register(send_welcome_mail, "welcome-mailer", ["user.registered"],
    ...                     dead_letter=True, max_retries=3)  # doctest: +SKIP
    >>> await subscriber.run()  # doctest: +SKIP

    ``concurrency``: handlers awaited at once; more than one handles events of a
    subscriber concurrently and so out of order. ``handle_signals``: stop
    gracefully on SIGTERM/SIGINT (a second one stops at once); pass ``False``
    beside a server that owns the signals (uvicorn) and call :meth:`stop`.
    """

    def __init__(
        self,
        connection_settings: ConnectionSettings = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
        *,
        prefetch_count: int = PREFETCH_COUNT,
        concurrency: int = 1,
        shutdown_grace_period: float = SHUTDOWN_GRACE_PERIOD,
        handle_signals: bool = True,
    ) -> None:
        if prefetch_count < 1:
            raise ValueError(f"prefetch_count must be at least 1, got {prefetch_count}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.connection_settings = resolve_url(connection_settings)
        self.masked_url = mask_url(self.connection_settings)
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.prefetch_count = prefetch_count
        self.concurrency = concurrency
        self.shutdown_grace_period = shutdown_grace_period
        self.handle_signals = handle_signals
        self._registrations: list[_Registration] = []
        self._session: _Session | None = None
        self._generation = 0
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._draining = False
        self._deliveries: asyncio.Queue[_Delivery | None] | None = None
        self._in_flight = 0
        self._running = False
        self._flushes: set[asyncio.Task[None]] = set()
        # stop() before run() got going (a task created, not yet started): run() returns at once.
        self._stop_before_run = False

    # Public API -----------------------------------------------------------------
    def register(
        self,
        handler: AsyncHandler,
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
        """Register an ``async def handler(event)`` for events matching ``binding_keys``.

        The options mean what they mean for :meth:`domain_event_broker.Subscriber.register`.
        Queues are declared when :meth:`run` connects (and after each reconnect).
        """
        if not callable(handler):
            raise TypeError(f"handler must be an async function, not {type(handler).__name__}")
        topology = registration_topology(
            name,
            binding_keys,
            max_retries=max_retries,
            registered=self.registered_names,
            exchange=self.exchange,
            exchange_type=self.exchange_type,
            dead_letter=dead_letter,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            queue_type=queue_type,
        )
        if self._running:
            raise RuntimeError("register() every handler before run()")
        self._registrations.append(
            _Registration(
                handler,
                topology,
                Policy(name, max_retries, dead_letter),
                aio_topology.WaitQueues(topology),
            )
        )

    @property
    def registered_names(self) -> list[str]:
        return [registration.topology.name for registration in self._registrations]

    async def declare(self) -> None:
        """Declare every registered subscriber's topology now, without consuming."""
        if self.connection_settings is None:
            return
        connection = await connect(self.connection_settings, "subscriber")
        try:
            for registration in self._registrations:
                channel = await connection.channel()
                await aio_topology.declare(channel, registration.topology)
                await channel.close()
        finally:
            await connection.close()

    async def run(self) -> None:
        """Receive events until :meth:`stop` (or SIGTERM/SIGINT); reconnect when the broker goes.

        On the way out in-flight handlers get ``shutdown_grace_period`` seconds
        to finish and be settled; events not yet started go back to their queue.
        """
        if self.connection_settings is None:
            log.debug("no broker configured: not consuming")
            return
        if not self._registrations:
            raise RuntimeError("register() a handler before run()")
        if self._running:
            raise RuntimeError("this subscriber is running already")
        self._running = True
        self._stopping = asyncio.Event()
        if self._stop_before_run:
            self._stop_before_run = False
            self._stopping.set()
        self._stopped = asyncio.Event()
        self._draining = False
        self._deliveries = asyncio.Queue()
        workers = [
            asyncio.create_task(self._work(self._deliveries), name=f"domain-event-worker-{n}")
            for n in range(self.concurrency)
        ]
        replaced_handlers = self._install_signal_handlers()
        outage = OutageLog(
            log, f"RabbitMQ at {self.masked_url}", backoff=Backoff(), wording=RECONNECTING
        )
        try:
            while not self._stopping.is_set():
                try:
                    session = await self._open_session()
                except CONNECTION_LOST as error:
                    await self._sleep(outage.failed(error))
                    continue
                outage.succeeded()
                housekeeping = asyncio.create_task(self._housekeeping(session))
                try:
                    await self._wait_any(session.lost, self._stopping)
                finally:
                    housekeeping.cancel()
                if self._stopping.is_set():
                    await self._drain(session)
                else:
                    # Reconnect at once: a lost connection is often one cut, not an outage.
                    outage.failed(ConnectionError("connection closed"))
                await self._close_session(session)
        finally:
            self._draining = True
            for _ in workers:
                self._deliveries.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 1.0)
            for worker in workers:
                worker.cancel()
            self._restore_signal_handlers(replaced_handlers)
            if self._session is not None:
                await self._close_session(self._session)
            self._running = False
            self._stopped.set()

    async def stop(self) -> None:
        """Stop consuming: no new events; in-flight handlers finish and are settled.

        Returns once :meth:`run` has returned (when it runs).
        """
        self.request_stop()
        if self._running and self._stopped is not None:
            await self._stopped.wait()

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop, without waiting (safe from a handler or a signal handler)."""
        if self._running and self._stopping is not None:
            self._stopping.set()
        else:
            self._stop_before_run = True

    # Connection --------------------------------------------------------------------
    async def _open_session(self) -> _Session:
        assert self.connection_settings is not None
        connection = await connect(self.connection_settings, "subscriber")
        try:
            for registration in self._registrations:
                registration.wait_queues.forget()
                channel = await connection.channel()
                await aio_topology.declare(channel, registration.topology)
                await channel.close()
            consume = await connection.channel()
            await consume.set_qos(prefetch_count=self.prefetch_count)
            # on_return_raises: a copy no queue took must fail, never count as stored
            publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._generation += 1
            session = _Session(connection, consume, publish, self._generation)
            self._session = session
            # A closed publish channel is reopened when next needed (_publish_channel).
            for closable in (connection, consume):
                closable.close_callbacks.add(lambda *_: session.lost.set())
            for registration in self._registrations:
                queue = await consume.get_queue(registration.topology.queue, ensure=False)
                tag = await queue.consume(self._on_message_of(registration, session), no_ack=False)
                session.consumers.append((queue, tag))
        except BaseException:
            await _close_quietly(connection)
            raise
        log.info(
            "asyncio subscriber consuming %s on %s",
            ", ".join(self.registered_names),
            self.masked_url,
        )
        return session

    def _on_message_of(
        self, registration: _Registration, session: _Session
    ) -> Callable[[aio_pika.abc.AbstractIncomingMessage], Awaitable[None]]:
        deliveries = self._deliveries
        assert deliveries is not None

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if message.delivery_tag is not None:
                session.acks.delivered(message.delivery_tag)
            deliveries.put_nowait(_Delivery(registration, message, session.generation))

        return on_message

    async def _drain(self, session: _Session) -> None:
        """Stop taking events; let in-flight handlers finish and settle them."""
        self._draining = True
        try:
            for queue, tag in session.consumers:
                await queue.cancel(tag)
        except CONNECTION_LOST as error:
            log.warning(
                "connection lost while stopping (%s); unacked events are redelivered", error
            )
            return
        deadline = time.monotonic() + self.shutdown_grace_period
        assert self._deliveries is not None
        while (
            self._in_flight
            or not self._deliveries.empty()
            or session.acks.handled
            or session.ack_lock.locked()
        ) and time.monotonic() < deadline:
            if session.lost.is_set():
                return
            await asyncio.sleep(0.02)
        if self._in_flight:
            log.warning(
                "%d events still being handled after the %.0f s grace period; "
                "RabbitMQ redelivers them",
                self._in_flight,
                self.shutdown_grace_period,
            )

    async def _housekeeping(self, session: _Session) -> None:
        """Every few seconds: remove the wait queues this subscriber has long stopped using."""
        while not session.lost.is_set():
            await asyncio.sleep(min(HOUSEKEEPING_INTERVAL, wait_queues.CHECK_INTERVAL))
            now = time.monotonic()
            for registration in self._registrations:
                try:
                    await registration.wait_queues.remove_idle(session.connection, now)
                except CONNECTION_LOST as error:
                    # The session's loss is run()'s to handle; a queue kept is tried later.
                    log.debug("removing idle wait queues failed: %s", type(error).__name__)

    async def _close_session(self, session: _Session) -> None:
        if self._session is session:
            self._session = None
        await _close_quietly(session.connection)

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @staticmethod
    async def _wait_any(*events: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # Workers ----------------------------------------------------------------------------
    async def _work(self, deliveries: asyncio.Queue[_Delivery | None]) -> None:
        while True:
            delivery = await deliveries.get()
            if delivery is None:
                return
            if delivery.generation != self._generation:
                continue  # its channel is gone; RabbitMQ redelivers the event
            if self._draining:
                await self._settle(delivery, Outcome(Action.REQUEUE), None)
                continue
            self._in_flight += 1
            try:
                started = time.perf_counter()
                try:
                    outcome, retries = await self._handle(delivery)
                except Exception as error:  # a bug of ours: never a dead worker
                    outcome = failure(
                        delivery.registration.policy, error, f"internal error: {safe_text(error)}"
                    )
                    retries = 0
                    log.exception(
                        "subscriber %s: could not handle event %s; %s",
                        delivery.registration.topology.name,
                        delivery.message.message_id,
                        fate(outcome.action, delivery.registration.topology.dead_letter_queue),
                    )
                if observability.listening():
                    self._report(delivery, outcome, time.perf_counter() - started)
                await self._settle(delivery, outcome, retries)
            finally:
                self._in_flight -= 1

    async def _handle(self, delivery: _Delivery) -> tuple[Outcome, int]:
        registration = delivery.registration
        message = delivery.message
        name = registration.topology.name
        try:
            event = parse_event(message.body, message.headers, name)
        except InvalidEvent as error:
            outcome = undecodable(registration.policy, error)
            log.error(
                "subscriber %s: message %s (%s) is not a domain event: %s; %s",
                name,
                message.message_id,
                message.routing_key,
                outcome.reason,
                fate(outcome.action, registration.topology.dead_letter_queue),
            )
            return outcome, 0
        raised: BaseException | None = None
        try:
            await observability.call_async_handler(
                registration.handler, Handling(name, event, message.headers)
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and _cancelling(task):
                raise  # we are being cancelled: unsettled, RabbitMQ redelivers it
            raised = RuntimeError("the handler was cancelled")
        except BaseException as error:  # the rule: any handler failure has an outcome
            raised = error
        outcome = decide(registration.policy, event.retries, raised)
        if outcome.action is Action.RETRY:
            log.info(
                "subscriber %s: event %s (%s) will be retried in %.1f s (retry %d of %d)",
                name,
                event.uuid_string,
                event.routing_key,
                outcome.delay,
                event.retries + 1,
                registration.policy.max_retries,
            )
        elif outcome.failed:
            log.error(
                "subscriber %s: handler failed on event %s (%s) with %s: %s; %s",
                name,
                event.uuid_string,
                event.routing_key,
                outcome.exception_type,
                outcome.reason,
                fate(outcome.action, registration.topology.dead_letter_queue),
            )
        elif outcome.action is Action.REQUEUE:
            log.warning(
                "subscriber %s: handler raised %s on event %s; stopping, the event goes back",
                name,
                type(raised).__name__,
                event.uuid_string,
            )
            self.request_stop()
        return outcome, event.retries

    @staticmethod
    def _report(delivery: _Delivery, outcome: Outcome, seconds: float) -> None:
        topology = delivery.registration.topology
        kinds = {
            Action.ACK: "handled",
            Action.RETRY: "retried",
            Action.DEAD_LETTER: "dead_lettered",
            Action.DROP: "dropped",
        }
        kind = kinds.get(outcome.action)
        if kind is not None:
            observability.notify(
                Occurrence(
                    kind,
                    topology.event_routing_key(
                        delivery.message.routing_key or "", delivery.message.headers
                    ),
                    delivery.message.message_id,
                    topology.name,
                    seconds,
                )
            )

    # Settling -----------------------------------------------------------------------------
    async def _settle(self, delivery: _Delivery, outcome: Outcome, retries: int | None) -> None:
        session = self._session
        if session is None or session.generation != delivery.generation:
            return  # its channel is gone; RabbitMQ redelivers the event
        message = delivery.message
        tag = message.delivery_tag or 0
        try:
            if outcome.action is Action.ACK or outcome.action is Action.DROP:
                # acked with others, once the loop has run what is ready
                session.acks.handled.append((tag, message))
                if not session.flush_scheduled:
                    session.flush_scheduled = True
                    asyncio.get_running_loop().call_soon(self._schedule_flush, session)
                return
            if outcome.action is Action.REQUEUE:
                await message.nack(requeue=True)
            elif await self._store_copy(session, delivery, outcome, retries or 0):
                delivery.registration.refused.reset()
                await message.ack()
            else:
                # Refused: back to its queue, after a pause so that it is no hot loop.
                await asyncio.sleep(delivery.registration.refused.next_delay())
                await message.nack(requeue=True)
            session.acks.settled(tag)
        except CONNECTION_LOST as error:
            # The channel is gone: the unsettled event comes back by itself.
            log.warning(
                "subscriber %s: could not settle event %s (%s); RabbitMQ redelivers it",
                delivery.registration.topology.name,
                message.message_id,
                type(error).__name__,
            )
            session.lost.set()

    def _schedule_flush(self, session: _Session) -> None:
        session.flush_scheduled = False
        task = asyncio.get_running_loop().create_task(self._flush_acks(session))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_acks(self, session: _Session) -> None:
        """Ack the handled events (one multiple ack where they are in order)."""
        async with session.ack_lock:  # a later multiple ack must not overtake these
            if not session.acks.handled or session.generation != self._generation:
                return
            try:
                channel = session.acks.handled[0][1].channel
                last, singles = session.acks.take()
                if last:
                    await channel.basic_ack(last, multiple=True)
                for tag in singles:
                    await channel.basic_ack(tag)
            except CONNECTION_LOST as error:
                log.warning(
                    "could not ack handled events (%s); RabbitMQ redelivers them",
                    type(error).__name__,
                )
                session.lost.set()

    async def _store_copy(
        self, session: _Session, delivery: _Delivery, outcome: Outcome, retries: int
    ) -> bool:
        """Store a retry or dead-letter copy, confirmed by the broker, before the ack."""
        registration = delivery.registration
        topology = registration.topology
        message = delivery.message
        # A copy back from a wait queue arrives with the queue's name as its routing key.
        routing_key = topology.event_routing_key(message.routing_key or "", message.headers)
        channel = await _publish_channel(session)
        if outcome.action is Action.RETRY:
            delay_ms = round(outcome.delay * 1000)
            headers = retry_headers(message.headers, retries)
            headers[ROUTING_KEY_HEADER] = routing_key
            exchange, key = await registration.wait_queues.route(channel, delay_ms)
        else:
            headers = failure_headers(
                message.headers,
                outcome,
                topology.name,
                retries,
                datetime.now(timezone.utc).isoformat(),
            )
            exchange, key = topology.dead_letter_exchange, routing_key
        try:
            try:
                await _publish_copy(channel, exchange, key, message, headers)
            except (aiormq.exceptions.PublishError, aiormq.exceptions.ChannelNotFoundEntity):
                # returned (no queue took it), or its exchange is gone (channel closed)
                channel = await _publish_channel(session)
                if outcome.action is Action.RETRY:
                    # The wait queue was deleted behind our back: declare it again.
                    registration.wait_queues.forget()
                    exchange, key = await registration.wait_queues.route(channel, delay_ms)
                    await _publish_copy(channel, exchange, key, message, headers)
                else:
                    # The dead-letter exchange has no binding for this key (binding
                    # keys changed?): put it straight into the dead-letter queue.
                    headers[ROUTING_KEY_HEADER] = routing_key
                    await _publish_copy(channel, "", topology.dead_letter_queue, message, headers)
        except _REFUSED_OR_UNWRITABLE as error:
            # Refused, or a copy the client cannot even write (e.g. a header of
            # another publisher's): the event goes back to its queue after a pause.
            log.error(
                "subscriber %s: could not store the %s copy of event %s (%s): %s; "
                "returning it to the queue",
                topology.name,
                outcome.action.value,
                message.message_id,
                routing_key,
                type(error).__name__,
            )
            return False
        return True

    # Signals --------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[signal.Signals, Any]:
        """Our SIGTERM/SIGINT handling; returns the handlers it replaced, to put back."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        loop = asyncio.get_running_loop()
        replaced: dict[signal.Signals, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            replaced[signum] = previous
        return replaced

    def _on_signal(self, signum: signal.Signals) -> None:
        assert self._stopping is not None
        if self._stopping.is_set():
            log.warning("second %s: stopping at once; unacked events are redelivered", signum.name)
            self.shutdown_grace_period = 0.0
            session = self._session
            if session is not None:
                session.lost.set()
            return
        log.info(
            "%s: finishing in-flight events (up to %.0f s), then stopping; "
            "send it again to stop at once",
            signum.name,
            self.shutdown_grace_period,
        )
        self.request_stop()

    @staticmethod
    def _restore_signal_handlers(replaced: dict[signal.Signals, Any]) -> None:
        loop = asyncio.get_running_loop()
        for signum, previous in replaced.items():
            loop.remove_signal_handler(signum)  # sets SIG_DFL: the application's goes back
            if previous is not None:
                signal.signal(signum, previous)


async def _publish_channel(session: _Session) -> aio_pika.abc.AbstractChannel:
    """The session's confirm-mode channel for copies, reopened if the broker closed it."""
    if session.publish.is_closed:
        # on_return_raises: a copy no queue took must fail, never count as stored
        session.publish = await session.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
    return session.publish


async def _publish_copy(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    original: aio_pika.abc.AbstractIncomingMessage,
    headers: dict[str, Any],
) -> None:
    """Publish a persistent copy of ``original`` and wait for the broker's confirm.

    It keeps the properties the sync side's copies keep (:mod:`domain_event_broker.copies`).
    """
    copy = aio_pika.Message(
        original.body,
        headers=headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **{name: getattr(original, name) for name in COPIED_PROPERTIES},
    )
    target = await channel.get_exchange(exchange, ensure=False) if exchange else None
    target = target or channel.default_exchange
    await asyncio.wait_for(target.publish(copy, routing_key, mandatory=True), CONFIRM_TIMEOUT)


async def _close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    if connection.is_closed:
        return
    with contextlib.suppress(*CONNECTION_LOST, asyncio.TimeoutError):
        await asyncio.wait_for(connection.close(), 5.0)


def _cancelling(task: asyncio.Task[Any]) -> bool:
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return True if cancelling is None else bool(cancelling())
