"""Ordered subscribers and the archive among what a broker lists, for the event map.

An ordered subscriber ``N`` has no queue of its own: the events exchange is bound
to its hash exchange, which is bound to its partition queues (see
:mod:`.partitions`); the archive is a stream bound with ``#`` (see :mod:`.archive`).
Both are recognised by reading names back with the functions that made them.
No I/O: the console reads the management API and passes the records in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .archive import archive_name, archive_retention
from .inventory import BindingRecord, QueueRecord, SubscriberSummary
from .partitions import partition_index, partitioned_subscriber
from .topology import DEFAULT_EXCHANGE, dead_letter_queue_name


@dataclass(frozen=True)
class ExchangeBindingRecord:
    """A binding whose destination is an exchange, as RabbitMQ lists it."""

    source: str
    destination: str
    routing_key: str


@dataclass(frozen=True)
class OrderedSubscriber:
    """An ordered subscriber: its figures summed over its partitions, and each partition."""

    summary: SubscriberSummary
    #: Its partition queues, the first first.
    partitions: tuple[QueueRecord, ...]


@dataclass(frozen=True)
class ArchiveSummary:
    """The archive stream of the events exchange: events kept and its retention."""

    name: str
    events: int
    #: As declared (``7D``); None: no limit by age.
    max_age: str | None
    #: None: no limit by size.
    max_bytes: int | None


def ordered_subscribers(
    queues: Iterable[QueueRecord],
    bindings: Iterable[BindingRecord],
    exchange_bindings: Iterable[ExchangeBindingRecord],
    events_exchange: str = DEFAULT_EXCHANGE,
) -> list[OrderedSubscriber]:
    """The ordered subscribers of ``events_exchange``, by name: those whose hash exchange it
    is bound to, with the partition queues that hash exchange is bound to."""
    by_name = {queue.name: queue for queue in queues}
    keys: dict[str, set[str]] = {}
    for exchange_binding in exchange_bindings:
        subscriber = partitioned_subscriber(exchange_binding.destination)
        if exchange_binding.source == events_exchange and subscriber is not None:
            keys.setdefault(subscriber, set()).add(exchange_binding.routing_key)
    partitions: dict[str, dict[int, QueueRecord]] = {}
    for binding in bindings:
        subscriber = partitioned_subscriber(binding.source)
        if subscriber not in keys or binding.queue not in by_name:
            continue
        index = partition_index(subscriber, binding.queue)
        if index is not None:
            partitions.setdefault(subscriber, {})[index] = by_name[binding.queue]
    found = []
    for name in sorted(keys):
        own = tuple(queue for _, queue in sorted(partitions.get(name, {}).items()))
        dead = by_name.get(dead_letter_queue_name(name))
        summary = SubscriberSummary(
            name=name,
            binding_keys=tuple(sorted(keys[name])),
            consumers=sum(queue.consumers for queue in own),
            waiting=sum(queue.ready for queue in own),
            unacked=sum(queue.unacked for queue in own),
            dead_letters=None if dead is None else dead.ready + dead.unacked,
            retries_waiting=0,  # an ordered subscriber holds its retries unacked, in memory
        )
        found.append(OrderedSubscriber(summary, own))
    return found


def archive_of(
    events_exchange: str,
    queues: Iterable[QueueRecord],
    arguments: Mapping[str, Mapping[str, Any]],
) -> ArchiveSummary | None:
    """The archive of ``events_exchange`` if there is one; ``arguments``: each queue's
    declared arguments, by name (the retention is the archive's)."""
    name = archive_name(events_exchange)
    for queue in queues:
        if queue.name == name:
            max_age, max_bytes = archive_retention(arguments.get(name, {}))
            return ArchiveSummary(name, queue.ready + queue.unacked, max_age, max_bytes)
    return None
