"""One connection's channels (a session), the ack book of its consume channel, and opening them.

A session's deliveries are settled only on the channel they came from: after
a reconnect (a new ``generation``) the events of the lost channel are never
acked or nacked; RabbitMQ redelivers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ...core.acks import AckBook, Ticket
from ...core.copies import RefusalBackoff
from ...core.history import LiveHandOver
from ...core.ordering import ObjectLine
from ...core.outcome import Policy
from ...core.rabbitmq import RabbitMQVersion
from ...core.spread import Membership, membership_of
from ...errors import DomainEventBrokerError
from ...events import DomainEvent
from ...topology import SubscriberTopology
from .. import topology as aio_topology
from ..connection import AIO_CONNECTION_LOST, connect, server_properties
from .spreading import AsyncPartitionShare

#: One logger for the whole asyncio subscriber (its name predates the package).
log = logging.getLogger(__package__)

AsyncHandler = Callable[[DomainEvent], Awaitable[object]]
Message = aio_pika.abc.AbstractIncomingMessage


@dataclass
class Registration:
    handler: AsyncHandler
    topology: SubscriberTopology
    policy: Policy
    wait_queues: aio_topology.WaitQueues
    # A refused copy sends its event back after a pause that grows while refusals go on.
    refused: RefusalBackoff = field(default_factory=RefusalBackoff)


@dataclass
class Delivery:
    registration: Registration
    message: Message
    generation: int
    #: A history event's offset in the archive (None: from the subscriber's queue)...
    offset: int | None = None
    #: ... and whom to tell once it is settled (it acks the archive's deliveries in batches).
    on_settled: Callable[[Delivery], None] | None = None
    #: Its place in the line of an ordered subscriber (None: starts at once).
    object_key: tuple[str, str] | None = None
    #: Retries held in this process (ordered subscribers), not yet in a header.
    held_retries: int = 0


class Acks:
    """Delivery tags of one channel: which are handled, and which one multiple ack covers.

    Handled events are acked together (:class:`~domain_event_broker.acks.AckBook`
    decides: one ``multiple`` ack for the oldest run, the rest one by one). A
    tag settled on its own (nack, retry, dead letter) is marked :meth:`settled`
    only after its frame was sent, so no multiple ack can pass it before.
    """

    def __init__(self) -> None:
        self._book = AckBook()  # one book per channel: its generation never changes
        self.handled: list[tuple[int, Message]] = []

    def _ticket(self, tag: int) -> Ticket:
        return Ticket(self._book.generation, tag)

    def delivered(self, tag: int) -> None:
        self._book.delivered(tag)

    def settled(self, tag: int) -> None:
        self._book.settle_alone(self._ticket(tag))

    def take(self) -> tuple[int, list[int]]:
        """(tag of a multiple ack or 0, tags to ack one by one) for the handled events."""
        for tag, _ in self.handled:
            self._book.finished(self._ticket(tag))
        self.handled.clear()
        acks = self._book.take_acks()
        return acks.multiple_up_to or 0, list(acks.singles)


@dataclass(eq=False)
class Session:
    """The channels of one connection: deliveries from an older session are never settled."""

    connection: aio_pika.abc.AbstractConnection
    consume: aio_pika.abc.AbstractChannel
    publish: aio_pika.abc.AbstractChannel
    generation: int
    #: Seconds the broker has to confirm a retry or dead-letter copy.
    publish_timeout: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = field(default_factory=list)
    acks: Acks = field(default_factory=lambda: Acks())
    ack_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flush_scheduled: bool = False
    #: The consume channel's prefetch (a history read uses the same on its channel).
    prefetch_count: int = 1
    #: Ordered subscribers: the events waiting behind an earlier one of their object.
    line: ObjectLine[Delivery] = field(default_factory=ObjectLine)
    #: Stopping: an ordered subscriber's unstarted events stay unacked until the
    #: channel closes; RabbitMQ then returns them in order, with the partition, to
    #: the next consumer (a nack now would come back to us, a cancel would let
    #: the next consumer overtake them).
    handing_over: bool = False
    #: Ordered registrations: the share of partitions each consumes on this channel...
    shares: list[AsyncPartitionShare] = field(default_factory=list)
    #: ... and whether another process's share grew into one (the session then ends).
    releasing: bool = False

    async def publish_channel(self) -> aio_pika.abc.AbstractChannel:
        """The confirm-mode channel for copies, reopened if the broker closed it."""
        if self.publish.is_closed:
            self.publish = await _copy_channel(self.connection)
        return self.publish


OnMessage = Callable[[Message], Awaitable[None]]
Submit = Callable[[Delivery], None]


class HandOver(Protocol):
    """A registration's hand-over from history (``history.AsyncHandOver``)."""

    done: bool
    live: LiveHandOver | None

    @property
    def in_flight(self) -> int: ...

    async def attach(
        self,
        session: Session,
        registration: Registration,
        submit: Submit,
        consume_queue: Callable[[], Awaitable[None]],
    ) -> bool: ...

    async def passed_marker(self, session: Session) -> None: ...

    async def close(self) -> None: ...


@dataclass(eq=False)
class Sessions:
    """Opens a session (declare, channels, consumers) and knows the current one."""

    url: object
    prefetch_count: int
    registrations: list[Registration]
    #: Seconds the broker has to confirm a retry or dead-letter copy.
    publish_timeout: float
    current: Session | None = None
    generation: int = 0
    #: Hand-overs from history of the registrations that have one, by name.
    hand_overs: dict[str, HandOver] = field(default_factory=dict)
    #: Registrations waiting for another process's history lock (tried again in housekeeping).
    waiting: list[Registration] = field(default_factory=list)
    #: Ordered registrations' view of their members, by name (kept across sessions).
    memberships: dict[str, Membership] = field(default_factory=dict)

    async def open(
        self, on_message_of: Callable[[Registration, Session], OnMessage], submit: Submit
    ) -> Session:
        connection = await connect(self.url, "subscriber")
        log.info(
            "asyncio subscriber connected to RabbitMQ %s",
            RabbitMQVersion.reported(server_properties(connection)),
        )
        try:
            await self._declare(connection)
            consume = await connection.channel()
            await consume.set_qos(prefetch_count=self.prefetch_count)
            publish = await _copy_channel(connection)
            self.generation += 1
            session = Session(
                connection,
                consume,
                publish,
                self.generation,
                self.publish_timeout,
                prefetch_count=self.prefetch_count,
            )
            self.current = session
            # A closed publish channel is reopened when next needed (publish_channel).
            for closable in (connection, consume):
                closable.close_callbacks.add(lambda *_: session.lost.set())
            self.waiting = []
            for registration in self.registrations:
                await self.start(session, registration, on_message_of, submit)
        except BaseException as error:
            live = is_live(connection)
            await close_quietly(connection)
            if live and is_bug(error):
                # aio-pika raises RuntimeError for a connection that is gone; on a live
                # one it is a bug: reconnecting would only repeat it, out of sight.
                raise SessionFailed(
                    f"could not open a session on a live connection: "
                    f"{type(error).__name__}: {error}; this is no broker outage, so the "
                    "subscriber stops instead of reconnecting"
                ) from error
            raise
        return session

    async def start(
        self,
        session: Session,
        registration: Registration,
        on_message_of: Callable[[Registration, Session], OnMessage],
        submit: Submit,
    ) -> None:
        """Consume the registration's queue, or first its history (see ``history.py``)."""

        async def consume_queue() -> None:
            on_message = on_message_of(registration, session)
            if partitions := registration.topology.partitions:  # this process's share of them
                name = registration.topology.name
                membership = membership_of(self.memberships, name, partitions, time.monotonic())
                share = AsyncPartitionShare(session.consume, name, membership, on_message)
                session.shares.append(share)
                await share.start(time.monotonic())
                return
            for name in registration.topology.consumed_queues:
                queue = await session.consume.get_queue(name, ensure=False)
                tag = await queue.consume(on_message, no_ack=False)
                session.consumers.append((queue, tag))

        hand_over = self.hand_overs.get(registration.topology.name)
        if hand_over is None or hand_over.done:
            await consume_queue()
        elif not await hand_over.attach(session, registration, submit, consume_queue):
            self.waiting.append(registration)

    async def _declare(self, connection: aio_pika.abc.AbstractConnection) -> None:
        for registration in self.registrations:
            hand_over = self.hand_overs.get(registration.topology.name)
            if hand_over is not None and not hand_over.done:
                continue  # it declares its own, in the order core/history.py gives
            registration.wait_queues.forget()
            await aio_topology.declare(connection, registration.topology)

    async def close(self, session: Session) -> None:
        for hand_over in self.hand_overs.values():
            await hand_over.close()
        if self.current is session:
            self.current = None
        await close_quietly(session.connection)


async def _copy_channel(
    connection: aio_pika.abc.AbstractConnection,
) -> aio_pika.abc.AbstractChannel:
    # on_return_raises: a copy no queue took must fail, never count as stored
    channel: aio_pika.abc.AbstractChannel = await connection.channel(
        publisher_confirms=True, on_return_raises=True
    )
    return channel


class SessionFailed(DomainEventBrokerError):
    """Opening a session failed on a connection that is still up: not an outage, no reconnect."""


def is_live(connection: aio_pika.abc.AbstractConnection) -> bool:
    return not connection.is_closed and getattr(connection, "transport", None) is not None


def is_bug(error: BaseException) -> bool:
    """A RuntimeError that is none of aiormq's "channel or connection is gone" errors."""
    return isinstance(error, RuntimeError) and not isinstance(
        error, aiormq.exceptions.ChannelInvalidStateError
    )


async def close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    if connection.is_closed:
        return
    with contextlib.suppress(*AIO_CONNECTION_LOST, asyncio.TimeoutError):
        await asyncio.wait_for(connection.close(), 5.0)
