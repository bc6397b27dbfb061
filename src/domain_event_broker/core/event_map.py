"""Who publishes and who listens: the event map of a vhost, from what the broker lists.

The console draws it. Subscribers are :func:`~.inventory.subscribers` (queues
bound to the events exchange, with their dead-letter and wait queues) and
:func:`~.ordered_inventory.ordered_subscribers` (one each, over its partitions); a
*service* is what our connections send as the client property ``service``;
a service publishes when one of its connections is a publisher's, and listens
to a subscriber when one of its connections consumes from the subscriber's
queue. No I/O: the console reads the management API and passes the records in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..events import topic_matches
from .inventory import SubscriberSummary
from .ordered_inventory import ArchiveSummary, OrderedSubscriber

#: A connection that is not ours (no ``service`` property), shown by its client name.
UNNAMED_SERVICE = "(not named)"
#: Queues the broker named (temporary ones: ``domain-events listen``, the console's own).
SERVER_NAMED_PREFIX = "amq.gen-"
#: Seconds a routing key stays on the map after it was last seen.
KEYS_SEEN_WINDOW = 300.0
#: Distinct routing keys remembered at most (the least recently seen go first).
KEYS_SEEN_MAX = 1000


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
    #: False for a single active consumer's waiting ones (they get no deliveries).
    active: bool = True


@dataclass(frozen=True)
class MapPartition:
    """A partition of an ordered subscriber, and where its active consumer is."""

    queue: str
    waiting: int
    unacked: int
    consumers: int
    #: The service and the connection of its active consumer ("": none active).
    active_service: str
    active_connection: str


@dataclass(frozen=True)
class MapSubscriber:
    """A subscriber on the map: where its events are, who consumes them, how fast."""

    summary: SubscriberSummary
    #: Services consuming from its queue.
    services: tuple[str, ...]
    #: Events a second into its queue, and delivered from it (the broker's rates).
    rate_in: float
    rate_out: float
    #: An ordered subscriber's partitions (empty: one queue, not ordered).
    partitions: tuple[MapPartition, ...] = ()


@dataclass(frozen=True)
class SeenKey:
    """A routing key seen on recent events, and the subscribers its events reach."""

    routing_key: str
    count: int
    last_seen: float
    subscribers: tuple[str, ...]


@dataclass(frozen=True)
class EventMap:
    exchange: str
    #: Services publishing events, by name.
    publishers: tuple[str, ...]
    subscribers: tuple[MapSubscriber, ...]
    #: Routing keys seen recently, most frequent first (empty: none watched).
    routing_keys: tuple[SeenKey, ...] = ()
    #: The exchange's archive (None: it has none).
    archive: ArchiveSummary | None = None
    #: Events a second each publishing service publishes (over all its connections).
    publish_rates: Mapping[str, float] = field(default_factory=dict)


class KeyTally:
    """How often each routing key was seen lately; times are passed in (no clock here).

    >>> tally = KeyTally(window=60.0)
    >>> tally.add("order.placed", now=0.0); tally.add("order.placed", now=10.0)
    >>> tally.recent(now=30.0)
    [('order.placed', 2, 10.0)]
    >>> tally.recent(now=100.0)
    []
    """

    def __init__(self, window: float = KEYS_SEEN_WINDOW, limit: int = KEYS_SEEN_MAX) -> None:
        self.window = window
        self.limit = limit
        self._seen: dict[str, tuple[int, float]] = {}

    def add(self, routing_key: str, now: float) -> None:
        count, last = self._seen.pop(routing_key, (0, now))
        if now - last > self.window:
            count = 0  # seen again after a quiet spell: count afresh
        self._seen[routing_key] = (count + 1, now)  # the most recent last
        if len(self._seen) > self.limit:
            del self._seen[next(iter(self._seen))]

    def recent(self, now: float) -> list[tuple[str, int, float]]:
        """(key, count, last seen) of the keys seen within the window, most frequent first."""
        kept = [
            (key, count, last)
            for key, (count, last) in self._seen.items()
            if now - last <= self.window
        ]
        return sorted(kept, key=lambda seen: (-seen[1], seen[0]))


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
    keys_seen: Iterable[tuple[str, int, float]] = (),
    ordered: Iterable[OrderedSubscriber] = (),
    archive: ArchiveSummary | None = None,
    publish_rates: Mapping[str, float] | None = None,
) -> EventMap:
    """The map of ``exchange``: ``rates`` maps a queue to (in, out) events a second;
    ``keys_seen`` are :meth:`KeyTally.recent`'s; ``ordered`` subscribers are drawn as one
    subscriber each, their figures summed over their partitions; ``publish_rates``: events
    a second published on each connection, by its name."""
    by_name = {connection.name: connection for connection in connections}
    publishers = sorted({service_of(c) for c in by_name.values() if publishes(c)})
    service_rates = dict.fromkeys(publishers, 0.0)
    for publishing in by_name.values():
        if publishes(publishing):
            rate = (publish_rates or {}).get(publishing.name, 0.0)
            service_rates[service_of(publishing)] += rate
    listening: dict[str, set[str]] = {}
    active: dict[str, tuple[str, str]] = {}
    for consumer in consumers:
        connection = by_name.get(consumer.connection)
        service = service_of(connection) if connection is not None else UNNAMED_SERVICE
        listening.setdefault(consumer.queue, set()).add(service)
        if consumer.active:
            active.setdefault(consumer.queue, (service, consumer.connection))
    drawn = [
        MapSubscriber(
            summary,
            tuple(sorted(listening.get(summary.name, ()))),
            *rates.get(summary.name, (0.0, 0.0)),
        )
        for summary in summaries
        if not summary.name.startswith(SERVER_NAMED_PREFIX)
    ]
    for subscriber in ordered:
        queues = [queue.name for queue in subscriber.partitions]
        drawn.append(
            MapSubscriber(
                subscriber.summary,
                tuple(sorted(set().union(*(listening.get(queue, ()) for queue in queues)))),
                sum(rates.get(queue, (0.0, 0.0))[0] for queue in queues),
                sum(rates.get(queue, (0.0, 0.0))[1] for queue in queues),
                tuple(
                    MapPartition(
                        queue.name,
                        queue.ready,
                        queue.unacked,
                        queue.consumers,
                        *active.get(queue.name, ("", "")),
                    )
                    for queue in subscriber.partitions
                ),
            )
        )
    subscribers = tuple(sorted(drawn, key=lambda subscriber: subscriber.summary.name))
    routing_keys = tuple(
        SeenKey(
            key,
            count,
            last,
            tuple(
                shown.summary.name
                for shown in subscribers
                if any(topic_matches(binding, key) for binding in shown.summary.binding_keys)
            ),
        )
        for key, count, last in keys_seen
    )
    return EventMap(exchange, tuple(publishers), subscribers, routing_keys, archive, service_rates)
