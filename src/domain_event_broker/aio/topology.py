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


def _reply_text(error: BaseException) -> str:
    frame = error.args[0] if error.args else None
    text = getattr(frame, "reply_text", None)
    return str(text) if text is not None else str(error)
