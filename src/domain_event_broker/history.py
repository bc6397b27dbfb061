"""The event archive: a stream bound to the events exchange, kept for a retention period.

>>> enable_archive(max_age="30D")  # doctest: +SKIP
>>> archive_status()  # doctest: +SKIP
ArchiveStatus(name='domain-events-archive', events=2000, ...)

Every event published to the exchange after :func:`enable_archive` is kept in
the stream ``<exchange>-archive`` (bound with ``#``) until it is older than
``max_age`` (or the stream outgrows ``max_bytes``). A subscriber registered
with ``start_from`` reads it (see :mod:`domain_event_broker.core.history`);
``domain-events history show`` browses it and ``history replay`` re-feeds a
window of it to one subscriber.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ._pika import close_stream_channel
from .connection import as_broker, connect_blocking
from .core.acks import StreamAcks
from .core.archive import (
    archive_arguments,
    archive_name,
    archive_retention,
    marker_in,
    parse_max_age,
    stream_offset_in,
)
from .core.history import (
    FIRST,
)
from .errors import DomainEventBrokerError, InvalidEvent
from .events import DomainEvent
from .management import ManagementAPI
from .settings import ConnectionSettings
from .topology import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_TYPE

log = logging.getLogger(__name__)

#: Seconds without a new message after which a read of the archive takes it as read to its end.
QUIET_END = 1.0
#: The same, to find the archive's ends (a stream sends the chunk asked for at once).
SPAN_QUIET = 0.3
#: Deliveries of the archive outstanding at once (a stream needs a prefetch). RabbitMQ
#: sends a stream's messages a chunk at a time: a credit of a few chunks, topped up a
#: quarter at a time, keeps it sending. Measured (10,000 events, 5 rounds, RabbitMQ 3.10):
#: at 2000 and 5000 the read stalled in some rounds (9,000 to 22,000 events/s, bimodal); at
#: 8000 every round ran 24,000 to 31,000/s, above the 17,000/s of a live queue. The price is
#: memory: up to this many events held while history is read (8 MB of 1 KB events).
ARCHIVE_PREFETCH = 8000


class ArchiveUnavailable(DomainEventBrokerError):
    """No archive where one is needed, or a broker (or vhost) that cannot keep one."""


@dataclass(frozen=True)
class ArchiveStatus:
    """What ``domain-events archive status`` shows."""

    name: str
    #: Messages the stream holds now (events and the few hand-over markers), from its offsets.
    events: int
    #: The timestamp of the oldest event still kept (None: the archive is empty).
    oldest: datetime | None
    max_age: str | None
    max_bytes: int | None


@dataclass(frozen=True)
class Archived:
    """One message read from the archive."""

    offset: int
    routing_key: str
    headers: dict[str, Any]
    body: bytes

    @property
    def event(self) -> DomainEvent | None:
        """The event, or None for a marker or a body that is no event."""
        if marker_in(self.headers) is not None:
            return None
        try:
            return DomainEvent.from_json(self.body)
        except InvalidEvent:
            return None


def enable_archive(
    connection_settings: ConnectionSettings = "",
    exchange: str = DEFAULT_EXCHANGE,
    max_age: str = "7D",
    max_bytes: int | None = None,
) -> ArchiveStatus:
    """Keep every event published to ``exchange`` from now on, for ``max_age`` (``7D``, ``12h``).

    Idempotent with the same retention; a different one is refused by the
    broker (disable and enable again, losing what was kept).
    """
    arguments = archive_arguments(parse_max_age(max_age), max_bytes)
    name = archive_name(exchange)
    connection = connect_blocking(connection_settings, "archive")
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, DEFAULT_EXCHANGE_TYPE, durable=True)
        try:
            channel.queue_declare(name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as error:
            raise ArchiveUnavailable(_declare_refused(name, error)) from None
        channel.queue_bind(name, exchange, "#")
        log.info("archive %s enabled on %s (max age %s)", name, exchange, max_age)
        return _status(connection, exchange, (max_age, max_bytes))
    finally:
        _close(connection)


def disable_archive(
    connection_settings: ConnectionSettings = "", exchange: str = DEFAULT_EXCHANGE
) -> int:
    """Delete the archive of ``exchange`` and every event in it; return how many were kept."""
    name = archive_name(exchange)
    connection = connect_blocking(connection_settings, "archive")
    try:
        require_archive(connection, exchange)
        span = archive_span(connection, exchange)
        kept = 0 if span is None else span[1] - span[0] + 1
        connection.channel().queue_delete(name)
        log.info("archive %s deleted with %d messages", name, kept)
        return kept
    finally:
        _close(connection)


def archive_status(
    connection_settings: ConnectionSettings = "", exchange: str = DEFAULT_EXCHANGE
) -> ArchiveStatus:
    """Size, oldest event and retention of the archive of ``exchange``."""
    retention = _retention(connection_settings, archive_name(exchange))
    connection = connect_blocking(connection_settings, "archive")
    try:
        return _status(connection, exchange, retention)
    finally:
        _close(connection)


def require_archive(connection: BlockingConnection, exchange: str) -> int:
    """The number of messages in the archive of ``exchange``; a clear error when there is none."""
    channel = connection.channel()
    try:
        method = channel.queue_declare(archive_name(exchange), passive=True).method
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 404:
            raise ArchiveUnavailable(not_enabled(exchange)) from None
        raise
    channel.close()
    return int(method.message_count)


def not_enabled(exchange: str) -> str:
    return (
        f"the exchange {exchange!r} has no archive ({archive_name(exchange)!r}): turn it on "
        f"with `domain-events archive enable --exchange {exchange}` (or enable_archive()); it "
        "keeps events published from then on"
    )


def _declare_refused(name: str, error: pika.exceptions.ChannelClosedByBroker) -> str:
    if error.reply_code == 406:
        return (
            f"the broker refused the archive {name!r}: {error.reply_text}. A queue of that name "
            "with other arguments exists (disable the archive and enable it again), or this "
            "broker has no streams (RabbitMQ 3.9 or later with the feature flag "
            "stream_queue enabled)"
        )
    return f"the broker refused the archive {name!r}: {error.reply_text}"


def _status(
    connection: BlockingConnection, exchange: str, retention: tuple[str | None, int | None]
) -> ArchiveStatus:
    require_archive(connection, exchange)
    name = archive_name(exchange)
    span = archive_span(connection, exchange)
    events = 0 if span is None else span[1] - span[0] + 1
    oldest = None
    for archived in read_archive(connection, name, FIRST, quiet_end=SPAN_QUIET):
        event = archived.event
        if event is not None:
            oldest = datetime.fromtimestamp(event.timestamp, timezone.utc)
            break
    return ArchiveStatus(name, events, oldest, *retention)


def _retention(url: ConnectionSettings, name: str) -> tuple[str | None, int | None]:
    """The stream's retention, from the management API (AMQP cannot read arguments back)."""
    return archive_retention(ManagementAPI(as_broker(url)).queue_arguments(name))


def read_archive(
    connection: BlockingConnection,
    name: str,
    offset: str | int | datetime,
    quiet_end: float = QUIET_END,
) -> Generator[Archived, None, None]:
    """The archive's messages from ``offset`` on, until none came for ``quiet_end`` seconds.

    Nothing is consumed: a stream keeps its messages whoever reads them. (No
    nack ever: a stream refuses one by closing the connection.)
    """
    channel = connection.channel()
    channel.basic_qos(prefetch_count=ARCHIVE_PREFETCH)
    acks = StreamAcks.for_prefetch(ARCHIVE_PREFETCH)
    received: deque[tuple[int, Archived]] = deque()

    def on_message(
        _channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        headers = dict(properties.headers or {})
        acks.delivered(method.delivery_tag)
        offset = stream_offset_in(headers)
        received.append(
            (method.delivery_tag, Archived(offset, str(method.routing_key), headers, body))
        )

    try:
        channel.basic_consume(name, on_message, arguments={"x-stream-offset": offset})
        while True:
            if not received:
                connection.process_data_events(time_limit=quiet_end)
                if not received:
                    return
            tag, archived = received.popleft()
            acks.done(tag)
            due = acks.take()
            if due is not None:
                channel.basic_ack(due, multiple=True)
            yield archived
    finally:
        close_stream_channel(channel)


def archive_span(connection: BlockingConnection, exchange: str) -> tuple[int, int] | None:
    """(first, last) offset the archive of ``exchange`` holds now; None when it is empty.

    A stream's message count (passive declare) lags by seconds; its offsets do not.
    """
    name = archive_name(exchange)
    first = next(read_archive(connection, name, FIRST, quiet_end=SPAN_QUIET), None)
    if first is None:
        return None
    last = first.offset
    for archived in read_archive(connection, name, "last", quiet_end=SPAN_QUIET):
        last = max(last, archived.offset)
    return first.offset, last


def _close(connection: BlockingConnection) -> None:
    if connection.is_open:
        connection.close()


__all__ = [
    "ArchiveStatus",
    "ArchiveUnavailable",
    "archive_status",
    "disable_archive",
    "enable_archive",
    "read_archive",
]
