"""The public :class:`Publisher`: publish events, each confirmed by the broker.

Every :class:`Publisher` owns one connection, driven by an I/O thread of its
own (:mod:`.confirming`, :mod:`.link`). Callers from any thread hand it
messages; the I/O thread publishes them on a confirm-mode channel and tracks
the broker's confirms by delivery tag, so messages from many threads (or a
batch) are pipelined. A publish returns once RabbitMQ has confirmed the
message. A lost connection is reopened with backoff (trying the cluster's nodes
in turn) and every message not yet confirmed is sent again; callers keep
waiting until their publish timeout. An event the broker refuses
(``basic.nack``) is re-sent on a fresh channel for up to :data:`NACK_GRACE`
seconds before the caller gets the refusal: a quorum queue refuses events while
it elects a new leader.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import pika

from .. import observability, settings
from .._transport import Transport
from ..core.confirms import NACK_GRACE, Pending
from ..core.defaults import PUBLISH_TIMEOUT
from ..core.messages import OutgoingMessage, PublishOutcome, not_sent
from ..core.topology import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_TYPE
from ..errors import BrokerUnavailable, PublishError, TopologyMismatch
from ..events import DomainEvent, validate_routing_key
from ..forking import ProcessSlot
from ..observability import Occurrence
from ..settings import ConnectionSettings
from .confirming import ConfirmingConnection
from .messages import (
    body_bytes,
    event_properties,
    message_properties,
    pending_event,
    pending_message,
)

log = logging.getLogger(__package__)


class PublishExtra(NamedTuple):
    """What :func:`publish_domain_event` adds to the two arguments it gives ``publish``."""

    message_id: str | None
    publish_timeout: float | None


#: Set by :func:`publish_domain_event` around its call of ``Publisher.publish``,
#: which 3.x test suites patch and check for exactly ``(json_body, routing_key)``.
publish_extra: contextvars.ContextVar[PublishExtra | None] = contextvars.ContextVar(
    "domain_event_broker_publish_extra", default=None
)


class Publisher(Transport):
    """Publishes messages to the events exchange, each confirmed by the broker.

    One publisher holds one connection; it is safe to share between threads.

    >>> publisher = Publisher()  # doctest: +SKIP
    >>> publisher.publish(DomainEvent("user.registered").to_json(), "user.registered")
    ... # doctest: +SKIP
    >>> publisher.disconnect()  # doctest: +SKIP

    ``connection_settings``: an AMQP URL, ``''`` for the default broker or
    ``None`` for no broker (every publish is then a no-op).
    ``publish_timeout``: seconds a publish waits for the broker's confirm;
    ``settings.PUBLISH_TIMEOUT`` (read at each publish) when not given.
    ``nack_grace``: seconds a refused event is re-sent on a fresh channel before
    the refusal is final (0: at once, for callers that retry on their own).
    """

    def __init__(
        self,
        connection_settings: ConnectionSettings = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
        *,
        publish_timeout: float | None = None,
        connect_timeout: float = 15.0,
        nack_grace: float = NACK_GRACE,
    ) -> None:
        super().__init__(connection_settings, exchange, exchange_type)
        self.nack_grace = nack_grace
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        # Started afresh in a forked child, lock included (a parent thread may
        # have held it, connecting, at the fork).
        self._slot: ProcessSlot[ConfirmingConnection] = ProcessSlot()
        if self.connection_settings is not None:
            self._confirming_connection()

    @property
    def _lock(self) -> threading.Lock:
        return self._slot.lock

    @property
    def connected(self) -> bool:
        """Whether this process's publishing connection is open now (no I/O: for health probes)."""
        connection = self._slot.value
        return connection is not None and connection.usable

    def ensure_connected(self) -> None:
        """Open the publishing connection now unless it is open.

        Raises :class:`~domain_event_broker.errors.BrokerUnavailable` when the
        broker cannot be reached. Nothing happens without a broker configured.
        """
        if self.connection_settings is not None:
            self._confirming_connection()

    def _confirming_connection(self) -> ConfirmingConnection:
        return self._slot.get(_is_usable, self._connect)

    def _connect(self) -> ConfirmingConnection:
        assert self.connection_settings is not None
        return ConfirmingConnection(
            self.connection_settings, self.exchange, self.exchange_type, self.nack_grace
        ).open(self.connect_timeout)

    def _timeout(self, publish_timeout: float | None) -> float:
        if publish_timeout is not None:
            return publish_timeout
        if self.publish_timeout is not None:
            return self.publish_timeout
        return float(getattr(settings, "PUBLISH_TIMEOUT", PUBLISH_TIMEOUT))

    def publish(
        self,
        message: str | bytes | bytearray | memoryview,
        routing_key: str,
        *,
        properties: pika.BasicProperties | None = None,
        publish_timeout: float | None = None,
    ) -> None:
        """Publish an already-serialised event body; return once the broker confirmed it.

        ``message`` is a str (sent as UTF-8) or bytes-like. Raises TypeError
        for any other body, :class:`InvalidRoutingKey` before sending
        anything, :class:`BrokerUnavailable` or :class:`PublishError` when the
        event was not confirmed within ``publish_timeout`` seconds.
        """
        body = body_bytes(message)
        validate_routing_key(routing_key)
        if self.connection_settings is None:
            log.debug("no broker configured: not publishing %s", routing_key)
            return
        extra = publish_extra.get()
        if extra is not None:
            message_id = extra.message_id
            if publish_timeout is None:
                publish_timeout = extra.publish_timeout
        else:
            message_id = None if properties is None else properties.message_id
        pending = Pending(
            body, routing_key, message_properties(properties, routing_key, message_id, body)
        )
        start = time.monotonic()
        connection = self._confirming_connection()
        connection.publish(pending, start + self._timeout(publish_timeout))
        if observability.listening():
            observability.notify(
                Occurrence("published", routing_key, message_id, seconds=time.monotonic() - start)
            )

    def publish_event(self, event: DomainEvent) -> None:
        """Publish a :class:`DomainEvent`; return once the broker confirmed it.

        A typed event (:mod:`domain_event_broker.contracts`) is validated first
        and carries its version in a header; either way :meth:`publish` sends it.
        """
        body = event.to_json()  # validates a typed event before anything is sent
        self.publish(body, event.routing_key, properties=event_properties(event))

    def publish_many(self, events: Iterable[DomainEvent]) -> list[DomainEvent]:
        """Publish several events at once, confirms pipelined; return once all are confirmed.

        Much faster than one :meth:`publish_event` after another. Every event
        is validated and serialised before the first is sent. When some are
        not confirmed in time the error says how many.

        >>> publisher.publish_many(DomainEvent("user.registered", {"id": n}) for n in range(500))
        ... # doctest: +SKIP
        """
        batch = list(events)
        pendings = [pending_event(event) for event in batch]  # every one checked first
        if self.connection_settings is None:
            failures: list[BaseException] = [not_sent()] * len(batch)
        else:
            errors = self._send_and_wait(pendings, None)
            failures = [error for error in errors if error is not None]
        if len(failures) == 1 and len(batch) == 1:
            raise failures[0]
        if failures:
            raise type(failures[0])(
                f"{len(failures)} of {len(batch)} events were not confirmed; first: {failures[0]}"
            )
        return batch

    def publish_batch(
        self,
        messages: Iterable[OutgoingMessage],
        *,
        publish_timeout: float | None = None,
        while_blocked: Callable[[], bool] | None = None,
    ) -> list[PublishOutcome]:
        """Publish messages with pipelined confirms; report what became of each, in order.

        Unlike :meth:`publish_many` this does not raise when some are refused or
        not confirmed in time: each :class:`PublishOutcome` says so, and the
        others are unaffected. With no broker configured nothing is sent and
        every outcome is an error.

        ``while_blocked``: while the broker blocks publishers (a memory or disk
        alarm) and this returns True, keep waiting for the confirms instead of
        timing out; the time-out counts again once the alarm clears. For a
        caller that would otherwise send the same batch again after a time-out
        (the outbox relay): each copy would wait in memory, and after the alarm
        every message would be stored once per attempt.
        """
        batch = list(messages)
        if self.connection_settings is None:
            error = not_sent()
            return [PublishOutcome(message, error) for message in batch]
        errors = self._send_and_wait(
            [pending_message(message) for message in batch], publish_timeout, while_blocked
        )
        return [
            PublishOutcome(message, error) for message, error in zip(batch, errors, strict=True)
        ]

    def _send_and_wait(
        self,
        pendings: list[Pending],
        publish_timeout: float | None,
        while_blocked: Callable[[], bool] | None = None,
    ) -> list[BaseException | None]:
        """Send ``pendings`` (confirms pipelined); the error of each, None when confirmed."""
        start = time.monotonic()
        try:
            connection = self._confirming_connection()
            connection.submit(pendings)
        except (PublishError, BrokerUnavailable, TopologyMismatch) as error:
            return [error] * len(pendings)
        timeout = self._timeout(publish_timeout)
        deadline = start + timeout
        listening = observability.listening()
        errors: list[BaseException | None] = []
        for pending in pendings:
            try:
                connection.wait(pending, deadline, while_blocked, timeout)
            except (PublishError, BrokerUnavailable, TopologyMismatch) as error:
                errors.append(error)
                continue
            if pending.settled_at > deadline:
                # Confirmed after an alarm: the others get their time-out afresh.
                deadline = pending.settled_at + timeout
            errors.append(None)
            if listening:
                observability.notify(
                    Occurrence(
                        "published",
                        pending.routing_key,
                        pending.properties.message_id,
                        seconds=time.monotonic() - start,
                    )
                )
        return errors

    def disconnect(self) -> None:
        """Close the connection. The publisher reconnects if used again."""
        super().disconnect()  # the 3.x transport's .connection, when it was used
        connection = self._slot.take()
        if connection is not None:
            connection.close()

    close = disconnect

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()


def _is_usable(connection: ConfirmingConnection) -> bool:
    return connection.usable
