"""Declaring a subscriber's topology with aio-pika: the names and arguments of topology.py.

Nothing here names a queue or picks an argument; :class:`SubscriberTopology`
does, for the sync and asyncio sides alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ..core.operations import ExchangeBind
from ..core.partitions import (
    check_partition_count,
    partition_probe,
    partition_queue_name,
    plugin_missing,
    unknown_exchange_type,
)
from ..core.rabbitmq import RabbitMQVersion
from ..core.topology import (
    Bind,
    ExchangeDeclare,
    Operation,
    QueueDeclare,
    SubscriberTopology,
    explain_access_refused,
    explain_precondition_failed,
)
from ..core.wait_queues import others_may_route
from ..errors import AccessRefused, PluginMissing, TopologyMismatch
from .connection import server_properties

log = logging.getLogger(__name__)


async def declare(
    connection: aio_pika.abc.AbstractConnection, topology: SubscriberTopology
) -> None:
    """Declare the subscriber's topology as the node's release needs it, on channels of its own.

    As the pika driver's ``declare_on``: a queue that an older release declared
    with other arguments is used as it is, with one ERROR that says how to fix it.
    """
    rabbitmq = RabbitMQVersion.reported(server_properties(connection))
    channel = await connection.channel()
    try:
        if topology.partitions:
            channel = await _check_partitions(connection, channel, topology)
        for operation in topology.declarations(rabbitmq):
            try:
                await run_operations(channel, [operation], topology)
            except AccessRefused:
                raise  # no other form of the queue helps against a 403
            except TopologyMismatch:
                instead = topology.instead_of(operation)
                if instead is None:
                    raise
                channel = await connection.channel()  # RabbitMQ closed the other one
                await run_operations(channel, [instead], topology)
                advice = topology.advice_after(operation)
                if advice is not None:
                    log.error("%s", advice)
    finally:
        if not channel.is_closed:
            await channel.close()


async def run_operations(
    channel: aio_pika.abc.AbstractChannel,
    operations: Iterable[Operation],
    topology: SubscriberTopology,
) -> None:
    """Carry out the core's declarations on ``channel``, as the pika driver does on its own;
    a mismatch with what exists raises :class:`TopologyMismatch`."""
    try:
        for operation in operations:
            if isinstance(operation, ExchangeDeclare):
                await channel.declare_exchange(
                    operation.name,
                    operation.type,
                    durable=operation.durable,
                    auto_delete=operation.auto_delete,
                    arguments=dict(operation.arguments) if operation.arguments else None,
                )
            elif isinstance(operation, ExchangeBind):
                destination = await channel.get_exchange(operation.destination, ensure=False)
                await destination.bind(operation.source, operation.routing_key)
            elif isinstance(operation, QueueDeclare):
                await channel.declare_queue(
                    operation.name,
                    durable=operation.durable,
                    exclusive=operation.exclusive,
                    auto_delete=operation.auto_delete,
                    arguments=dict(operation.arguments) if operation.arguments else None,
                )
            elif isinstance(operation, Bind):
                queue = await channel.get_queue(operation.queue, ensure=False)
                await queue.bind(operation.exchange, operation.routing_key)
    except aiormq.exceptions.ConnectionClosed as error:
        text = _reply_text(error)
        if not unknown_exchange_type(text):
            raise
        raise PluginMissing(plugin_missing(topology.name, text)) from None
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        raise TopologyMismatch(explain_precondition_failed(_reply_text(error), topology)) from None
    except aiormq.exceptions.ChannelAccessRefused as error:
        raise AccessRefused(explain_access_refused(_reply_text(error), topology)) from None


class WaitQueues:
    """Where the delayed copy of a retried event goes, declaring its wait queue when needed.

    The one place on the asyncio side that picks the wait queue and the route
    to it; the names, arguments and route are :class:`SubscriberTopology`'s, and
    the declaration bookkeeping is the sync side's :class:`WaitQueueBook`.
    """

    def __init__(self, topology: SubscriberTopology) -> None:
        self.topology = topology
        self._book = topology.wait_queue_book

    async def ensure(self, channel: aio_pika.abc.AbstractChannel, delay_ms: int) -> None:
        """Make sure the wait queue for ``delay_ms`` exists, and note it as used now.

        Wait queues have no lease: declared once per connection, they stay
        until removed when idle and empty (see :mod:`domain_event_broker.wait_queues`).
        """
        now = time.monotonic()
        if self._book.needs_declare(delay_ms):
            declaration = self.topology.wait_queue_declaration(delay_ms)
            await run_operations(channel, [declaration], self.topology)
            self._book.declared(delay_ms, now)
        else:
            self._book.used(delay_ms, now)

    async def route(self, channel: aio_pika.abc.AbstractChannel, delay_ms: int) -> tuple[str, str]:
        """(exchange, routing key) to publish a copy to that comes back after ``delay_ms``,
        its wait queue declared when needed."""
        await self.ensure(channel, delay_ms)
        return self.topology.retry_destination(delay_ms)

    def forget(self) -> None:
        """Forget which wait queues exist (after a reconnect, or a copy came back unroutable)."""
        self._book.forget()

    async def remove_idle(
        self, connection: aio_pika.abc.AbstractConnection, now: float
    ) -> list[str]:
        """Delete the classic wait queues this subscriber has long stopped using, if empty.

        As the sync side's ``SubscriberTopology.remove_idle_wait_queues``: cheap
        to call often (it looks every ``wait_queues.CHECK_INTERVAL`` s);
        ``if_empty`` makes RabbitMQ refuse while any copy (also another
        instance's) waits inside, and it is tried again later. Quorum queues
        cannot be deleted ``if_empty`` and are kept. A throwaway channel, since
        a refusal closes it. Returns the deleted names.
        """
        book = self._book
        idle = book.idle(now)
        if self.topology.queue_type == "quorum" or not idle:
            return []
        deleted = []
        channel = await connection.channel()
        try:
            if others_may_route(await self._consumers(channel)):
                for delay_ms in idle:
                    book.still_holds_copies(delay_ms, now)  # look again later
                return []
            for delay_ms in idle:
                if channel.is_closed:
                    channel = await connection.channel()
                name = self.topology.wait_queue(delay_ms)
                try:
                    await channel.queue_delete(name, if_empty=True)
                except aiormq.exceptions.ChannelNotFoundEntity:  # another instance removed it
                    book.removed(delay_ms)
                    continue
                except aiormq.exceptions.ChannelPreconditionFailed:  # copies still wait in it
                    book.still_holds_copies(delay_ms, now)
                    continue
                book.removed(delay_ms)
                deleted.append(name)
        finally:
            if not channel.is_closed:
                await channel.close()
        return deleted

    async def _consumers(self, channel: aio_pika.abc.AbstractChannel) -> int:
        """Consumers of the subscriber's queue now (0 when it is gone; the channel then closes)."""
        try:
            queue = await channel.declare_queue(self.topology.queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        result = queue.declaration_result
        return int(result.consumer_count or 0) if result is not None else 0


async def _check_partitions(
    connection: aio_pika.abc.AbstractConnection,
    channel: aio_pika.abc.AbstractChannel,
    topology: SubscriberTopology,
) -> aio_pika.abc.AbstractChannel:
    """Raise :class:`TopologyMismatch` when the broker has another partition count;
    returns an open channel (a passive declare of a missing queue closes one)."""
    present: dict[int, bool] = {}
    while (index := partition_probe(topology.partitions, present)[0]) is not None:
        try:
            await channel.declare_queue(partition_queue_name(topology.name, index), passive=True)
            present[index] = True
        except aiormq.exceptions.ChannelNotFoundEntity:
            present[index], channel = False, await connection.channel()
    check_partition_count(topology.name, topology.partitions, present)
    return channel


def _reply_text(error: BaseException) -> str:
    frame = error.args[0] if error.args else None
    text = getattr(frame, "reply_text", None)
    return str(text) if text is not None else str(error)
