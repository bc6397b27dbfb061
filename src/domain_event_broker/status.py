"""How a subscriber is doing, read from the broker: backlog, consumers, dead letters."""

from __future__ import annotations

from dataclasses import dataclass

import pika.exceptions

from .connection import connect_blocking
from .core.partitions import MAX_PARTITIONS, PartitionState, partition_queue_names, partition_state
from .management import ManagementAPI
from .settings import BrokerSettings, ConnectionSettings, resolve_url
from .topology import dead_letter_queue_name


@dataclass(frozen=True)
class SubscriberStatus:
    """A subscriber's queues as RabbitMQ sees them (``None``: the queue does not exist)."""

    name: str
    waiting: int | None
    consumers: int | None
    dead_letters: int | None
    #: Partition queues of a subscriber ordered by domain object (0: one queue).
    partitions: int = 0


def subscriber_status(name: str, connection_settings: ConnectionSettings = "") -> SubscriberStatus:
    """Backlog, consumer count and dead-letter count of subscriber ``name``.

    >>> subscriber_status("welcome-mailer")  # doctest: +SKIP
    SubscriberStatus(name='welcome-mailer', waiting=0, consumers=2, dead_letters=1)
    """
    url = resolve_url(connection_settings)
    if url is None:
        return SubscriberStatus(name, None, None, None)
    connection = connect_blocking(url, "status")
    try:
        waiting, consumers = queue_counts(connection, name)
        dead_letters, _ = queue_counts(connection, dead_letter_queue_name(name))
        if waiting is not None:
            return SubscriberStatus(name, waiting, consumers, dead_letters)
        # An ordered subscriber: its events wait in its partitions, which each process consumes.
        counts = []
        for queue in partition_queue_names(name, MAX_PARTITIONS):
            ready, partition_consumers = queue_counts(connection, queue)
            if ready is None:
                break
            counts.append((ready, partition_consumers or 0))
        if not counts:
            return SubscriberStatus(name, None, None, dead_letters)
        ready_total = sum(ready for ready, _ in counts)
        most = max(partition_consumers for _, partition_consumers in counts)
        return SubscriberStatus(name, ready_total, most, dead_letters, len(counts))
    finally:
        if connection.is_open:
            connection.close()


def queue_counts(connection: pika.BlockingConnection, queue: str) -> tuple[int | None, int | None]:
    """(ready events, consumers) of ``queue`` now; (None, None) when it does not exist."""
    # A passive declare of a missing queue closes the channel: one channel per look.
    channel = connection.channel()
    try:
        method = channel.queue_declare(queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 404:
            return None, None
        raise
    channel.close()
    return int(method.message_count), int(method.consumer_count)


def partition_states(
    name: str, partitions: int, url: BrokerSettings, management_url: str | None = None
) -> list[PartitionState]:
    """Each partition of ordered subscriber ``name``: depth, consumers, the active connection
    (from the management API: AMQP does not say which consumer is active)."""
    api = ManagementAPI(url, management_url)
    names = api.connection_names()
    return [
        partition_state(api.queue(queue), names)
        for queue in partition_queue_names(name, partitions)
    ]
