"""Every exchange, queue and header name and every queue argument, in one place.

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
- ``N-delay-D``: the wait queue (and exchange) of releases 2.x-3.x, which
  dead-letter to ``N-retry``. Old instances still declare and use them during a
  rolling upgrade; we never declare them, but count the copies coming back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from .errors import TopologyMismatch
from .events import MAX_KEY_BYTES, is_routing_key, validate_binding_key
from .wait_queues import WaitQueueBook

DEFAULT_EXCHANGE = "domain-events"
DEFAULT_EXCHANGE_TYPE = "topic"

# Headers of our own. RabbitMQ 4.x drops x-death headers that a client sets, so
# the retry count travels in a header that RabbitMQ never touches.
RETRIES_HEADER = "x-domain-event-retries"
FAILED_SUBSCRIBER_HEADER = "x-domain-event-failed-subscriber"
EXCEPTION_TYPE_HEADER = "x-domain-event-exception-type"
EXCEPTION_MESSAGE_HEADER = "x-domain-event-exception-message"
FAILED_AT_HEADER = "x-domain-event-failed-at"
# The event's routing key, where a copy travels under another one: a retry copy
# (it comes back from its wait queue with the queue's name as routing key) and a
# dead letter that had to bypass the dead-letter exchange.
ROUTING_KEY_HEADER = "x-domain-event-routing-key"
#: How often an event was replayed from a dead-letter queue (set by replay).
REPLAYED_HEADER = "x-domain-event-replayed"

#: Headers that describe one delivery attempt; a replayed event starts afresh.
ATTEMPT_HEADERS = (
    RETRIES_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    EXCEPTION_TYPE_HEADER,
    EXCEPTION_MESSAGE_HEADER,
    FAILED_AT_HEADER,
    ROUTING_KEY_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)

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
    _wait_queues: WaitQueueBook = field(default_factory=WaitQueueBook, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a subscriber needs a non-empty name; it is also its queue's name")
        if len(self.name.encode()) > MAX_KEY_BYTES - _LONGEST_SUFFIX:
            raise ValueError(
                f"subscriber name {self.name[:40]!r}... is too long: queue names are at most "
                f"{MAX_KEY_BYTES} bytes, and '-wait-<ms>' is added for retries"
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
    def _durable_exchanges(self) -> bool:
        # Releases 2.x-3.x declared N-dlx and N-retry non-durable; a different
        # value makes their re-declaration fail, so only new (quorum) set-ups change it.
        return self.queue_type == "quorum"

    # Declaration -------------------------------------------------------------
    def declare(self, channel: BlockingChannel) -> None:
        """Declare the subscriber's exchanges, queues and bindings (idempotent)."""
        with _explain_mismatch(self):
            declare_events_exchange(channel, self.exchange, self.exchange_type)
            if self.dead_letter:
                channel.exchange_declare(
                    exchange=self.dead_letter_exchange,
                    exchange_type=self.exchange_type,
                    durable=self._durable_exchanges,
                )
                channel.queue_declare(
                    queue=self.dead_letter_queue,
                    durable=True,
                    arguments=self.dead_letter_queue_arguments() or None,
                )
                self._bind(channel, self.dead_letter_exchange, self.dead_letter_queue)
            channel.queue_declare(
                queue=self.queue,
                durable=self.durable,
                exclusive=self.exclusive,
                auto_delete=self.auto_delete,
                arguments=self.queue_arguments() or None,
            )
            self._bind(channel, self.exchange, self.queue)
            channel.exchange_declare(
                exchange=self.retry_exchange,
                exchange_type=self.exchange_type,
                durable=self._durable_exchanges,
            )
            self._bind(channel, self.retry_exchange, self.queue)

    def declare_wait_queue(self, channel: BlockingChannel, delay_ms: int, now: float) -> None:
        """Make sure the wait queue for ``delay_ms`` exists: declared once per
        connection (it has no lease to renew), and noted as used at ``now``.

        Should another instance remove it as idle in between, the copy is
        returned as unroutable (mandatory): forget, declare again, publish again.
        """
        book = self._wait_queues
        if not book.needs_declare(delay_ms):
            book.used(delay_ms, now)
            return
        with _explain_mismatch(self):
            channel.queue_declare(
                queue=self.wait_queue(delay_ms),
                durable=True,
                arguments=self.wait_queue_arguments(delay_ms),
            )
        book.declared(delay_ms, now)

    def forget_declarations(self) -> None:
        """Forget which wait queues exist (after a reconnect they may be gone)."""
        self._wait_queues.forget()

    def remove_idle_wait_queues(self, connection: BlockingConnection, now: float) -> list[str]:
        """Delete the classic wait queues this subscriber has long stopped using, if empty.

        Cheap to call often: it looks every ``wait_queues.CHECK_INTERVAL`` s.
        ``if_empty`` makes RabbitMQ refuse while any copy (also another
        instance's) waits inside; then it is tried again later. Quorum queues
        cannot be deleted ``if_empty`` and are kept. Returns the deleted names.
        """
        book = self._wait_queues
        idle = book.idle(now)
        if self.queue_type == "quorum" or not idle:
            return []
        deleted = []
        channel = connection.channel()
        try:
            for delay_ms in idle:
                if not channel.is_open:
                    channel = connection.channel()
                name = self.wait_queue(delay_ms)
                try:
                    channel.queue_delete(queue=name, if_empty=True)
                except pika.exceptions.ChannelClosedByBroker as error:
                    if error.reply_code == 404:  # gone already (another instance removed it)
                        book.removed(delay_ms)
                    else:  # 406: copies still wait in it
                        book.still_holds_copies(delay_ms, now)
                    continue
                book.removed(delay_ms)
                deleted.append(name)
        finally:
            if channel.is_open:
                channel.close()
        return deleted

    def _bind(self, channel: BlockingChannel, exchange: str, queue: str) -> None:
        for key in self.binding_keys:
            channel.queue_bind(queue=queue, exchange=exchange, routing_key=key)


def declare_events_exchange(
    channel: BlockingChannel, exchange: str = DEFAULT_EXCHANGE, exchange_type: str = "topic"
) -> None:
    """Declare the durable topic exchange that every event is published to."""
    channel.exchange_declare(
        exchange=exchange, exchange_type=exchange_type, durable=True, auto_delete=False
    )


def registration_topology(
    name: str,
    binding_keys: str | Sequence[str],
    *,
    max_retries: int,
    registered: Iterable[str],
    exchange: str = DEFAULT_EXCHANGE,
    exchange_type: str = DEFAULT_EXCHANGE_TYPE,
    dead_letter: bool = False,
    durable: bool = True,
    exclusive: bool = False,
    auto_delete: bool = False,
    queue_type: QueueType = "classic",
) -> SubscriberTopology:
    """The topology of a handler being registered, after the checks every subscriber makes.

    The sync, asyncio and in-memory subscribers all register through it, so that
    a name, a key or an option is accepted or refused alike by each.
    """
    topology = SubscriberTopology(
        name=name,
        binding_keys=normalise_binding_keys(binding_keys),
        exchange=exchange,
        exchange_type=exchange_type,
        dead_letter=dead_letter,
        durable=durable,
        exclusive=exclusive,
        auto_delete=auto_delete,
        queue_type=queue_type,
    )
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


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']+)'"
)


class _explain_mismatch:
    """Turn RabbitMQ's PRECONDITION_FAILED into a TopologyMismatch that says how to fix it."""

    def __init__(self, topology: SubscriberTopology) -> None:
        self.topology = topology

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        if not isinstance(error, pika.exceptions.ChannelClosedByBroker):
            return
        if error.reply_code != 406:
            return
        raise TopologyMismatch(
            explain_precondition_failed(error.reply_text, self.topology)
        ) from None


def explain_precondition_failed(reply_text: str, topology: SubscriberTopology) -> str:
    match = _INEQUIVALENT.search(reply_text)
    if match is None:
        what = "a queue or exchange"
        argument = "its properties"
    else:
        what = f"{match['kind']} {match['name']!r}"
        argument = f"argument {match['arg']!r}"
    return (
        f"{what} of subscriber {topology.name!r} already exists on RabbitMQ with a different "
        f"{argument} than this subscriber declares (RabbitMQ said: {reply_text}). "
        "To migrate: stop the subscriber's consumers, move or drain its events, delete the "
        "queue (rabbitmqctl delete_queue NAME, or the management UI) and start the "
        "subscriber again; or register it with the options it was created with."
    )
