"""The publisher's confirm-mode channel: opened on first use, reopened with backoff when lost.

One :class:`PublishChannel` belongs to the event loop that first uses it. Each
channel it opens has a ``generation``: however many publishes saw a channel
fail, it is forgotten once (:meth:`PublishChannel.lost`). Connection loss and
recovery are decided and logged in one place, the channel's
:class:`~domain_event_broker.core.supervisor.Supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import aio_pika.abc
import aiormq.abc
from pamqp import commands as amqp_spec

from ... import observability
from ...core.messages import OutgoingMessage, over_size_limit, size_limit_in
from ...core.ordering import with_object_id
from ...core.supervisor import Supervisor, connection_supervisor
from ...errors import BrokerUnavailable, EventTooLarge
from ...settings import BrokerSettings
from ..connection import AIO_CONNECTION_LOST, connect

log = logging.getLogger(__package__)

T = TypeVar("T")


#: A channel could not be opened: the broker is unreachable, or the connection broke.
_CANNOT_OPEN: tuple[type[BaseException], ...] = (BrokerUnavailable, *AIO_CONNECTION_LOST)


class Sender:
    """Publishes to the events exchange on a confirm-mode channel.

    Straight on aiormq's channel (aio-pika's own transport): building an
    ``aio_pika.Message`` per event cost a third of the time of a pipelined publish.
    """

    __slots__ = ("channel", "exchange")

    def __init__(self, channel: aiormq.abc.AbstractChannel, exchange: str) -> None:
        self.channel = channel
        self.exchange = exchange

    def send(self, message: OutgoingMessage) -> Awaitable[object]:
        """Publish ``message``; the awaitable ends with its confirm (nack: DeliveryError)."""
        headers = with_object_id(
            observability.message_headers(
                message.routing_key, message.message_id, message.headers, message.injected
            ),
            message.body,
        )
        return self.channel.basic_publish(
            message.body,
            exchange=self.exchange,
            routing_key=message.routing_key,
            properties=amqp_spec.Basic.Properties(
                delivery_mode=2,
                content_type="application/json",
                message_id=message.message_id,
                headers=headers,
            ),
        )


@dataclass(eq=False)
class PublishChannel:
    """The connection and confirm-mode channel of one publisher, with the exchange declared."""

    url: BrokerSettings | None
    masked_url: str
    exchange: str
    exchange_type: str
    connect_timeout: float
    generation: int = field(default=0, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)
    _connection: aio_pika.abc.AbstractConnection | None = field(default=None, init=False)
    _channel: aio_pika.abc.AbstractChannel | None = field(default=None, init=False)
    _sender: Sender | None = field(default=None, init=False)
    #: The broker's max_message_size once it refused an event for it (per connection).
    size_limit: int | None = field(default=None, init=False)
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        # One supervisor for every publish of this channel: they wait on one lock.
        self.supervisor = connection_supervisor(
            log,
            self.masked_url,
            client="publisher",
            error_text=False,
            stable_after=0.0,  # an open channel with the exchange declared is a success
        )

    async def ready(self, deadline: float) -> tuple[Sender, int]:
        """The sender on an open channel, connecting (with backoff) until ``deadline``."""
        sender = self._sender
        if sender is not None and self._channel is not None and not self._channel.is_closed:
            return sender, self.generation
        self._check_loop()
        assert self._lock is not None
        async with self._lock:
            while self._sender is None or self._channel is None or self._channel.is_closed:
                try:
                    await self._open()
                except _CANNOT_OPEN as error:
                    pause = self.supervisor.lost(error)
                    await self._drop_connection()
                    now = time.monotonic()
                    if now >= deadline:
                        if isinstance(error, BrokerUnavailable):
                            raise
                        raise BrokerUnavailable(
                            f"cannot open a channel on RabbitMQ at {self.masked_url}"
                        ) from None
                    await asyncio.sleep(min(pause, deadline - now))
            assert self._sender is not None
            return self._sender, self.generation

    async def _open(self) -> None:
        assert self.url is not None  # AsyncPublisher sends nothing without a broker
        if self._connection is None or self._connection.is_closed:
            self._connection = await connect(self.url, "publisher", min(self.connect_timeout, 10.0))
            self.size_limit = None  # an operator may have raised it meanwhile
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.declare_exchange(
            self.exchange, self.exchange_type, durable=True, auto_delete=False
        )
        self._channel = channel
        self._sender = Sender(await channel.get_underlay_channel(), self.exchange)
        self.generation += 1
        self.supervisor.connected()

    async def lost(self, generation: int) -> None:
        """Forget the channel of ``generation`` (once, however many publishes saw it fail)."""
        if generation != self.generation or self._sender is None:
            return
        channel, self._channel, self._sender = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*AIO_CONNECTION_LOST):
                await channel.close()
        if self._connection is not None and self._connection.is_closed:
            await self._drop_connection()

    async def close(self) -> None:
        """Close the connection; the next :meth:`ready` opens a new one."""
        self.generation += 1
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._sender = None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*AIO_CONNECTION_LOST):
                await connection.close()

    def too_large(self, message: OutgoingMessage) -> EventTooLarge | None:
        """The error of ``message`` if it is over the broker's max_message_size, once known."""
        if self.size_limit is None:  # the usual case, once per publish: no words built
            return None
        return over_size_limit(
            self.size_limit,
            message.body,
            f"RabbitMQ at {self.masked_url}",
            message.routing_key,
            message.message_id,
        )

    def learn_size_limit(self, result: object) -> bool:
        """Whether ``result`` is RabbitMQ's refusal of an event for its size (its
        max_message_size is then remembered for this connection)."""
        if not isinstance(result, AIO_CONNECTION_LOST):
            return False
        limit = size_limit_in(" ".join(map(str, result.args)))
        if limit is None:
            return False
        self.size_limit = limit
        return True

    def note_outage(self, error: BaseException) -> float:
        """A publish saw the connection fail: the pause before it tries again."""
        return self.supervisor.lost(error)

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            self._loop = loop
            self._lock = asyncio.Lock()
            self._connection = self._channel = self._sender = None
        elif self._loop is not loop:
            raise RuntimeError(
                "this AsyncPublisher belongs to another event loop; make one per event loop "
                "(publish_domain_event keeps one per loop for you)"
            )


async def within(deadline: float, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` until ``deadline`` (``time.monotonic()``), or raise TimeoutError.

    ``asyncio.timeout_at`` (3.11+) costs a timer; ``wait_for`` a task per call,
    which shows at thousands of publishes a second.
    """
    loop = asyncio.get_running_loop()
    timeout_at = getattr(asyncio, "timeout_at", None)
    if timeout_at is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, max(deadline - time.monotonic(), 0.001))
    async with timeout_at(loop.time() + (deadline - time.monotonic())):
        return await awaitable
