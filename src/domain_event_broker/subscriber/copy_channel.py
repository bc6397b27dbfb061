"""A channel that publishes confirmed copies without blocking the I/O thread.

pika's ``BlockingChannel.basic_publish`` with confirms waits for the confirm
with no time limit: a broker that keeps it to itself freezes the subscriber
(and its SIGTERM handling). Here the copy goes out at once and the I/O loop
takes the confirms between its other work, giving up after a deadline.

pika has no public non-blocking confirm on a blocking connection: the channel
underneath comes from :func:`domain_event_broker._pika.channel_impl`, where
every use of pika's internals is kept.

(The publisher's own confirm bookkeeping is :mod:`domain_event_broker.confirms`.)
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from .._pika import channel_impl


class Confirm(enum.Enum):
    STORED = "stored"  # basic.ack: the broker has the copy
    REFUSED = "refused"  # basic.nack: the broker would not take it
    UNROUTABLE = "unroutable"  # basic.return, then basic.ack: no queue took it


@dataclass(eq=False)
class _Sent:
    token: object
    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None
    returned: bool = False


class CopyChannel:
    """Publishes copies with ``mandatory`` and confirms, several in flight at once.

    ``publish(token, ...)`` sends one; :meth:`take_results` hands back
    ``(token, Confirm)`` pairs as the broker confirms them. A ``basic.return``
    carries no sequence number: it is matched to the oldest copy in flight
    with the same exchange, routing key, message id and body (copies alike in
    all of these route alike, so either one may take it).
    """

    def __init__(self, connection: BlockingConnection) -> None:
        self._connection = connection
        self.channel: BlockingChannel = connection.channel()
        impl = self._impl = channel_impl(self.channel)
        # Frames on a channel are ordered: copies published before Confirm.SelectOk
        # arrives are still numbered from 1 by the broker.
        impl.confirm_delivery(ack_nack_callback=self._on_confirm)
        impl.add_on_return_callback(self._on_return)
        self._sequence = 0
        self._pending: dict[int, _Sent] = {}
        self._results: list[tuple[object, Confirm]] = []

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def publish(
        self,
        token: object,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties,
    ) -> None:
        """Send one copy (``mandatory``); its confirm comes back with ``token``."""
        self._impl.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        self._sequence += 1
        self._pending[self._sequence] = _Sent(
            token, exchange, routing_key, body, properties.message_id
        )

    def take_results(self) -> list[tuple[object, Confirm]]:
        """The confirms that came since the last call, as ``(token, Confirm)``."""
        results, self._results = self._results, []
        return results

    def close(self) -> None:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            if self.channel.is_open:
                self.channel.close()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        if method.multiple:
            confirmed = sorted(sequence for sequence in self._pending if sequence <= tag)
        else:
            confirmed = [tag] if tag in self._pending else []
        refused = isinstance(method, pika.spec.Basic.Nack)
        for sequence in confirmed:
            sent = self._pending.pop(sequence)
            if refused:
                result = Confirm.REFUSED
            elif sent.returned:
                result = Confirm.UNROUTABLE
            else:
                result = Confirm.STORED
            self._results.append((sent.token, result))
        if confirmed:
            # Confirms arrive inside process_data_events, which returns early only
            # for its own events: one such event makes the I/O loop act on them now.
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                self._connection.add_callback_threadsafe(_nothing)

    def _on_return(
        self, _channel: Any, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        for sequence in sorted(self._pending):
            sent = self._pending[sequence]
            if (
                not sent.returned
                and sent.exchange == method.exchange
                and sent.routing_key == method.routing_key
                and sent.message_id == properties.message_id
                and sent.body == body
            ):
                sent.returned = True
                return


def _nothing() -> None:
    pass
