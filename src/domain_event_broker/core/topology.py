"""Every exchange, queue and header name, every queue argument, and what to declare: in one place.

The names and arguments are those of releases 2.x-3.x, so that old and new
services share one broker: RabbitMQ refuses to re-declare a queue with other
arguments (``PRECONDITION_FAILED``). For a subscriber named ``N``:

- ``N``: its queue, bound to the events exchange with each binding key (and
  ``x-dead-letter-exchange = N-dlx`` when it keeps dead letters);
- ``N-dlx`` / ``N-dl``: dead-letter exchange and queue, bound with the same keys;
- ``N-retry``: exchange bound to ``N`` with the same keys, where retries come back;
- ``N-wait-D``: a wait queue for each distinct retry delay of ``D`` ms. A retry
  copy is published to it through the default exchange and, when its TTL
  expires, dead-lettered through the default exchange straight to ``N``: nothing
  that can vanish (an exchange, a lease) stands between a copy and its queue.
  The event's own routing key travels in ``ROUTING_KEY_HEADER``.
- ``N-delay-D``: the 2.x-3.x wait queue (and exchange), dead-lettering to ``N-retry``:
  old instances use them in a rolling upgrade; we only count copies coming back.
- ``N-partitions``, ``N-p000``...: the partitions of an ordered subscriber (:mod:`.partitions`).

Nothing here does I/O: what to declare is a list of operations
(:class:`ExchangeDeclare`, :class:`QueueDeclare`, :class:`Bind`) that each
driver carries out on its own channel (``domain_event_broker.topology`` for
pika, ``domain_event_broker.aio.topology`` for aio-pika).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

from ..events import MAX_KEY_BYTES, is_routing_key, validate_binding_key
from .explanations import explain_access_refused as explain_access_refused
from .explanations import explain_precondition_failed as explain_precondition_failed
from .headers import ATTEMPT_HEADERS as ATTEMPT_HEADERS
from .headers import EXCEPTION_MESSAGE_HEADER as EXCEPTION_MESSAGE_HEADER
from .headers import EXCEPTION_TYPE_HEADER as EXCEPTION_TYPE_HEADER
from .headers import FAILED_AT_HEADER as FAILED_AT_HEADER
from .headers import FAILED_SUBSCRIBER_HEADER as FAILED_SUBSCRIBER_HEADER
from .headers import OBJECT_ID_HEADER as OBJECT_ID_HEADER
from .headers import REPLAYED_HEADER as REPLAYED_HEADER
from .headers import RETRIES_HEADER as RETRIES_HEADER
from .headers import ROUTING_KEY_HEADER as ROUTING_KEY_HEADER
from .headers import TRACEBACK_HEADER as TRACEBACK_HEADER
from .headers import VERSION_HEADER as VERSION_HEADER
from .operations import Bind as Bind
from .operations import ExchangeBind
from .operations import ExchangeDeclare as ExchangeDeclare
from .operations import Operation as Operation
from .operations import QueueDeclare as QueueDeclare
from .partitions import (
    ordered_partitions,
    partition_declarations,
    partition_queue_names,
    partitions_exchange_name,
)
from .rabbitmq import UNKNOWN, RabbitMQVersion, for_release
from .wait_queues import WaitQueueBook

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_EXCHANGE = "domain-events"
DEFAULT_EXCHANGE_TYPE = "topic"

# 3.x added the longer "-delay-<ms>": names it accepted stay accepted, as before.
_LONGEST_SUFFIX = len("-delay-") + 10

QueueType = Literal["classic", "quorum"]


def routing_key_in(headers: object) -> str | None:
    """The event's routing key kept in ``ROUTING_KEY_HEADER``, if it holds a valid one.

    Another publisher's header may hold anything: only a key RabbitMQ could
    route (and a copy could be published with) is used.
    """
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(ROUTING_KEY_HEADER)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and is_routing_key(value) else None


def legacy_wait_queue_prefix(subscriber: str) -> str:
    """Start of the names of the wait queues that releases 2.x-3.x declare for ``subscriber``."""
    return f"{subscriber}-delay-"


def dead_letter_queue_name(subscriber: str) -> str:
    return f"{subscriber}-dl"


def dead_letter_exchange_name(subscriber: str) -> str:
    return f"{subscriber}-dlx"


def retry_exchange_name(subscriber: str) -> str:
    return f"{subscriber}-retry"


def wait_queue_prefix(subscriber: str) -> str:
    """Start of the names of the wait queues that we declare for ``subscriber``."""
    return f"{subscriber}-wait-"


def wait_queue_name(subscriber: str, delay_ms: int) -> str:
    """Name of the wait queue of ``subscriber`` for a retry delay."""
    return f"{wait_queue_prefix(subscriber)}{delay_ms}"


@dataclass(frozen=True)
class SubscriberTopology:
    """The queues and exchanges of one subscriber, and how to declare them."""

    name: str
    binding_keys: tuple[str, ...]
    exchange: str = DEFAULT_EXCHANGE
    exchange_type: str = DEFAULT_EXCHANGE_TYPE
    dead_letter: bool = False
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    queue_type: QueueType = "classic"
    #: Partition queues of a subscriber ordered by domain object (0: one queue, unordered).
    partitions: int = 0
    #: Which wait queues this connection declared and when each was last used.
    wait_queue_book: WaitQueueBook = field(default_factory=WaitQueueBook, compare=False, repr=False)
    #: Queues whose fix an operator was told about (once per subscriber, not per reconnect).
    _advised: set[str] = field(default_factory=set, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a subscriber needs a non-empty name; it is also its queue's name")
        if len(self.name.encode()) > MAX_KEY_BYTES - _LONGEST_SUFFIX:
            raise ValueError(
                f"subscriber name {self.name[:40]!r}... is too long: queue names are at most "
                f"{MAX_KEY_BYTES} bytes, and '-wait-<ms>' is added for retries"
            )
        if "*" in self.name or "#" in self.name:
            raise ValueError(
                f"subscriber name {self.name!r} holds a wildcard: it looks like a binding key. "
                "register(handler, name, binding_keys) takes the name first; were they swapped?"
            )
        if not self.binding_keys:
            raise ValueError(
                f"subscriber {self.name!r} needs at least one binding key, e.g. ['user.*']"
            )
        for key in self.binding_keys:
            validate_binding_key(key)
        if self.queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be 'classic' or 'quorum', not {self.queue_type!r}")
        if self.queue_type == "quorum" and (self.exclusive or self.auto_delete or not self.durable):
            raise ValueError(
                "quorum queues are always durable and cannot be exclusive or auto-delete; "
                f"register {self.name!r} with durable=True, exclusive=False, auto_delete=False"
            )

    # Names -----------------------------------------------------------------
    @property
    def queue(self) -> str:
        return self.name

    @property
    def consumed_queues(self) -> tuple[str, ...]:
        """The queues a consumer of this subscriber consumes: its own, or its partitions."""
        return partition_queue_names(self.name, self.partitions or 1, self.partitions == 0)

    @property
    def dead_letter_exchange(self) -> str:
        return dead_letter_exchange_name(self.name)

    @property
    def dead_letter_queue(self) -> str:
        return dead_letter_queue_name(self.name)

    @property
    def retry_exchange(self) -> str:
        return retry_exchange_name(self.name)

    def wait_queue(self, delay_ms: int) -> str:
        """Name of the wait queue for a retry delay."""
        return wait_queue_name(self.name, delay_ms)

    def legacy_wait_queue(self, delay_ms: int) -> str:
        """Name of the wait queue (and of its exchange) that releases 2.x-3.x use for a delay."""
        return f"{legacy_wait_queue_prefix(self.name)}{delay_ms}"

    def retry_destination(self, delay_ms: int) -> tuple[str, str]:
        """(exchange, routing key) a retry copy is published with: the default
        exchange, which always exists, straight into the wait queue."""
        return "", self.wait_queue(delay_ms)

    def event_routing_key(self, routing_key: str, headers: Any) -> str:
        """The routing key of the event in a delivery to this subscriber's queue.

        A copy that comes back from a new-style wait queue is delivered with the
        queue's name as routing key; its event's key is in ``ROUTING_KEY_HEADER``.
        The header is trusted only then, so no publisher can re-route others' events.
        """
        if routing_key == self.queue:
            return routing_key_in(headers) or routing_key
        return routing_key

    # Arguments -------------------------------------------------------------
    def queue_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        if self.dead_letter:
            arguments["x-dead-letter-exchange"] = self.dead_letter_exchange
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return arguments

    def dead_letter_queue_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"} if self.queue_type == "quorum" else {}

    def wait_queue_arguments(self, delay_ms: int) -> dict[str, Any]:
        # No x-expires: a lease counts from the last declare, not from the last
        # message, and RabbitMQ deletes an expired queue with its copies inside.
        # Idle wait queues are removed by their subscriber, only when empty.
        # The default exchange ("") always exists and routes by queue name, so an
        # expired copy reaches N also after a restart took the non-durable N-retry.
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue,
            "x-message-ttl": delay_ms,
        }
        if self.queue_type == "quorum":
            # at-least-once dead-lettering keeps a retried event in the wait queue
            # until the subscriber queue has confirmed it; RabbitMQ requires
            # reject-publish overflow for it.
            arguments["x-queue-type"] = "quorum"
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
        return arguments

    @property
    def durable_exchanges(self) -> bool:
        """Whether ``N-dlx`` and ``N-retry`` are durable."""
        # Releases 2.x-3.x declared N-dlx and N-retry non-durable; a different
        # value makes their re-declaration fail, so only new (quorum) set-ups change it.
        return self.queue_type == "quorum"

    # What to declare -----------------------------------------------------------
    def declarations(self, rabbitmq: RabbitMQVersion = UNKNOWN) -> list[Operation]:
        """The exchanges, queues and bindings of this subscriber, in declaration order.

        ``rabbitmq``: the version the node reported; 4.x gets quorum queues that
        keep returned events and a lease instead of a transient queue (see
        :mod:`.rabbitmq`). Unknown: the 3.x declarations.
        """
        operations: list[Operation] = [events_exchange(self.exchange, self.exchange_type)]
        if self.dead_letter:
            operations.append(
                ExchangeDeclare(
                    self.dead_letter_exchange, self.exchange_type, self.durable_exchanges
                )
            )
            operations.append(
                for_release(
                    QueueDeclare(
                        self.dead_letter_queue,
                        durable=True,
                        arguments=self.dead_letter_queue_arguments() or None,
                    ),
                    self.name,
                    rabbitmq,
                )
            )
            operations.extend(self._bindings(self.dead_letter_exchange, self.dead_letter_queue))
        if self.partitions:
            # Retries are held in the process; N-retry only takes replayed dead letters
            # (replay publishes there, as 3.x does) to the hash exchange, which sends each
            # to its object's partition by the header the dead letter kept.
            replay_route: list[Operation] = [
                ExchangeDeclare(self.retry_exchange, self.exchange_type, self.durable_exchanges)
            ]
            replay_route += [
                ExchangeBind(partitions_exchange_name(self.name), self.retry_exchange, key)
                for key in self.binding_keys
            ]
            operations += partition_declarations(self, OBJECT_ID_HEADER, rabbitmq)
            return operations + replay_route
        operations.append(
            for_release(
                QueueDeclare(
                    self.queue,
                    durable=self.durable,
                    exclusive=self.exclusive,
                    auto_delete=self.auto_delete,
                    arguments=self.queue_arguments() or None,
                ),
                self.name,
                rabbitmq,
            )
        )
        operations.extend(self._bindings(self.exchange, self.queue))
        operations.append(
            ExchangeDeclare(self.retry_exchange, self.exchange_type, self.durable_exchanges)
        )
        operations.extend(self._bindings(self.retry_exchange, self.queue))
        return operations

    def instead_of(self, refused: Operation) -> QueueDeclare | None:
        """After RabbitMQ refused ``refused`` (PRECONDITION_FAILED, the queue exists
        with other arguments): the declaration to make instead; None when there is
        no other form."""
        if not isinstance(refused, QueueDeclare):
            return None
        return refused.previous

    def advice_after(self, refused: Operation) -> str | None:
        """The ERROR to log once :meth:`instead_of` was declared in ``refused``'s place:
        the first time for this queue only (not at every reconnect)."""
        if not isinstance(refused, QueueDeclare) or refused.name in self._advised:
            return None
        self._advised.add(refused.name)
        return refused.after_previous

    def wait_queue_declaration(self, delay_ms: int) -> QueueDeclare:
        """The declaration of the wait queue for ``delay_ms``."""
        return QueueDeclare(
            self.wait_queue(delay_ms), durable=True, arguments=self.wait_queue_arguments(delay_ms)
        )

    def forget_declarations(self) -> None:
        """Forget which wait queues exist (after a reconnect they may be gone)."""
        self.wait_queue_book.forget()

    def _bindings(self, exchange: str, queue: str) -> list[Operation]:
        return [Bind(queue, exchange, key) for key in self.binding_keys]


def events_exchange(
    exchange: str = DEFAULT_EXCHANGE, exchange_type: str = DEFAULT_EXCHANGE_TYPE
) -> ExchangeDeclare:
    """The durable topic exchange that every event is published to."""
    return ExchangeDeclare(exchange, exchange_type, durable=True)


_Topology = TypeVar("_Topology", bound=SubscriberTopology)


class QueueOptions(TypedDict, total=False):
    """The options of :class:`SubscriberTopology` that ``register()`` passes on as they are."""

    exchange: str
    exchange_type: str
    dead_letter: bool
    durable: bool
    exclusive: bool
    auto_delete: bool
    queue_type: QueueType


def registration_topology(
    name: str,
    binding_keys: str | Sequence[str],
    *,
    max_retries: int,
    registered: Iterable[str],
    kind: type[_Topology],
    ordered_by: str | None = None,
    partitions: int | None = None,
    **options: Unpack[QueueOptions],
) -> _Topology:
    """The topology of a handler being registered, after the checks every subscriber makes.

    The sync, asyncio and in-memory subscribers all register through it, so that
    a name, a key or an option is accepted or refused alike by each. ``kind`` is
    the driver's own :class:`SubscriberTopology` (it adds the declaring).
    """
    count = ordered_partitions(
        ordered_by,
        partitions,
        exclusive=options.get("exclusive", False),
        auto_delete=options.get("auto_delete", False),
        durable=options.get("durable", True),
    )
    keys = normalise_binding_keys(binding_keys)
    topology = kind(name=name, binding_keys=keys, partitions=count, **options)
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if name in registered:
        raise ValueError(f"a handler named {name!r} is already registered on this subscriber")
    return topology


def normalise_binding_keys(binding_keys: str | Sequence[str]) -> tuple[str, ...]:
    # A lone string is a common slip (``'user.*'`` for ``['user.*']``); iterating
    # it would bind every character.
    if isinstance(binding_keys, str):
        return (binding_keys,)
    return tuple(binding_keys)
