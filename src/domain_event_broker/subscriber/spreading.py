"""An ordered registration's share of partitions on a session's channel (the pika side).

The decisions are :mod:`..core.spread`'s; here they meet the channel: the
process's member queue on ``N-members``, its ``alive`` words, and a consumer on
each partition of its share. A partition that becomes another's is never
cancelled here (``basic.cancel`` would let the next consumer overtake the
events still unacked here): the session ends instead, see ``loop.py``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from ..core.partitions import partition_queue_name
from ..core.spread import (
    ALIVE,
    LEAVING,
    TICK,
    Membership,
    change,
    member_queue_name,
    members_exchange_name,
    membership_of,
    word,
)
from .delivery import Registration

log = logging.getLogger(__package__)

OnMessage = Callable[[BlockingChannel, Any, pika.BasicProperties, bytes], None]


class PartitionShare:
    """The partitions one ordered registration consumes on a channel: this process's share."""

    def __init__(
        self,
        channel: BlockingChannel,
        registration: Registration,
        membership: Membership,
        on_message: OnMessage,
    ) -> None:
        self.channel = channel
        self.name = registration.name
        self.membership = membership
        self._on_message = on_message
        self.consumed: set[int] = set()
        self._next_tick = 0.0

    @classmethod
    def join(
        cls,
        channel: BlockingChannel,
        registration: Registration,
        memberships: dict[str, Membership],
        on_message: OnMessage,
    ) -> PartitionShare:
        """Join ``registration``'s members and consume this process's share on ``channel``;
        ``memberships``: each registration's view, kept from one session to the next."""
        membership = membership_of(
            memberships, registration.name, registration.topology.partitions, time.monotonic()
        )
        share = cls(channel, registration, membership, on_message)
        share.start(time.monotonic())
        return share

    def start(self, now: float) -> None:
        """Join the members (a queue of this process's on ``N-members``) and take the share."""
        queue = member_queue_name(self.name, self.membership.me)
        self.channel.queue_declare(queue, exclusive=True, auto_delete=True)
        self.channel.queue_bind(queue, members_exchange_name(self.name))
        self.channel.basic_consume(queue, self._heard, auto_ack=True)
        self.tick(now)

    def _heard(
        self, _channel: BlockingChannel, _method: Any, _properties: Any, body: bytes
    ) -> None:
        self.membership.heard(body, time.monotonic())

    def tick(self, now: float) -> bool:
        """Say ``alive`` when due, take new partitions; True when some must be released."""
        if now < self._next_tick:
            return False
        self._next_tick = now + TICK
        if self.membership.heartbeat_due(now):
            self._say(ALIVE)
        wanted = change(self.consumed, self.membership.mine(now))
        if wanted.release:
            return True  # the session ends; the next one takes the whole share
        for partition in sorted(wanted.take):
            # A waiting consumer while the last owner still holds it: RabbitMQ makes it
            # the active one once that owner's session ends.
            self.channel.basic_consume(partition_queue_name(self.name, partition), self._on_message)
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

    def leave(self) -> None:
        """Stopping: the others take this process's partitions without waiting for silence."""
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            self._say(LEAVING)

    def _say(self, kind: str) -> None:
        self.channel.basic_publish(
            members_exchange_name(self.name), "", word(kind, self.membership.me)
        )
