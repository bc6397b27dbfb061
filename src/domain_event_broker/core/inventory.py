"""Which subscribers a broker holds, and which queues and exchanges are each one's.

From what RabbitMQ lists (queues, exchanges, bindings; the management API gives
them), with no I/O: ``domain-events subscribers`` shows the summaries,
``domain-events delete NAME`` removes what :func:`belonging_to` names.

A subscriber is a queue bound to the events exchange. Its own are the queue
``N``, the dead-letter queue ``N-dl``, the wait queues ``N-wait-<ms>`` (and
3.x's ``N-delay-<ms>``, queue and exchange), and the exchanges ``N-dlx`` and
``N-retry``; while a hand-over from history is under way, ``N-history`` and
``N-history-lock``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from .archive import archive_name, lock_queue_name, progress_queue_name
from .partitions import is_partition_queue, partitions_exchange_name
from .spread import members_exchange_name
from .topology import (
    DEFAULT_EXCHANGE,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    legacy_wait_queue_prefix,
    retry_exchange_name,
    wait_queue_prefix,
)


@dataclass(frozen=True)
class QueueRecord:
    """A queue as RabbitMQ lists it."""

    name: str
    ready: int
    unacked: int
    consumers: int


@dataclass(frozen=True)
class BindingRecord:
    """A binding as RabbitMQ lists it (queues as destinations only)."""

    source: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class SubscriberSummary:
    """One subscriber: its keys, consumers and where its events are."""

    name: str
    binding_keys: tuple[str, ...]
    consumers: int
    #: Events in its queue not delivered yet, and delivered but not acked yet.
    waiting: int
    unacked: int
    #: Events in its dead-letter queue (None: it has none).
    dead_letters: int | None
    #: Copies waiting in its wait queues for their retry.
    retries_waiting: int


@dataclass(frozen=True)
class Belongings:
    """What a subscriber has on the broker, and how many events are in it."""

    queues: tuple[str, ...]
    exchanges: tuple[str, ...]
    events: int


def subscribers(
    queues: Iterable[QueueRecord],
    bindings: Iterable[BindingRecord],
    events_exchange: str = DEFAULT_EXCHANGE,
) -> list[SubscriberSummary]:
    """The subscribers among ``queues``: those bound to ``events_exchange``, by name."""
    by_name = {queue.name: queue for queue in queues}
    keys: dict[str, list[str]] = {}
    for binding in bindings:
        if binding.queue == archive_name(events_exchange):
            continue  # the archive stream: no subscriber
        if binding.source == events_exchange and binding.queue in by_name:
            keys.setdefault(binding.queue, []).append(binding.routing_key)
    summaries = []
    for name in sorted(keys):
        queue = by_name[name]
        dead = by_name.get(dead_letter_queue_name(name))
        summaries.append(
            SubscriberSummary(
                name=name,
                binding_keys=tuple(sorted(set(keys[name]))),
                consumers=queue.consumers,
                waiting=queue.ready,
                unacked=queue.unacked,
                dead_letters=None if dead is None else dead.ready + dead.unacked,
                retries_waiting=sum(
                    record.ready + record.unacked
                    for record in by_name.values()
                    if _is_wait_queue(name, record.name)
                ),
            )
        )
    return summaries


def belonging_to(
    name: str,
    queues: Sequence[QueueRecord],
    exchanges: Iterable[str],
    other_subscribers: Collection[str] = (),
) -> Belongings:
    """The queues and exchanges of subscriber ``name`` that exist, and the events in them.

    ``other_subscribers``: queues bound to the events exchange. A 3.x subscriber may be
    called ``N-history``: its queue is its own, never taken for ``N``'s hand-over progress.
    """
    history = [queue for queue in history_queue_names(name) if queue not in other_subscribers]
    own_queues = [
        queue
        for queue in queues
        if queue.name in (name, dead_letter_queue_name(name), *history)
        or _is_wait_queue(name, queue.name)
        or is_partition_queue(name, queue.name)
    ]
    own_exchanges = [
        exchange
        for exchange in exchanges
        if exchange
        in (
            dead_letter_exchange_name(name),
            retry_exchange_name(name),
            partitions_exchange_name(name),
            members_exchange_name(name),
        )
        or _is_wait_queue(name, exchange)  # 3.x's wait exchanges share their queue's name
    ]
    return Belongings(
        queues=tuple(sorted(queue.name for queue in own_queues)),
        exchanges=tuple(sorted(own_exchanges)),
        events=sum(queue.ready + queue.unacked for queue in own_queues),
    )


def history_queue_names(subscriber: str) -> tuple[str, str]:
    """The queues of a hand-over from history still under way: progress and lock."""
    return progress_queue_name(subscriber), lock_queue_name(subscriber)


def _is_wait_queue(subscriber: str, queue: str) -> bool:
    for prefix in (wait_queue_prefix(subscriber), legacy_wait_queue_prefix(subscriber)):
        if queue.startswith(prefix) and re.fullmatch(r"\d+", queue[len(prefix) :]):
            return True
    return False
