"""The Subscriber: registering handlers, starting and stopping; the parts do the work.

- ``loop.py``: the consume loop (its passes run by the workers in turn),
  reconnecting with backoff;
- ``session.py``: one connection's consume channel, acks and failure copies;
- ``workers.py`` and ``handling.py``: the worker threads (and their turns at
  the connection's I/O) and one delivery
  through its handler (``outcome.decide`` says what becomes of it);
- ``failures.py``: storing retry and dead-letter copies, confirmed;
- ``acks.py`` (the package above): which delivery tags to ack and how;
- ``signals.py`` (the package above): SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from pika.adapters.blocking_connection import BlockingConnection

from .. import signals
from .._transport import Transport, requires_broker
from ..connection import connect_blocking
from ..contracts.handlers import typed_registration
from ..core.defaults import PREFETCH_COUNT, PUBLISH_TIMEOUT, SHUTDOWN_GRACE_PERIOD, WORKERS
from ..core.handling import consuming
from ..core.history import StartFrom, registration_start
from ..core.topology import registration_topology
from ..events import DomainEvent
from ..handlers import Handler, RegisteredHandler
from ..history import require_archive
from ..settings import ConnectionSettings, mask_url
from ..status import queue_counts
from ..topology import (
    DEFAULT_EXCHANGE,
    DEFAULT_EXCHANGE_TYPE,
    QueueType,
    SubscriberTopology,
    normalise_binding_keys,
)
from .delivery import Registration
from .history import HandOver
from .loop import Connector, ConsumeLoop, LoopOptions

log = logging.getLogger(__package__)


class Subscriber(Transport):
    """Receives domain events for one or more registered handlers.

    >>> subscriber = Subscriber()  # doctest: +SKIP
    >>> subscriber.register(send_welcome_mail, "welcome-mailer", ["user.registered"],
    ...                     dead_letter=True, max_retries=3)  # doctest: +SKIP
    >>> subscriber.start_consuming()  # doctest: +SKIP

    ``connection_settings``: an AMQP URL, ``''`` for the default broker or
    ``None`` for no broker (then nothing is consumed).
    ``prefetch_count``: deliveries each handler's queue may have outstanding.
    ``workers``: threads running handlers; more than one handles events of a
    subscriber concurrently and so out of order.
    ``shutdown_grace_period``: seconds in-flight handlers get to finish on stop.
    ``publish_timeout``: seconds the broker has to confirm a retry or dead-letter
    copy; after that the subscriber reconnects (the event is redelivered).
    ``handle_signals``: on SIGTERM/SIGINT (main thread only) stop gracefully;
    a second signal stops at once.
    """

    def __init__(
        self,
        connection_settings: ConnectionSettings = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
        *,
        prefetch_count: int = PREFETCH_COUNT,
        workers: int = WORKERS,
        shutdown_grace_period: float = SHUTDOWN_GRACE_PERIOD,
        publish_timeout: float = PUBLISH_TIMEOUT,
        handle_signals: bool = True,
    ) -> None:
        if prefetch_count < 1:
            raise ValueError(f"prefetch_count must be at least 1, got {prefetch_count}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not publish_timeout > 0:
            raise ValueError(f"publish_timeout must be more than 0 s, got {publish_timeout}")
        super().__init__(connection_settings, exchange, exchange_type)
        self.masked_url = mask_url(self.connection_settings)
        self.prefetch_count = prefetch_count
        self.workers = workers
        self.shutdown_grace_period = shutdown_grace_period
        self.publish_timeout = publish_timeout
        self.handle_signals = handle_signals
        self._registrations: list[Registration] = []
        self._described: list[RegisteredHandler] = []
        self._hand_overs: dict[str, HandOver] = {}
        self._stop = signals.StopFlag()
        self._connector = Connector(self._connect, self._registrations, self._hand_overs)
        self._loop = ConsumeLoop(
            self._connector,
            self._registrations,
            LoopOptions(prefetch_count, workers, shutdown_grace_period, publish_timeout),
            self._stop,
            lambda: self.masked_url,
        )
        self._running = False
        if self.connection_settings is not None:
            self._connector.ensure()

    # Public API ---------------------------------------------------------------
    def register(
        self,
        handler: Handler,
        name: str,
        binding_keys: str | Sequence[str | type[DomainEvent]] = (),
        dead_letter: bool = False,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        max_retries: int = 0,
        *,
        queue_type: QueueType = "classic",
        start_from: StartFrom | None = None,
        ordered_by: str | None = None,
        partitions: int | None = None,
    ) -> None:
        """Register ``handler`` for events whose routing key matches ``binding_keys``.

        :param handler: called with each :class:`DomainEvent` (an ``async def``
            handler is awaited; one annotated with an event type of
            :mod:`~domain_event_broker.contracts` gets that type, checked); raise
            :class:`Retry` to handle it again later, any other exception to
            dead-letter (or drop) it.
        :param name: the subscriber's name, also the name of its queue.
        :param binding_keys: e.g. ``["user.registered", "order.*"]``; ``*``
            matches one word, ``#`` zero or more; an event type stands for its routing key.
        :param dead_letter: keep failed events in the queue ``<name>-dl``.
        :param durable: keep the queue (and its events) while nobody consumes.
        :param max_retries: how often :class:`Retry` is honoured per event.
        :param queue_type: ``"quorum"`` for replicated queues on a cluster (opt-in;
            an existing classic queue cannot be switched in place).
        :param start_from: a new subscriber (no queue ``name`` yet) first handles the
            events of the exchange's archive from this point on (an aware datetime,
            a naive one meaning UTC; a timedelta: that long ago; or ``"first"``),
            then goes on with live events: none missed, none twice. See docs/history.md.
        :param ordered_by: ``"domain_object_id"``: the events of one object are
            handled in publish order, different objects in parallel, across
            processes (see docs/ordered.md); needs ``partitions``.
        :param partitions: how many partition queues (1 to 256) spread the objects.
        """
        handler, binding_keys = typed_registration(handler, binding_keys)
        start = registration_start(start_from, ordered_by, time.time())
        topology = registration_topology(
            name,
            binding_keys,
            kind=SubscriberTopology,
            max_retries=max_retries,
            registered=[registration.name for registration in self._registrations],
            exchange=self.exchange,
            exchange_type=self.exchange_type,
            dead_letter=dead_letter,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            queue_type=queue_type,
            ordered_by=ordered_by,
            partitions=partitions,
        )
        self._described.append(RegisteredHandler(handler, topology, max_retries))
        if self.connection_settings is None:
            log.debug("no broker configured: handler %r is not registered", name)
            return
        connection = self._connector.ensure()
        if start is None:
            topology.declare_on(connection, self._connector.rabbitmq)
        else:
            if queue_counts(connection, name)[0] is None:  # history will be read: say now
                require_archive(connection, self.exchange)
            self._hand_overs[name] = HandOver(topology, start)
        registration = Registration(handler, topology, max_retries)
        self._registrations.append(registration)
        if self._loop.session is not None:
            self._loop.session.consume(registration)
        log.info(
            "subscriber %s registered for %s on %s",
            name,
            ", ".join(topology.binding_keys),
            self.masked_url,
        )

    @requires_broker
    def bind_routing_keys(
        self, exchange: str, queue_name: str, binding_keys: str | Sequence[str]
    ) -> None:
        """Bind queue ``queue_name`` to ``exchange`` with each binding key (the 3.x helper)."""
        channel = self.channel
        assert channel is not None
        for binding_key in normalise_binding_keys(binding_keys):
            channel.queue_bind(queue=queue_name, exchange=exchange, routing_key=binding_key)

    @property
    def registrations(self) -> list[RegisteredHandler]:
        """Every registered handler with its topology (kept without a broker too: for the
        ``domain-events asyncapi`` and ``check`` commands)."""
        return list(self._described)

    @property
    def registered_names(self) -> list[str]:
        """Names of the registered handlers (their queue names)."""
        return [registration.name for registration in self._registrations]

    @property
    def connected(self) -> bool:
        """Whether the connection to RabbitMQ is open now."""
        return self._connector.connected

    @property
    def consuming(self) -> bool:
        """Whether events are being received now (consumers started, not stopping)."""
        return self._loop.consuming

    @property
    def last_handled_at(self) -> float | None:
        """``time.time()`` when a handler last finished with an event (returned or raised)."""
        return self._loop.last_handled_at

    def start_consuming(self, timeout: float | None = None) -> None:
        """Receive events until :meth:`stop_consuming`, a signal, or ``timeout`` seconds.

        A lost connection is regained by itself (with backoff); the timeout
        holds across reconnects. On the way out, in-flight handlers get
        ``shutdown_grace_period`` seconds to finish and be acked. A
        ``KeyboardInterrupt`` or ``SystemExit`` raised by a handler stops the
        subscriber the same way (its event goes back to the queue) and is then
        raised here. A :meth:`stop_consuming` made before this call makes it
        return at once.
        """
        if self.connection_settings is None:
            log.debug("no broker configured: not consuming")
            return
        if not self._registrations:
            raise RuntimeError("register() a handler before start_consuming()")
        if self._stop.requested:
            log.info("stop_consuming() was called before start_consuming(): not consuming")
            self._stop.clear()
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        for registration in self._registrations:
            topology = registration.topology
            log.info(
                "%s", consuming(registration.policy, topology.binding_keys, topology.partitions)
            )
        restore = self._install_signal_handlers()
        self._running = True
        try:
            self._loop.run(deadline)
        finally:
            self._running = False
            self._stop.clear()
            restore()

    def stop_consuming(self) -> None:
        """Stop consuming: no new events, in-flight handlers finish and are acked.

        Safe to call from any thread or a handler; before :meth:`start_consuming`
        it makes that call return at once.
        """
        self._stop.request()
        if not self._running:
            self._connector.close()

    def disconnect(self) -> None:
        """Close the connection (after :meth:`stop_consuming`, if consuming)."""
        super().disconnect()  # the 3.x transport's .connection, when it was used
        if self._running:
            self.stop_consuming()
        else:
            self._connector.close()

    close = disconnect

    # Internals -----------------------------------------------------------------------
    def _connect(self) -> BlockingConnection:
        assert self.connection_settings is not None
        return connect_blocking(self.connection_settings, "subscriber")

    def _install_signal_handlers(self) -> Callable[[], None]:
        if not self.handle_signals:
            return lambda: None
        return signals.stop_on_signals(
            self._stop.request_from_signal,
            stopping=(
                f"finishing in-flight events (up to {self.shutdown_grace_period:.0f} s), "
                "then stopping"
            ),
            at_once="unacked events are redelivered",
        )
