"""A channel that publishes one confirmed copy at a time without blocking the I/O thread.

pika's ``BlockingChannel.basic_publish`` with confirms waits for the confirm
with no time limit: a broker that keeps it to itself freezes the subscriber
(and its SIGTERM handling). Here the copy goes out at once and the I/O loop
looks at :attr:`CopyChannel.result` between its other work, giving up after a
deadline. One copy is in flight at a time, so a ``basic.return`` (unroutable)
belongs to it without doubt.

pika has no public non-blocking confirm on a blocking connection: this module
holds the subscriber's only uses of pika internals (the channel's ``_impl``
and the connection's stream), each guarded.
"""

from __future__ import annotations

import contextlib
import enum
from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection


class Confirm(enum.Enum):
    STORED = "stored"  # basic.ack: the broker has the copy
    REFUSED = "refused"  # basic.nack: the broker would not take it
    UNROUTABLE = "unroutable"  # basic.return, then basic.ack: no queue took it


class CopyChannel:
    """Publishes copies with ``mandatory`` and confirms, one at a time."""

    def __init__(self, connection: BlockingConnection) -> None:
        self._connection = connection
        self.channel: BlockingChannel = connection.channel()
        impl = getattr(self.channel, "_impl", None)
        if impl is None or not hasattr(impl, "confirm_delivery"):
            raise RuntimeError("this pika version has no channel implementation to confirm on")
        self._impl: Any = impl
        # Frames on a channel are ordered: copies published before Confirm.SelectOk
        # arrives are still numbered from 1 by the broker.
        impl.confirm_delivery(ack_nack_callback=self._on_confirm)
        impl.add_on_return_callback(self._on_return)
        self._sequence = 0
        self._in_flight: int | None = None
        self._returned = False
        #: The confirm of the copy in flight, once it came.
        self.result: Confirm | None = None

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open)

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> None:
        """Send one copy (``mandatory``); its confirm appears in :attr:`result`."""
        assert self._in_flight is None, "one copy at a time"
        self.result = None
        self._returned = False
        self._impl.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        self._sequence += 1
        self._in_flight = self._sequence

    def take_result(self) -> Confirm | None:
        """The confirm of the copy in flight (then none is in flight), or None while waiting."""
        result = self.result
        if result is not None:
            self.result = None
            self._in_flight = None
        return result

    def close(self) -> None:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            if self.channel.is_open:
                self.channel.close()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        if self._in_flight is None or not (
            tag == self._in_flight or (method.multiple and tag >= self._in_flight)
        ):
            return  # a confirm of a copy we gave up on
        if isinstance(method, pika.spec.Basic.Nack):
            self.result = Confirm.REFUSED
        elif self._returned:
            self.result = Confirm.UNROUTABLE
        else:
            self.result = Confirm.STORED
        # Confirms arrive inside process_data_events, which returns early only for
        # its own events: one such event makes the I/O loop look at the result now.
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            self._connection.add_callback_threadsafe(_nothing)

    def _on_return(self, *_args: Any) -> None:
        self._returned = True


def _nothing() -> None:
    pass


def abort(connection: BlockingConnection) -> None:
    """Drop ``connection`` without the closing handshake (the broker may not answer it).

    RabbitMQ sees the socket close and requeues the connection's unacked deliveries.
    """
    impl: Any = getattr(connection, "_impl", None)
    terminate = getattr(impl, "_terminate_stream", None)
    if terminate is None:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            connection.close()
        return
    terminate(pika.exceptions.StreamLostError("a copy was not confirmed in time"))
    # Let pika process the termination; it reports it as the error it is.
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        connection.process_data_events(time_limit=0)
