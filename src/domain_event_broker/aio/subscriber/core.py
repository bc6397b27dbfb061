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

The parts, in the order a delivery meets them: ``session.py`` (connection,
channels, consumers, ack book), ``workers.py`` (worker tasks),
``handling.py`` (event -> handler -> outcome, logged and reported),
``settling.py`` (ack, nack, or copy then ack), ``copies.py`` (the confirmed
retry and dead-letter copies); ``loop.py`` reconnects and drains, ``signals.py``
stops on SIGTERM/SIGINT; this module is the public API.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence

from ...contracts.handlers import typed_registration
from ...core.defaults import PREFETCH_COUNT, PUBLISH_TIMEOUT, SHUTDOWN_GRACE_PERIOD
from ...core.handling import consuming
from ...core.history import StartFrom, registration_start
from ...core.outcome import Policy
from ...core.topology import registration_topology
from ...events import DomainEvent
from ...handlers import RegisteredHandler
from ...settings import ConnectionSettings, mask_url, resolve_url
from ...topology import (
    DEFAULT_EXCHANGE,
    DEFAULT_EXCHANGE_TYPE,
    QueueType,
    SubscriberTopology,
)
from .. import topology as aio_topology
from ..connection import connect
from . import signals
from .history import AsyncHandOver
from .loop import ConsumeLoop
from .session import AsyncHandler, Registration, Session, Sessions
from .workers import Workers

log = logging.getLogger(__package__)


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
    ``publish_timeout``: seconds the broker has to confirm a retry or dead-letter
    copy; when no confirm comes the connection is taken for lost and the event
    is delivered again after the reconnect, as :class:`~domain_event_broker.Subscriber` does.
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
        publish_timeout: float = PUBLISH_TIMEOUT,
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
        self._registrations: list[Registration] = []
        self.publish_timeout = publish_timeout
        self._sessions = Sessions(
            self.connection_settings, prefetch_count, self._registrations, publish_timeout
        )
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._running = False
        # stop() before run() got going (a task created, not yet started): run() returns at once.
        self._stop_before_run = False
        #: The signal that stopped run() at once (a second SIGTERM/SIGINT), if one did.
        self._stopped_at_once: signal.Signals | None = None

    # Public API -----------------------------------------------------------------
    def register(
        self,
        handler: AsyncHandler,
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
        """Register an ``async def handler(event)`` for events matching ``binding_keys``.

        The options mean what they mean for :meth:`domain_event_broker.Subscriber.register`
        (``start_from`` too: history first, then live events; see docs/history.md).
        Queues are declared when :meth:`run` connects (and after each reconnect).
        """
        start = registration_start(start_from, ordered_by, time.time())
        if not callable(handler):
            raise TypeError(f"handler must be an async function, not {type(handler).__name__}")
        handler, binding_keys = typed_registration(handler, binding_keys)
        topology = registration_topology(
            name,
            binding_keys,
            kind=SubscriberTopology,
            max_retries=max_retries,
            registered=self.registered_names,
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
        if self._running:
            raise RuntimeError("register() every handler before run()")
        policy = Policy(name, max_retries, dead_letter)
        wait_queues = aio_topology.WaitQueues(topology)
        if start is not None:
            self._sessions.hand_overs[name] = AsyncHandOver(topology, start)
        self._registrations.append(Registration(handler, topology, policy, wait_queues))

    @property
    def registrations(self) -> list[RegisteredHandler]:
        """Every registered handler with its topology (for ``domain-events asyncapi``)."""
        return [
            RegisteredHandler(r.handler, r.topology, r.policy.max_retries)
            for r in self._registrations
        ]

    @property
    def registered_names(self) -> list[str]:
        return [registration.topology.name for registration in self._registrations]

    async def declare(self) -> None:
        """Declare every registered subscriber's topology now, without consuming.

        Not of one registered with ``start_from``: its queue must not exist before
        the hand-over from history has begun (see docs/history.md).
        """
        if self.connection_settings is None:
            return
        connection = await connect(self.connection_settings, "subscriber")
        try:
            for registration in self._registrations:
                if registration.topology.name in self._sessions.hand_overs:
                    continue  # declared by its hand-over from history, in its order
                await aio_topology.declare(connection, registration.topology)
        finally:
            await connection.close()

    async def run(self) -> None:
        """Receive events until :meth:`stop` (or SIGTERM/SIGINT); reconnect when the broker goes.

        On the way out in-flight handlers get ``shutdown_grace_period`` seconds
        to finish and be settled; events not yet started go back to their queue.
        A second SIGTERM/SIGINT stops at once: handlers still running are
        cancelled, their events redelivered, and ``run()`` raises
        ``SystemExit(128 + signal)`` once the connection is closed, as the sync
        subscriber does (a process supervisor sees that work was abandoned).
        """
        if self.connection_settings is None:
            log.debug("no broker configured: not consuming")
            return
        if not self._registrations:
            raise RuntimeError("register() a handler before run()")
        if self._running:
            raise RuntimeError("this subscriber is running already")
        self._running = True
        self._stopped_at_once = None
        stopping = self._stopping = asyncio.Event()
        if self._stop_before_run:
            self._stop_before_run = False
            stopping.set()
        self._stopped = asyncio.Event()
        for registration in self._registrations:
            topology = registration.topology
            log.info(
                "%s", consuming(registration.policy, topology.binding_keys, topology.partitions)
            )
        workers = Workers(self._sessions, self.request_stop)
        workers.start(self.concurrency)
        replaced = signals.install(self._on_signal) if self.handle_signals else {}
        try:
            loop = ConsumeLoop(
                self._sessions,
                workers,
                stopping,
                self.masked_url,
                lambda: self.shutdown_grace_period,  # a second signal lowers it
            )
            await loop.run()
        finally:
            await workers.stop()
            signals.restore(replaced)
            if self._sessions.current is not None:
                await self._sessions.close(self._sessions.current)
            self._running = False
            self._stopped.set()
        if self._stopped_at_once is not None:
            raise SystemExit(128 + self._stopped_at_once)

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

    @property
    def _session(self) -> Session | None:
        """The session consuming now (None while connecting)."""
        return self._sessions.current

    # Signals ------------------------------------------------------------------------------
    def _on_signal(self, signum: signal.Signals) -> None:
        assert self._stopping is not None
        if self._stopping.is_set():
            log.warning("second %s: stopping at once; unacked events are redelivered", signum.name)
            self._stopped_at_once = signum
            self.shutdown_grace_period = 0.0
            session = self._sessions.current
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


__all__ = ["AsyncHandler", "AsyncSubscriber"]
