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
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from ..core.defaults import OUTBOX_MAX_RETRY_DELAY, OUTBOX_PUBLISH_TIMEOUT, OUTBOX_RETRY_DELAY
from ..core.supervisor import Backoff, OutageLog, Supervisor
from ..core.topology import DEFAULT_EXCHANGE
from ..errors import DomainEventBrokerError, NoBroker
from ..settings import ConnectionSettings, mask_url, resolve_url
from ..signals import StopFlag
from .attempts import (
    MAX_ATTEMPTS,
    BatchResult,
    RetryPolicy,
)
from .sending import BatchSender
from .stats import RelayStats
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
#: Longest pause between attempts while the broker or the database is unreachable.
MAX_BACKOFF = 30.0
#: Largest payload sent, in bytes: RabbitMQ's ``max_message_size`` default on 3.x
#: (4.x defaults to 16 MiB: set it to match). A larger row is parked at once without
#: being sent (a row over the broker's own limit is parked once the broker refused it).
MAX_MESSAGE_SIZE = 128 * 1024 * 1024


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
        publish_timeout: float = OUTBOX_PUBLISH_TIMEOUT,
        max_backoff: float = MAX_BACKOFF,
        max_message_size: int = MAX_MESSAGE_SIZE,
        max_attempts: int = MAX_ATTEMPTS,
        retry_delay: float = OUTBOX_RETRY_DELAY,
        max_retry_delay: float = OUTBOX_MAX_RETRY_DELAY,
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
        # A plain flag, not a threading.Event: a SIGTERM handler sets it on the main
        # thread, which may be inside Event.wait()'s locked section (a deadlock).
        self._stop = StopFlag()
        self._sender = BatchSender(
            url,
            exchange,
            publish_timeout,
            max_message_size,
            self.policy,
            self.stats,
            while_blocked=self._not_stopping,
        )
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
        return self._relaying and not self._stop.requested

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

        while not self._stop.requested:
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
        supervisor = Supervisor(
            OutageLog(
                log,
                f"outbox relay ({self.store.description} -> {mask_url(self.url)})",
                backoff=Backoff(initial=0.5, maximum=self.max_backoff),
            ),
            stable_after=0.0,  # every batch that went through starts the backoff afresh
        )
        log.info(
            "outbox relay started: %s -> %s (batches of %d)",
            self.store.description,
            mask_url(self.url),
            self.batch_size,
        )
        try:
            while not self._stop.requested and not _past(deadline):
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
                    delay = supervisor.lost(
                        error, traceback=not isinstance(error, DomainEventBrokerError)
                    )
                    self._stop.sleep(_until(deadline, delay))
                    continue
                supervisor.connected()
                self._relaying = True
                self._delete_old_rows(force=once)
                if once:
                    break
                self._stop.sleep(_until(deadline, self.poll_interval))
        finally:
            self._relaying = False
            log.info("outbox relay stopped: %s", self.stats.summary())
        return self.stats

    def stop(self) -> None:
        """Stop after the batch in flight; safe from any thread or a signal handler.

        Takes no lock: it sets a flag that the relay looks at within a tenth of a second.
        """
        self._stop.request_from_signal()

    def _not_stopping(self) -> bool:
        return not self._stop.requested

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
