"""The names and declarations of an ordered subscriber's partitions.

For a subscriber ``N`` registered with ``partitions=P``:

- ``N-partitions``: an ``x-consistent-hash`` exchange (plugin
  ``rabbitmq_consistent_hash_exchange``) hashing the object id header, bound
  from the events exchange with the subscriber's binding keys;
- ``N-p000`` ... ``N-p<P-1>``: durable queues with ``x-single-active-consumer``,
  each bound to ``N-partitions`` with weight ``1``; they dead-letter into the
  one ``N-dl`` (through ``N-dlx``) when the subscriber keeps dead letters;
- ``N-members``: a fanout exchange on which the processes agree how the
  partitions spread over them (see :mod:`.spread`).

Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import TopologyMismatch
from .operations import Bind, ExchangeBind, ExchangeDeclare, Operation, QueueDeclare
from .rabbitmq import RabbitMQVersion, for_release
from .spread import members_exchange_name

#: The only ordering key there is: every event carries it (the 3.x wire format).
ORDERED_BY = "domain_object_id"
MAX_PARTITIONS = 256
CONSISTENT_HASH = "x-consistent-hash"
PLUGIN = "rabbitmq_consistent_hash_exchange"
#: Every partition gets an equal share of the hash ring.
PARTITION_WEIGHT = "1"
#: What names a subscriber's hash exchange after the subscriber.
PARTITIONS_EXCHANGE_SUFFIX = "-partitions"


class Partitioned(Protocol):
    """What the declarations need of a subscriber's topology."""

    @property
    def name(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def binding_keys(self) -> Sequence[str]: ...
    @property
    def partitions(self) -> int: ...
    def queue_arguments(self) -> dict[str, Any]: ...


def partitions_exchange_name(subscriber: str) -> str:
    return f"{subscriber}{PARTITIONS_EXCHANGE_SUFFIX}"


def partitioned_subscriber(exchange: str) -> str | None:
    """The subscriber whose hash exchange ``exchange`` would be (its name read back), or None."""
    subscriber = exchange.removesuffix(PARTITIONS_EXCHANGE_SUFFIX)
    if subscriber and partitions_exchange_name(subscriber) == exchange:
        return subscriber
    return None


def partition_queue_name(subscriber: str, index: int) -> str:
    return f"{subscriber}-p{index:03d}"


def is_partition_queue(subscriber: str, queue: str) -> bool:
    """Whether ``queue`` is one of ``subscriber``'s partitions (``N-p000``...)."""
    prefix = f"{subscriber}-p"
    index = queue[len(prefix) :]
    return queue.startswith(prefix) and len(index) >= 3 and index.isdigit()


def partition_queue_names(
    subscriber: str, partitions: int, unordered: bool = False
) -> tuple[str, ...]:
    """The partition queues; ``unordered``: the subscriber's one queue."""
    if unordered:
        return (subscriber,)
    return tuple(partition_queue_name(subscriber, index) for index in range(partitions))


def partition_index(subscriber: str, queue: str) -> int | None:
    """The partition number of ``queue`` if it is one of ``subscriber``'s partitions."""
    prefix = f"{subscriber}-p"
    tail = queue[len(prefix) :]
    if queue.startswith(prefix) and len(tail) == 3 and tail.isdigit():
        return int(tail)
    return None


def partition_declarations(
    topology: Partitioned, hash_header: str, rabbitmq: RabbitMQVersion
) -> list[Operation]:
    """The hash exchange, its bindings from the events exchange, and the partition queues."""
    subscriber = topology.name
    exchange = partitions_exchange_name(subscriber)
    operations: list[Operation] = [
        ExchangeDeclare(exchange, CONSISTENT_HASH, True, arguments={"hash-header": hash_header})
    ]
    operations += [ExchangeBind(exchange, topology.exchange, key) for key in topology.binding_keys]
    operations.append(ExchangeDeclare(members_exchange_name(subscriber), "fanout", True))
    arguments = {**topology.queue_arguments(), "x-single-active-consumer": True}
    # The last partition first, the first last: N-p000 exists only once all do, so a
    # process starting meanwhile never takes a declaration in progress for another count.
    for queue in reversed(partition_queue_names(subscriber, topology.partitions)):
        declared = QueueDeclare(queue, durable=True, arguments=arguments)
        operations.append(for_release(declared, subscriber, rabbitmq))
        operations.append(Bind(queue, exchange, PARTITION_WEIGHT))
    return operations


def ordered_partitions(
    ordered_by: str | None,
    partitions: int | None,
    *,
    exclusive: bool,
    auto_delete: bool,
    durable: bool,
) -> int:
    """The partition count of a registration (0: not ordered); ``ValueError`` for
    what cannot be ordered."""
    if ordered_by is None:
        if partitions is not None:
            raise ValueError('partitions is given only with ordered_by="domain_object_id"')
        return 0
    if ordered_by != ORDERED_BY:
        raise ValueError(f'ordered_by accepts only "domain_object_id", not {ordered_by!r}')
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise ValueError(
            f'ordered_by="domain_object_id" needs partitions=<1..{MAX_PARTITIONS}>, e.g. 16'
        )
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be from 1 to {MAX_PARTITIONS}, got {partitions}")
    if exclusive or auto_delete or not durable:
        raise ValueError(
            "ordered handling needs durable, shared partition queues: "
            "it cannot be combined with exclusive=True, auto_delete=True or durable=False"
        )
    return partitions


def partition_probe(declared: int, present: Mapping[int, bool]) -> tuple[int | None, int]:
    """The next partition whose existence to ask, given the answers so far (index ->
    exists); ``(None, live)`` once the live partition count is known (0: none yet, or
    the same count being declared by another process)."""

    def count_from(start: int) -> tuple[int | None, int]:
        index = start
        while present.get(index):
            index += 1
        if index not in present and index <= MAX_PARTITIONS:
            return index, 0
        return None, index

    if declared not in present:
        return declared, 0
    if present[declared]:  # more partitions than declared
        return count_from(declared + 1)
    if declared - 1 not in present:
        return declared - 1, 0
    if present[declared - 1]:
        return None, declared
    if 0 not in present:
        return 0, 0
    return count_from(1) if present[0] else (None, 0)


def check_partition_count(subscriber: str, declared: int, present: Mapping[int, bool]) -> None:
    """Raise :class:`TopologyMismatch` when the partitions found (by
    :func:`partition_probe`'s questions) are another count than ``declared``."""
    words = partition_mismatch(subscriber, declared, partition_probe(declared, present)[1])
    if words is not None:
        raise TopologyMismatch(words)


def partition_mismatch(subscriber: str, declared: int, live: int) -> str | None:
    """The words of a registration whose partition count is not the live one; None if equal
    (or none live yet). ``live``: how many partition queues ``N-p000``... exist."""
    if live in (0, declared):
        return None
    return (
        f"subscriber {subscriber!r} is registered with partitions={declared}, but the broker "
        f"has {live} partitions ({partition_queue_name(subscriber, 0)}...). The count cannot "
        f"change in place: the hash would send an object's events to another partition. To "
        f"migrate, register with partitions={live}, or stop every consumer, let the partitions "
        f"drain, delete {partitions_exchange_name(subscriber)!r} and the queues "
        f"{subscriber}-p*, and register with partitions={declared}"
    )


def unknown_exchange_type(reply_text: str) -> bool:
    """Whether the broker closed the connection over the hash exchange's type (no plugin):
    ``COMMAND_INVALID - unknown exchange type 'x-consistent-hash'``."""
    return "COMMAND_INVALID" in reply_text and CONSISTENT_HASH in reply_text


def plugin_missing(subscriber: str, reply_text: str) -> str:
    """The words of an ordered registration on a broker without the hashing plugin."""
    return (
        f"subscriber {subscriber!r} is ordered by domain object and needs RabbitMQ's "
        f"consistent-hash exchange, which this broker does not have ({reply_text}). "
        f"Enable it on every node: rabbitmq-plugins enable {PLUGIN}"
    )


@dataclass(frozen=True)
class PartitionState:
    """One partition as an operator sees it: its depth and who is active on it."""

    queue: str
    ready: int
    unacked: int
    consumers: int
    #: The connection (its name, and where from) of the active consumer; "" when none.
    active: str


def consumer_is_active(consumer: Mapping[str, Any]) -> bool:
    """Whether a consumer as the management API lists it gets deliveries (a single active
    consumer's waiting ones do not)."""
    return bool(consumer.get("active", True)) and consumer.get("activity_status") != "waiting"


def partition_state(row: Mapping[str, Any], connection_names: Mapping[str, str]) -> PartitionState:
    """The state of a partition from its management API row (``/api/queues/<vhost>/<queue>``);
    ``connection_names``: the name each client gave its connection, by the broker's name of it."""
    details = row.get("consumer_details") or []
    active = ""
    for consumer in details:
        if consumer_is_active(consumer):
            channel = consumer.get("channel_details") or {}
            peer = str(channel.get("connection_name", "?"))
            named = connection_names.get(peer)
            active = f"{named} ({peer})" if named else peer
            break
    return PartitionState(
        str(row["name"]),
        int(row.get("messages_ready") or 0),
        int(row.get("messages_unacknowledged") or 0),
        len(details),
        active,
    )
