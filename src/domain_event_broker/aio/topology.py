"""Declaring a subscriber's topology with aio-pika: the names and arguments of topology.py.

Nothing here names a queue or picks an argument; :class:`SubscriberTopology`
does, for the sync and asyncio sides alike.
"""

from __future__ import annotations

import time

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ..errors import TopologyMismatch
from ..topology import SubscriberTopology, explain_precondition_failed
from ..wait_queues import WaitQueueBook


async def declare(channel: aio_pika.abc.AbstractChannel, topology: SubscriberTopology) -> None:
    """Declare the subscriber's exchanges, queues and bindings (idempotent)."""
    try:
        await _declare(channel, topology)
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        raise TopologyMismatch(explain_precondition_failed(_reply_text(error), topology)) from None


async def _declare(channel: aio_pika.abc.AbstractChannel, topology: SubscriberTopology) -> None:
    events = await channel.declare_exchange(
        topology.exchange, topology.exchange_type, durable=True, auto_delete=False
    )
    # Releases 2.x-3.x declared N-dlx and N-retry non-durable; topology.py says when not.
    durable_exchanges = topology._durable_exchanges
    if topology.dead_letter:
        dlx = await channel.declare_exchange(
            topology.dead_letter_exchange, topology.exchange_type, durable=durable_exchanges
        )
        dead_letters = await channel.declare_queue(
            topology.dead_letter_queue,
            durable=True,
            arguments=topology.dead_letter_queue_arguments() or None,
        )
        for key in topology.binding_keys:
            await dead_letters.bind(dlx, key)
    queue = await channel.declare_queue(
        topology.queue,
        durable=topology.durable,
        exclusive=topology.exclusive,
        auto_delete=topology.auto_delete,
        arguments=topology.queue_arguments() or None,
    )
    retry = await channel.declare_exchange(
        topology.retry_exchange, topology.exchange_type, durable=durable_exchanges
    )
    for key in topology.binding_keys:
        await queue.bind(events, key)
        await queue.bind(retry, key)


class WaitQueues:
    """Where the delayed copy of a retried event goes, declaring its wait queue when needed.

    The one place on the asyncio side that picks the wait queue and the route
    to it; the names, arguments and route are :class:`SubscriberTopology`'s, and
    the declaration bookkeeping is the sync side's :class:`WaitQueueBook`.
    """

    def __init__(self, topology: SubscriberTopology) -> None:
        self.topology = topology
        self._book = WaitQueueBook()

    async def route(self, channel: aio_pika.abc.AbstractChannel, delay_ms: int) -> tuple[str, str]:
        """(exchange, routing key) to publish a copy to that comes back after ``delay_ms``.

        Wait queues have no lease: declared once per connection, they stay
        until removed when idle and empty (see :mod:`domain_event_broker.wait_queues`).
        """
        now = time.monotonic()
        if self._book.needs_declare(delay_ms):
            try:
                await channel.declare_queue(
                    self.topology.wait_queue(delay_ms),
                    durable=True,
                    arguments=self.topology.wait_queue_arguments(delay_ms),
                )
            except aiormq.exceptions.ChannelPreconditionFailed as error:
                raise TopologyMismatch(
                    explain_precondition_failed(_reply_text(error), self.topology)
                ) from None
            self._book.declared(delay_ms, now)
        else:
            self._book.used(delay_ms, now)
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


def _reply_text(error: BaseException) -> str:
    frame = error.args[0] if error.args else None
    text = getattr(frame, "reply_text", None)
    return str(text) if text is not None else str(error)
