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
from ..topology import WAIT_QUEUE_GRACE_MS, SubscriberTopology, explain_precondition_failed


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

    The one place that picks the wait queue and the route to it: new-style wait
    queues (reached through the default exchange) only change :meth:`route`.
    """

    def __init__(self, topology: SubscriberTopology) -> None:
        self.topology = topology
        self._declared_at: dict[int, float] = {}

    async def route(
        self, channel: aio_pika.abc.AbstractChannel, delay_ms: int, routing_key: str
    ) -> tuple[str, str]:
        """(exchange, routing key) to publish a copy to that comes back after ``delay_ms``.

        A wait queue deletes itself ``delay_ms + 10 s`` after it was last
        declared; it is declared again once half of that has passed.
        """
        now = time.monotonic()
        declared_at = self._declared_at.get(delay_ms)
        name = self.topology.wait_queue(delay_ms)
        if declared_at is None or now - declared_at >= (delay_ms + WAIT_QUEUE_GRACE_MS) / 2000:
            try:
                queue = await channel.declare_queue(
                    name, durable=True, arguments=self.topology.wait_queue_arguments(delay_ms)
                )
                # auto-delete: the exchange goes away together with its wait queue
                exchange = await channel.declare_exchange(
                    name, aio_pika.ExchangeType.TOPIC, durable=True, auto_delete=True
                )
                await queue.bind(exchange, "#")
            except aiormq.exceptions.ChannelPreconditionFailed as error:
                raise TopologyMismatch(
                    explain_precondition_failed(_reply_text(error), self.topology)
                ) from None
            self._declared_at[delay_ms] = now
        return name, routing_key

    def forget(self) -> None:
        """Forget which wait queues exist (after a reconnect, or a copy came back unroutable)."""
        self._declared_at.clear()


def _reply_text(error: BaseException) -> str:
    frame = error.args[0] if error.args else None
    text = getattr(frame, "reply_text", None)
    return str(text) if text is not None else str(error)
