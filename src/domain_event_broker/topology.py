"""Declaring a subscriber's topology with pika: the core's operations, carried out on a channel.

Every name, argument and declaration order lives in :mod:`.core.topology`;
this module runs them on a pika ``BlockingChannel`` and turns RabbitMQ's
``PRECONDITION_FAILED`` into a :class:`~.errors.TopologyMismatch` that says how
to migrate. The names of :mod:`.core.topology` stay importable from here, as
they were before the core existed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from .core.operations import ExchangeBind
from .core.partitions import (
    check_partition_count,
    partition_probe,
    partition_queue_name,
    plugin_missing,
    unknown_exchange_type,
)
from .core.rabbitmq import RabbitMQVersion
from .core.topology import (
    ATTEMPT_HEADERS,
    DEFAULT_EXCHANGE,
    DEFAULT_EXCHANGE_TYPE,
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    FAILED_AT_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    REPLAYED_HEADER,
    RETRIES_HEADER,
    ROUTING_KEY_HEADER,
    TRACEBACK_HEADER,
    Bind,
    Operation,
    QueueDeclare,
    QueueType,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    events_exchange,
    explain_access_refused,
    explain_precondition_failed,
    legacy_wait_queue_prefix,
    normalise_binding_keys,
    retry_exchange_name,
    routing_key_in,
    wait_queue_name,
    wait_queue_prefix,
)
from .core.topology import SubscriberTopology as _Names
from .core.wait_queues import others_may_route
from .errors import AccessRefused, PluginMissing, TopologyMismatch

log = logging.getLogger(__name__)

__all__ = [
    "ATTEMPT_HEADERS",
    "DEFAULT_EXCHANGE",
    "DEFAULT_EXCHANGE_TYPE",
    "EXCEPTION_MESSAGE_HEADER",
    "EXCEPTION_TYPE_HEADER",
    "FAILED_AT_HEADER",
    "FAILED_SUBSCRIBER_HEADER",
    "REPLAYED_HEADER",
    "RETRIES_HEADER",
    "ROUTING_KEY_HEADER",
    "TRACEBACK_HEADER",
    "QueueType",
    "SubscriberTopology",
    "dead_letter_exchange_name",
    "dead_letter_queue_name",
    "declare_events_exchange",
    "explain_precondition_failed",
    "legacy_wait_queue_prefix",
    "normalise_binding_keys",
    "retry_exchange_name",
    "routing_key_in",
    "run_operations",
    "wait_queue_name",
    "wait_queue_prefix",
]


@dataclass(frozen=True)
class SubscriberTopology(_Names):
    """The queues and exchanges of one subscriber, and how to declare them with pika."""

    def declare(self, channel: BlockingChannel) -> None:
        """Declare the subscriber's exchanges, queues and bindings (idempotent), as for 3.x."""
        run_operations(channel, self.declarations(), self)

    def declare_on(self, connection: BlockingConnection, rabbitmq: RabbitMQVersion) -> None:
        """Declare the subscriber's topology as ``rabbitmq`` needs it, on channels of its own.

        A queue that an older release declared with other arguments is used as it
        is (RabbitMQ refuses a re-declaration with others): one ERROR says what is
        at stake and how to fix it.
        """
        channel = connection.channel()
        try:
            if self.partitions:
                channel = self._check_partitions(connection, channel)
            for operation in self.declarations(rabbitmq):
                try:
                    run_operations(channel, [operation], self)
                except AccessRefused:
                    raise  # no other form of the queue helps against a 403
                except TopologyMismatch:
                    instead = self.instead_of(operation)
                    if instead is None:
                        raise
                    channel = connection.channel()  # RabbitMQ closed the other one
                    run_operations(channel, [instead], self)
                    advice = self.advice_after(operation)
                    if advice is not None:
                        log.error("%s", advice)
        finally:
            if channel.is_open:
                channel.close()

    def declare_wait_queue(self, channel: BlockingChannel, delay_ms: int, now: float) -> None:
        """Make sure the wait queue for ``delay_ms`` exists: declared once per
        connection (it has no lease to renew), and noted as used at ``now``.

        Should another instance remove it as idle in between, the copy is
        returned as unroutable (mandatory): forget, declare again, publish again.
        """
        book = self.wait_queue_book
        if not book.needs_declare(delay_ms):
            book.used(delay_ms, now)
            return
        run_operations(channel, [self.wait_queue_declaration(delay_ms)], self)
        book.declared(delay_ms, now)

    def remove_idle_wait_queues(self, connection: BlockingConnection, now: float) -> list[str]:
        """Delete the classic wait queues this subscriber has long stopped using, if empty.

        Cheap to call often: it looks every ``wait_queues.CHECK_INTERVAL`` s.
        ``if_empty`` makes RabbitMQ refuse while any copy (also another
        instance's) waits inside; then it is tried again later. Quorum queues
        cannot be deleted ``if_empty`` and are kept. Returns the deleted names.
        """
        book = self.wait_queue_book
        idle = book.idle(now)
        if self.queue_type == "quorum" or not idle:
            return []
        deleted = []
        channel = connection.channel()
        try:
            if others_may_route(self._consumers(channel)):
                for delay_ms in idle:
                    book.still_holds_copies(delay_ms, now)  # look again later
                return []
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

    def _check_partitions(
        self, connection: BlockingConnection, channel: BlockingChannel
    ) -> BlockingChannel:
        """Raise :class:`TopologyMismatch` when the broker has another partition count;
        returns an open channel (a passive declare of a missing queue closes one)."""
        present: dict[int, bool] = {}
        while (index := partition_probe(self.partitions, present)[0]) is not None:
            queue = partition_queue_name(self.name, index)
            present[index], channel = _queue_exists(connection, channel, queue)
        check_partition_count(self.name, self.partitions, present)
        return channel

    def _consumers(self, channel: BlockingChannel) -> int:
        """Consumers of the subscriber's queue now (0 when it is gone; the channel then closes)."""
        try:
            return int(channel.queue_declare(self.queue, passive=True).method.consumer_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0


def _queue_exists(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> tuple[bool, BlockingChannel]:
    """Whether ``queue`` exists, and an open channel (a passive declare's 404 closes one)."""
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False, connection.channel()
    return True, channel


def run_operations(
    channel: BlockingChannel, operations: Iterable[Operation], topology: _Names | None = None
) -> None:
    """Carry out declarations on ``channel``; a mismatch with what exists raises
    :class:`TopologyMismatch` naming the subscriber of ``topology``."""
    try:
        for operation in operations:
            if isinstance(operation, Bind):
                channel.queue_bind(operation.queue, operation.exchange, operation.routing_key)
            elif isinstance(operation, ExchangeBind):
                channel.exchange_bind(
                    operation.destination, operation.source, operation.routing_key
                )
            elif isinstance(operation, QueueDeclare):
                arguments = dict(operation.arguments) if operation.arguments else None
                channel.queue_declare(
                    operation.name,
                    durable=operation.durable,
                    exclusive=operation.exclusive,
                    auto_delete=operation.auto_delete,
                    arguments=arguments,
                )
            else:
                durable, auto_delete = operation.durable, operation.auto_delete
                channel.exchange_declare(
                    operation.name,
                    operation.type,
                    durable=durable,
                    auto_delete=auto_delete,
                    arguments=dict(operation.arguments) if operation.arguments else None,
                )
    except pika.exceptions.ConnectionClosedByBroker as error:
        if topology is None or not unknown_exchange_type(error.reply_text):
            raise
        raise PluginMissing(plugin_missing(topology.name, error.reply_text)) from None
    except pika.exceptions.ChannelClosedByBroker as error:
        if topology is None or error.reply_code not in (403, 406):
            raise
        if error.reply_code == 403:
            raise AccessRefused(explain_access_refused(error.reply_text, topology)) from None
        raise TopologyMismatch(explain_precondition_failed(error.reply_text, topology)) from None


def declare_events_exchange(
    channel: BlockingChannel,
    exchange: str = DEFAULT_EXCHANGE,
    exchange_type: str = DEFAULT_EXCHANGE_TYPE,
) -> None:
    """Declare the durable topic exchange that every event is published to."""
    run_operations(channel, [events_exchange(exchange, exchange_type)])
