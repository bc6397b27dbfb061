"""The outbox relay: publish pending outbox rows in order, with confirms, then mark them sent.

Written once for every framework; a store (Django, SQLAlchemy) supplies the
database side. Several relays may run at once: each locks the rows it sends
with ``SELECT ... FOR UPDATE SKIP LOCKED``, so in the normal case no row is
sent twice. A relay that dies after the broker confirmed a batch but before
its transaction committed leaves those rows pending, and they are sent again:
delivery is at least once, and handlers should be idempotent (see the inbox
helpers).
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
from ..errors import DomainEventBrokerError
from ..publisher import Publisher
from ..settings import mask_url, resolve_url
from ..topology import DEFAULT_EXCHANGE
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


@dataclass
class RelayStats:
    """What a relay did, for logs, the commands' last line and benchmarks."""

    relayed: int = 0
    batches: int = 0
    failed_attempts: int = 0
    deleted: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.relayed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"relayed {self.relayed} events in {self.batches} batches in {self.seconds:.1f} s "
            f"({self.events_per_second:.0f} events/s); {self.failed_attempts} failed attempts, "
            f"{self.deleted} old sent rows deleted"
        )


class OutboxRelay:
    """Moves events from an outbox table to RabbitMQ.

    >>> relay = OutboxRelay(store, "amqp://guest:guest@localhost/%2F")  # doctest: +SKIP
    >>> relay.run()            # until stop() or SIGTERM  # doctest: +SKIP
    >>> relay.run(once=True)   # until nothing is pending  # doctest: +SKIP

    ``connection_settings``: an AMQP URL, ``''`` for ``settings.BROKER``. With
    ``None`` (no broker) rows are marked sent without being published, as
    ``publish_domain_event`` does nothing then.
    """

    def __init__(
        self,
        store: OutboxStore,
        connection_settings: str | None = "",
        *,
        exchange: str = DEFAULT_EXCHANGE,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
        retention: timedelta | None = RETENTION,
        cleanup_interval: float = CLEANUP_INTERVAL,
        publish_timeout: float = PUBLISH_TIMEOUT,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.store = store
        self.url = resolve_url(connection_settings)
        self.exchange = exchange
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.stats = RelayStats()
        self._publisher: Publisher | None = None
        self._stop = threading.Event()
        self._last_cleanup = time.monotonic()

    # Public API ---------------------------------------------------------------
    def relay_pending(self) -> int:
        """Send every pending row (batch after batch) and return how many were sent.

        Raises :class:`~domain_event_broker.errors.BrokerUnavailable` or
        :class:`~domain_event_broker.errors.PublishError` when the broker
        does not confirm a batch; that batch stays pending.
        """
        sent = 0
        while not self._stop.is_set():
            started = time.monotonic()
            count = self.store.relay_batch(self.batch_size, self._publish)
            self.stats.seconds += time.monotonic() - started
            sent += count
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
        backoff = Backoff(initial=0.5, maximum=self.max_backoff)
        outage_logged = False
        log.info(
            "outbox relay started: %s -> %s (batches of %d)",
            self.store.description,
            mask_url(self.url),
            self.batch_size,
        )
        try:
            while not self._stop.is_set() and not _past(deadline):
                try:
                    self.relay_pending()
                except Exception as error:
                    self.stats.failed_attempts += 1
                    self._drop_database_connection()
                    if once:
                        raise
                    delay = backoff.next_delay()
                    if not outage_logged:
                        _log_outage(error, self.store.description, delay)
                        outage_logged = True
                    else:
                        log.debug("relay attempt failed again (%s); next in %.1f s", error, delay)
                    self._stop.wait(_until(deadline, delay))
                    continue
                if outage_logged:
                    log.info(
                        "outbox relay working again after %d failed attempts",
                        self.stats.failed_attempts,
                    )
                    outage_logged = False
                backoff.reset()
                self._delete_old_rows(force=once)
                if once:
                    break
                self._stop.wait(_until(deadline, self.poll_interval))
        finally:
            log.info("outbox relay stopped: %s", self.stats.summary())
        return self.stats

    def stop(self) -> None:
        """Stop after the batch in flight; safe from any thread or a signal handler."""
        self._stop.set()

    def close(self) -> None:
        """Close the broker connection and this thread's database connection."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.disconnect()
        self.store.close()

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Inside -------------------------------------------------------------------
    def _publish(self, rows: Sequence[PendingEvent]) -> None:
        events = [row.event() for row in rows]
        if self.url is not None:
            if self._publisher is None:
                self._publisher = Publisher(
                    self.url, self.exchange, publish_timeout=self.publish_timeout
                )
            self._publisher.publish_many(events)
        self.stats.relayed += len(rows)
        self.stats.batches += 1
        if log.isEnabledFor(logging.DEBUG):
            for row, event in zip(rows, events, strict=True):
                log.debug(
                    "relayed outbox row %d: event %s (%s)",
                    row.id,
                    event.uuid_string,
                    event.routing_key,
                )

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


def _log_outage(error: Exception, where: str, delay: float) -> None:
    if isinstance(error, DomainEventBrokerError):
        log.warning(
            "cannot publish outbox events: %s; rows stay pending, retrying with backoff "
            "(next in %.1f s)",
            error,
            delay,
        )
    else:
        log.exception(
            "outbox relay failed on %s; rows stay pending, retrying with backoff (next in %.1f s)",
            where,
            delay,
        )


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


def relay_options(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`OutboxRelay` keyword arguments from options parsed by :func:`add_relay_arguments`."""
    days = parsed["retention_days"]
    return {
        "batch_size": parsed["batch_size"],
        "poll_interval": parsed["poll_interval"],
        "retention": None if days < 0 else timedelta(days=days),
        "max_backoff": parsed["max_backoff"],
    }
