"""The outbox relay: publish pending outbox rows in order, with confirms, then mark them sent.

Written once for every framework; a store (Django, SQLAlchemy) supplies the
database side. Several relays may run at once: each locks the rows it sends
with ``SELECT ... FOR UPDATE SKIP LOCKED``, so in the normal case no row is
sent twice. A relay that dies after the broker confirmed a batch but before
its transaction committed leaves those rows pending, and they are sent again:
delivery is at least once, and handlers should be idempotent (see the inbox
helpers).

One refused event affects no other: the relay marks sent exactly the rows
whose events the broker confirmed; a refused row is tried again later with
backoff and, after too many refusals, parked (see :mod:`.attempts`). The
payload is published byte for byte as stored.
"""

from __future__ import annotations

import logging
import threading
import time
from argparse import ArgumentParser
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import signals
from ..connection import Backoff
from ..errors import DomainEventBrokerError, NoBroker
from ..health import STUCK_AFTER, HealthProbe
from ..outage import OutageLog
from ..settings import ConnectionSettings, mask_url, resolve_url
from ..topology import DEFAULT_EXCHANGE
from .attempts import (
    MAX_ATTEMPTS,
    MAX_RETRY_DELAY,
    RETRY_DELAY,
    BatchResult,
    RetryPolicy,
)
from .sending import BatchSender
from .store import OutboxStore, PendingEvent

log = logging.getLogger(__name__)

#: Rows locked and published per database transaction.
BATCH_SIZE = 500
#: Seconds between looks at the table when nothing is pending.
POLL_INTERVAL = 1.0
#: How long sent rows are kept (for people who look for an event) before deletion.
RETENTION = timedelta(days=7)
#: Seconds between deletions of old sent rows.
CLEANUP_INTERVAL = 600.0
#: Seconds a batch may wait for the broker's confirms; the rows stay locked meanwhile.
PUBLISH_TIMEOUT = 10.0
#: Longest pause between attempts while the broker or the database is unreachable.
MAX_BACKOFF = 30.0
#: Largest payload sent, in bytes: RabbitMQ's ``max_message_size`` default on 3.x
#: (4.x defaults to 16 MiB: set it to match). RabbitMQ closes the channel on a
#: larger message instead of refusing it alone, which would fail the whole batch.
MAX_MESSAGE_SIZE = 128 * 1024 * 1024


@dataclass
class RelayStats:
    """What a relay did, for logs, the commands' last line and benchmarks."""

    relayed: int = 0
    batches: int = 0
    failed_attempts: int = 0
    deleted: int = 0
    seconds: float = 0.0
    #: Refusals of single events (each row counted once per refusal).
    refused: int = 0
    #: Rows parked after their last refusal.
    parked: int = 0

    @property
    def events_per_second(self) -> float:
        return self.relayed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"relayed {self.relayed} events in {self.batches} batches in {self.seconds:.1f} s "
            f"({self.events_per_second:.0f} events/s); {self.failed_attempts} failed attempts, "
            f"{self.refused} refused events, {self.parked} parked, "
            f"{self.deleted} old sent rows deleted"
        )


class OutboxRelay:
    """Moves events from an outbox table to RabbitMQ.

    >>> relay = OutboxRelay(store, "amqp://guest:guest@localhost/%2F")  # doctest: +SKIP
    >>> relay.run()            # until stop() or SIGTERM  # doctest: +SKIP
    >>> relay.run(once=True)   # until nothing is pending  # doctest: +SKIP

    ``connection_settings``: an AMQP URL, ``''`` for the default broker.
    ``None`` (no broker, e.g. ``DOMAIN_EVENT_BROKER = None``) raises
    :class:`NoBroker` (a ``ValueError``): a relay without a broker would have
    nothing to do but lose events.

    A row whose event the broker refuses is tried again after ``retry_delay``
    seconds, doubling up to ``max_retry_delay``; after ``max_attempts``
    refusals it is parked (see :mod:`domain_event_broker.outbox.attempts`).
    """

    def __init__(
        self,
        store: OutboxStore,
        connection_settings: ConnectionSettings = "",
        *,
        exchange: str = DEFAULT_EXCHANGE,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
        retention: timedelta | None = RETENTION,
        cleanup_interval: float = CLEANUP_INTERVAL,
        publish_timeout: float = PUBLISH_TIMEOUT,
        max_backoff: float = MAX_BACKOFF,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_attempts: int = MAX_ATTEMPTS,
        retry_delay: float = RETRY_DELAY,
        max_retry_delay: float = MAX_RETRY_DELAY,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        url = resolve_url(connection_settings)
        if url is None:
            raise NoBroker(
                "no broker configured (connection_settings=None, e.g. DOMAIN_EVENT_BROKER = None "
                "or a missing environment variable): the outbox relay does not run, and every "
                "row stays pending. Give it the broker's AMQP URL."
            )
        self.url = url
        self.policy = RetryPolicy(max_attempts, retry_delay, max_retry_delay)
        self.store = store
        self.exchange = exchange
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.max_message_size = max_message_size
        self.stats = RelayStats()
        self._sender = BatchSender(
            url, exchange, publish_timeout, max_message_size, self.policy, self.stats
        )
        self._stop = threading.Event()
        self._last_cleanup = time.monotonic()
        # For health probes (read from another thread; plain attribute writes).
        self._relaying = False
        self._batch_started: float | None = None
        self._last_batch_at: float | None = None

    # Health (see domain_event_broker.health) ----------------------------------
    #: The name a health probe reports for a batch in flight.
    health_name = "outbox relay"

    @property
    def connected(self) -> bool:
        """Whether the relay's connection to RabbitMQ is open now."""
        return self._sender.connected

    @property
    def consuming(self) -> bool:
        """Whether :meth:`run` is relaying: running, not stopping, its last attempt succeeded."""
        return self._relaying and not self._stop.is_set()

    @property
    def last_handled_at(self) -> float | None:
        """``time.time()`` when a batch of rows was last published and committed."""
        return self._last_batch_at

    @property
    def working_since(self) -> float | None:
        """``time.monotonic()`` when the batch in flight started (``None``: none in flight)."""
        return self._batch_started

    # Public API ---------------------------------------------------------------
    def relay_pending(self) -> int:
        """Send every due row (batch after batch) and return how many were sent.

        A refused event does not raise: its row is scheduled for a later
        attempt, or parked. Raises :class:`~domain_event_broker.errors.BrokerUnavailable`
        (or :class:`~domain_event_broker.errors.TopologyMismatch`) when the
        broker cannot be used at all, after marking sent the rows it confirmed;
        the others stay as they were.
        """
        sent = 0
        results: list[BatchResult] = []

        def publish(rows: Sequence[PendingEvent]) -> BatchResult:
            results.append(self._sender.send(rows))
            return results[-1]

        while not self._stop.is_set():
            started = self._batch_started = time.monotonic()
            results.clear()
            try:
                count = self.store.relay_batch(self.batch_size, publish)
            finally:
                self._batch_started = None
            self.stats.seconds += time.monotonic() - started
            for result in results:
                sent += len(result.sent)
                if result.outage is not None:
                    # The rows it could not try stay as they were; the caller backs off.
                    raise result.outage
            if count:
                self._last_batch_at = time.time()
            if count < self.batch_size:
                break
        return sent

    def run(self, *, once: bool = False, timeout: float | None = None) -> RelayStats:
        """Relay until :meth:`stop`, ``timeout`` seconds, or (``once``) nothing is pending.

        While the broker or the database is unreachable it retries with capped
        backoff and leaves every row pending. With ``once`` an error is raised
        instead, after the rows that could be sent were sent.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        outage = OutageLog(
            log,
            f"outbox relay ({self.store.description} -> {mask_url(self.url)})",
            backoff=Backoff(initial=0.5, maximum=self.max_backoff),
        )
        log.info(
            "outbox relay started: %s -> %s (batches of %d)",
            self.store.description,
            mask_url(self.url),
            self.batch_size,
        )
        try:
            while not self._stop.is_set() and not _past(deadline):
                try:
                    if not once:
                        # Connected while idle too, so that a probe sees the broker.
                        self._sender.connect()
                    self.relay_pending()
                except Exception as error:
                    self._relaying = False
                    self.stats.failed_attempts += 1
                    self._drop_database_connection()
                    if once:
                        raise
                    # Rows stay pending meanwhile; a database error gets its traceback.
                    delay = outage.failed(
                        error, traceback=not isinstance(error, DomainEventBrokerError)
                    )
                    self._stop.wait(_until(deadline, delay))
                    continue
                outage.succeeded()
                self._relaying = True
                self._delete_old_rows(force=once)
                if once:
                    break
                self._stop.wait(_until(deadline, self.poll_interval))
        finally:
            self._relaying = False
            log.info("outbox relay stopped: %s", self.stats.summary())
        return self.stats

    def stop(self) -> None:
        """Stop after the batch in flight; safe from any thread or a signal handler."""
        self._stop.set()

    def close(self) -> None:
        """Close the broker connection and this thread's database connection."""
        self._sender.close()
        self.store.close()

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Inside -------------------------------------------------------------------
    def _delete_old_rows(self, force: bool) -> None:
        if self.retention is None:
            return
        if not force and time.monotonic() - self._last_cleanup < self.cleanup_interval:
            return
        self._last_cleanup = time.monotonic()
        cutoff = datetime.now(timezone.utc) - self.retention
        try:
            deleted = self.store.delete_sent_before(cutoff)
        except Exception:
            log.exception("could not delete outbox rows sent before %s", cutoff.isoformat())
            self._drop_database_connection()
            return
        self.stats.deleted += deleted
        if deleted:
            log.info("deleted %d outbox rows sent before %s", deleted, cutoff.isoformat())

    def _drop_database_connection(self) -> None:
        # After a database error the connection may be unusable; the next
        # attempt opens a fresh one.
        try:
            self.store.close()
        except Exception:
            log.debug("closing the database connection failed", exc_info=True)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _until(deadline: float | None, seconds: float) -> float:
    if deadline is None:
        return seconds
    return max(0.0, min(seconds, deadline - time.monotonic()))


def stop_on_signals(relay: OutboxRelay) -> Callable[[], None]:
    """Make SIGTERM and SIGINT stop ``relay`` after its batch; return a function that undoes it.

    A second signal stops at once (the batch in flight stays pending).
    Only possible in the main thread; elsewhere it does nothing.
    """
    return signals.stop_on_signals(
        relay.stop,
        stopping="stopping the outbox relay after the batch in flight",
        at_once="the batch in flight stays pending",
    )


def add_relay_arguments(parser: ArgumentParser) -> None:
    """The relay's options, shared by ``relay_domain_events`` and ``domain-events-relay``."""
    parser.add_argument("--once", action="store_true", help="exit when nothing is pending")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        help="seconds between looks when nothing is pending",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=RETENTION / timedelta(days=1),
        help="delete sent rows after this many days (0: at once; -1: never)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=MAX_BACKOFF,
        help="longest pause between attempts while the broker is unreachable",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=MAX_MESSAGE_SIZE,
        help="refuse a row whose payload is larger (bytes; the broker's max_message_size)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=MAX_ATTEMPTS,
        help="park a row after the broker refused its event this many times",
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=RETRY_DELAY,
        help="seconds before a refused row is tried again (doubling each time)",
    )
    parser.add_argument(
        "--max-retry-delay",
        type=float,
        default=MAX_RETRY_DELAY,
        help="longest pause between two attempts of a refused row",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        help="serve /livez, /readyz and /healthz on this port (see domain_event_broker.health)",
    )
    parser.add_argument(
        "--stuck-after",
        type=float,
        default=STUCK_AFTER,
        help="seconds a batch may run before /livez fails",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (the [prometheus] extra): published "
        "events, confirm latency, outbox pending rows and the oldest one's age",
    )


def serve_probes(
    relay: OutboxRelay,
    *,
    health_port: int | None = None,
    metrics_port: int | None = None,
    stuck_after: float = STUCK_AFTER,
    addr: str = "0.0.0.0",
) -> Callable[[], None]:
    """Serve the relay's health probe and/or Prometheus metrics from daemon threads.

    The same port for both serves ``/metrics`` beside the probe's paths.
    Returns a function that stops serving (and takes the outbox gauges out of
    the registry). Metrics need prometheus_client (the ``[prometheus]`` extra).
    """
    stops: list[Callable[[], None]] = []
    registry = None
    if metrics_port is not None:
        from .. import prometheus

        prometheus.instrument()
        registry = prometheus.metrics_registry()
        gauges = prometheus.watch_outbox_store(relay.store, registry=registry)
        stops.append(lambda: registry.unregister(gauges))
    try:
        if health_port is not None:
            probe = HealthProbe(relay, stuck_after=stuck_after)
            served = registry if metrics_port == health_port else None
            stops.append(_stopper(probe.serve(health_port, addr, metrics=served)))
            log.info("outbox relay health probe on port %d", health_port)
        if metrics_port is not None and metrics_port != health_port:
            from .. import prometheus

            stops.append(_stopper(prometheus.serve_metrics(metrics_port, addr, registry)))
        if metrics_port is not None:
            log.info("outbox relay metrics on port %d (/metrics)", metrics_port)
    except BaseException:
        _stop_all(stops)
        raise
    return lambda: _stop_all(stops)


def serve_probes_from(relay: OutboxRelay, parsed: Mapping[str, Any]) -> Callable[[], None]:
    """:func:`serve_probes` with options parsed by :func:`add_relay_arguments`."""
    return serve_probes(
        relay,
        health_port=parsed.get("health_port"),
        metrics_port=parsed.get("metrics_port"),
        stuck_after=parsed.get("stuck_after") or STUCK_AFTER,
    )


def _stopper(server: Any) -> Callable[[], None]:
    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop


def _stop_all(stops: Sequence[Callable[[], None]]) -> None:
    for stop in reversed(stops):
        try:
            stop()
        except Exception:
            log.debug("stopping a probe server failed", exc_info=True)


def relay_options(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`OutboxRelay` keyword arguments from options parsed by :func:`add_relay_arguments`."""
    days = parsed["retention_days"]
    return {
        "batch_size": parsed["batch_size"],
        "poll_interval": parsed["poll_interval"],
        "retention": None if days < 0 else timedelta(days=days),
        "max_backoff": parsed["max_backoff"],
        "max_message_size": parsed["max_message_size"],
        "max_attempts": parsed["max_attempts"],
        "retry_delay": parsed["retry_delay"],
        "max_retry_delay": parsed["max_retry_delay"],
    }
