"""An ordered registration's share of partitions on a session's channel (the aio-pika side).

The decisions are :mod:`...core.spread`'s; here they meet the channel: the
process's member queue on ``N-members``, its ``alive`` words, and a consumer on
each partition of its share. A partition that becomes another's is never
cancelled here (``basic.cancel`` would let the next consumer overtake the
events still unacked here): the session ends instead, see ``loop.py``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aio_pika
import aio_pika.abc

from ...core.partitions import partition_queue_name
from ...core.spread import (
    ALIVE,
    LEAVING,
    TICK,
    Membership,
    change,
    member_queue_name,
    members_exchange_name,
    word,
)
from ..connection import AIO_CONNECTION_LOST

OnMessage = Callable[[aio_pika.abc.AbstractIncomingMessage], Awaitable[None]]

log = logging.getLogger(__package__)


class AsyncPartitionShare:
    """The partitions one ordered registration consumes on a channel: this process's share."""

    def __init__(
        self,
        channel: aio_pika.abc.AbstractChannel,
        name: str,
        membership: Membership,
        on_message: OnMessage,
    ) -> None:
        self.channel = channel
        self.name = name
        self.membership = membership
        self._on_message = on_message
        self.consumed: set[int] = set()
        self._next_tick = 0.0

    async def start(self, now: float) -> None:
        """Join the members (a queue of this process's on ``N-members``) and take the share."""
        queue = await self.channel.declare_queue(
            member_queue_name(self.name, self.membership.me), exclusive=True, auto_delete=True
        )
        await queue.bind(members_exchange_name(self.name))
        await queue.consume(self._heard, no_ack=True)
        await self.tick(now)

    async def _heard(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.membership.heard(message.body, time.monotonic())

    async def tick(self, now: float) -> bool:
        """Say ``alive`` when due, take new partitions; True when some must be released."""
        if now < self._next_tick:
            return False
        self._next_tick = now + TICK
        if self.membership.heartbeat_due(now):
            await self._say(ALIVE)
        wanted = change(self.consumed, self.membership.mine(now))
        if wanted.release:
            return True  # the session ends; the next one takes the whole share
        for partition in sorted(wanted.take):
            # A waiting consumer while the last owner still holds it: RabbitMQ makes it
            # the active one once that owner's session ends.
            queue = await self.channel.get_queue(
                partition_queue_name(self.name, partition), ensure=False
            )
            await queue.consume(self._on_message, no_ack=False)
            self.consumed.add(partition)
        if wanted.take:
            log.info(
                "subscriber %s: consuming partitions %s (of %d, %d processes)",
                self.name,
                ", ".join(map(str, sorted(self.consumed))),
                self.membership.partitions,
                len(self.membership.members(now)),
            )
        return False

    async def leave(self) -> None:
        """Stopping: the others take this process's partitions without waiting for silence."""
        with contextlib.suppress(*AIO_CONNECTION_LOST):
            await self._say(LEAVING)

    async def _say(self, kind: str) -> None:
        exchange = await self.channel.get_exchange(members_exchange_name(self.name), ensure=False)
        await exchange.publish(aio_pika.Message(word(kind, self.membership.me)), routing_key="")
