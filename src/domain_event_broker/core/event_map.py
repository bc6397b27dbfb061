"""Who publishes and who listens: the event map of a vhost, from what the broker lists.

The console draws it. Subscribers are :func:`~.inventory.subscribers` (queues
bound to the events exchange, with their dead-letter and wait queues); a
*service* is what our connections send as the client property ``service``;
a service publishes when one of its connections is a publisher's, and listens
to a subscriber when one of its connections consumes from the subscriber's
queue. No I/O: the console reads the management API and passes the records in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .inventory import SubscriberSummary

#: A connection that is not ours (no ``service`` property), shown by its client name.
UNNAMED_SERVICE = "(not named)"


@dataclass(frozen=True)
class ConnectionRecord:
    """A client connection as the broker lists it."""

    name: str
    #: Its client property ``service`` (empty: not one of ours, or an older release).
    service: str
    #: What it is for: publisher, subscriber, asyncio publisher, ... (empty: unknown).
    role: str
    #: The client's product, e.g. "domain-event-broker" or "pika".
    product: str = ""


@dataclass(frozen=True)
class ConsumerRecord:
    queue: str
    connection: str


@dataclass(frozen=True)
class MapSubscriber:
    """A subscriber on the map: where its events are, who consumes them, how fast."""

    summary: SubscriberSummary
    #: Services consuming from its queue.
    services: tuple[str, ...]
    #: Events a second into its queue, and delivered from it (the broker's rates).
    rate_in: float
    rate_out: float


@dataclass(frozen=True)
class EventMap:
    exchange: str
    #: Services publishing events, by name.
    publishers: tuple[str, ...]
    subscribers: tuple[MapSubscriber, ...]


def publishes(connection: ConnectionRecord) -> bool:
    return connection.role.endswith("publisher")


def service_of(connection: ConnectionRecord) -> str:
    return connection.service or UNNAMED_SERVICE


def event_map(
    exchange: str,
    summaries: Iterable[SubscriberSummary],
    connections: Iterable[ConnectionRecord],
    consumers: Iterable[ConsumerRecord],
    rates: Mapping[str, tuple[float, float]],
) -> EventMap:
    """The map of ``exchange``: ``rates`` maps a queue to (in, out) events a second."""
    by_name = {connection.name: connection for connection in connections}
    publishers = sorted({service_of(c) for c in by_name.values() if publishes(c)})
    listening: dict[str, set[str]] = {}
    for consumer in consumers:
        connection = by_name.get(consumer.connection)
        service = service_of(connection) if connection is not None else UNNAMED_SERVICE
        listening.setdefault(consumer.queue, set()).add(service)
    subscribers = tuple(
        MapSubscriber(
            summary,
            tuple(sorted(listening.get(summary.name, ()))),
            *rates.get(summary.name, (0.0, 0.0)),
        )
        for summary in sorted(summaries, key=lambda summary: summary.name)
    )
    return EventMap(exchange, tuple(publishers), subscribers)
