"""Publishing domain events from asyncio code, each confirmed by the broker.

An :class:`AsyncPublisher` holds one connection and one confirm-mode channel on
the event loop that first uses it. Concurrent publishes share the channel, so
their confirms are pipelined; :meth:`AsyncPublisher.publish_many` sends a whole
batch before waiting. A lost connection is reopened with capped, jittered
backoff and every event not yet confirmed is sent again, until the caller's
``publish_timeout``. Validation, wire bytes and errors are the sync
publisher's: both build an :class:`~domain_event_broker.messages.OutgoingMessage`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import aiormq.exceptions

from ... import observability
from ...core.confirms import NACK_GRACE
from ...core.defaults import PUBLISH_TIMEOUT
from ...core.messages import (
    OutgoingMessage,
    PublishOutcome,
    confirm_timed_out,
    naming,
    not_sent,
    outage_outlasted,
)
from ...core.supervisor import Backoff
from ...errors import BrokerUnavailable, ConfirmTimeout, EventRefused
from ...events import DomainEvent
from ...observability import Occurrence
from ...settings import ConnectionSettings, mask_url, resolve_url
from ...topology import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_TYPE
from ..connection import AIO_CONNECTION_LOST
from .link import PublishChannel, within

#: Events of one :meth:`AsyncPublisher.publish_many` on their way at once.
WINDOW = 500


log = logging.getLogger(__package__)


class AsyncPublisher:
    """Publishes events to the events exchange from asyncio code, each confirmed.

    >>> async with AsyncPublisher() as publisher:  # doctest: +SKIP
    ...     await publisher.publish_event(DomainEvent("user.registered", {"id": 7}))

    ``connection_settings``: an AMQP URL, ``''`` for the default broker or
    ``None`` for no broker (then nothing is sent). One publisher belongs to the
    event loop that first uses it.
    """

    def __init__(
        self,
        connection_settings: ConnectionSettings = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
        *,
        publish_timeout: float = PUBLISH_TIMEOUT,
        connect_timeout: float = 15.0,
    ) -> None:
        self.connection_settings = resolve_url(connection_settings)
        self.masked_url = mask_url(self.connection_settings)
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self._channel = PublishChannel(
            self.connection_settings,
            self.masked_url,
            exchange,
            exchange_type,
            connect_timeout,
        )

    # Public API -------------------------------------------------------------
    async def connect(self) -> None:
        """Open the connection now (publishing opens it too); raise :class:`BrokerUnavailable`."""
        if self.connection_settings is not None:
            await self._channel.ready(time.monotonic() + self.connect_timeout)

    async def publish(self, message: str | bytes, routing_key: str) -> None:
        """Publish an already-serialised event body; return once the broker confirmed it."""
        body = message.encode("utf-8") if isinstance(message, str) else message
        outgoing = OutgoingMessage(routing_key, body)
        if self.connection_settings is None:
            log.debug("no broker configured: not publishing %s", routing_key)
            return
        await self._publish(outgoing, time.monotonic() + self.publish_timeout)

    async def publish_event(self, event: DomainEvent) -> None:
        """Publish a :class:`DomainEvent`; return once the broker confirmed it."""
        await self.publish_message(OutgoingMessage.of_event(event))

    async def publish_message(self, message: OutgoingMessage) -> None:
        """Publish an :class:`~domain_event_broker.messages.OutgoingMessage` (its body as it
        is); return once the broker confirmed it."""
        if self.connection_settings is None:
            return
        await self._publish(message, time.monotonic() + self.publish_timeout)

    async def publish_many(
        self, events: Iterable[DomainEvent | OutgoingMessage]
    ) -> list[PublishOutcome]:
        """Publish several events with pipelined confirms; say what became of each, in order.

        Every event is validated and serialised before the first is sent (a bad
        one raises at once). A refused or unconfirmed event does not raise: its
        :class:`~domain_event_broker.messages.PublishOutcome` holds the error.
        """
        messages = [
            item if isinstance(item, OutgoingMessage) else OutgoingMessage.of_event(item)
            for item in events
        ]
        return await self.publish_batch(messages)

    async def publish_batch(
        self, messages: Iterable[OutgoingMessage], *, publish_timeout: float | None = None
    ) -> list[PublishOutcome]:
        """Publish messages with pipelined confirms; report what became of each, in order.

        The twin of :meth:`domain_event_broker.Publisher.publish_batch`: it does not
        raise when some are refused or not confirmed in time; each
        :class:`~domain_event_broker.messages.PublishOutcome` says so, and the
        others are unaffected. With no broker configured nothing is sent and every
        outcome is an error.
        """
        batch = list(messages)
        if self.connection_settings is None:
            error = not_sent()
            return [PublishOutcome(message, error) for message in batch]
        timeout = self.publish_timeout if publish_timeout is None else publish_timeout
        deadline = time.monotonic() + timeout
        outcomes: list[PublishOutcome] = []
        for first in range(0, len(batch), WINDOW):
            outcomes += await self._publish_window(batch[first : first + WINDOW], deadline)
        return outcomes

    async def _publish_window(
        self, window: list[OutgoingMessage], deadline: float
    ) -> list[PublishOutcome]:
        """Send every message of ``window`` on the channel, then collect the confirms.

        The common case costs one pass; a message that failed (a lost connection,
        a refusal) goes through :meth:`_publish` again, with its reconnects and
        grace, until ``deadline``.
        """
        # An event over a known max_message_size is not sent (it would close the channel).
        sent: list[object] = (
            [None] * len(window)
            if self._channel.size_limit is None
            else [self._channel.too_large(message) for message in window]
        )
        sendable = [index for index, refused in enumerate(sent) if refused is None]
        if sendable:
            exchange, _generation = await self._channel.ready(deadline)
            try:
                results = await within(
                    deadline,
                    asyncio.gather(
                        *(exchange.send(window[index]) for index in sendable),
                        return_exceptions=True,
                    ),
                )
            except asyncio.TimeoutError:
                return [
                    PublishOutcome(message, self._confirm_timed_out(message)) for message in window
                ]
            for index, result in zip(sendable, results, strict=True):
                sent[index] = result
                self._channel.learn_size_limit(result)
        return await self._outcomes(window, sent, deadline)

    async def _outcomes(
        self, window: list[OutgoingMessage], sent: list[object], deadline: float
    ) -> list[PublishOutcome]:
        """What became of each message of ``window``: the failed ones are published again."""
        retried = [
            self._publish(message, deadline)
            for message, result in zip(window, sent, strict=True)
            if isinstance(result, BaseException)
        ]
        errors = iter(await asyncio.gather(*retried, return_exceptions=True))
        outcomes = []
        listening = observability.listening()
        for message, result in zip(window, sent, strict=True):
            error = next(errors) if isinstance(result, BaseException) else None
            if isinstance(error, BaseException) and not isinstance(error, Exception):
                raise error  # cancelled: the caller is going away
            outcomes.append(PublishOutcome(message, error))
            if listening and error is None and not isinstance(result, BaseException):
                observability.notify(
                    Occurrence("published", message.routing_key, message.message_id)
                )
        return outcomes

    async def close(self) -> None:
        """Close the connection. The publisher reconnects if used again."""
        await self._channel.close()

    disconnect = close

    async def __aenter__(self) -> AsyncPublisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Sending -----------------------------------------------------------------
    async def _publish(self, message: OutgoingMessage, deadline: float) -> None:
        """Send ``message`` until it is confirmed; reconnect and resend until ``deadline``."""
        backoff = Backoff()  # the pause between re-sends of a refused event
        first_nacked: float | None = None
        while True:
            self._check_size(message)
            try:
                sender, generation = await self._channel.ready(deadline)
            except BrokerUnavailable as error:
                if self._channel.generation:  # connected once: an outage, not a wrong URL
                    raise self._outlasted(message, str(error)) from None
                raise
            try:
                await within(deadline, sender.send(message))
            except aiormq.exceptions.DeliveryError as error:
                first_nacked = first_nacked or time.monotonic()
                self._check_refusals(message, error, first_nacked, deadline)
                # A quorum queue refuses while it elects a leader; a fresh channel helps.
                await self._channel.lost(generation)
                await _pause(backoff, deadline)
                continue
            except asyncio.TimeoutError:
                raise self._confirm_timed_out(message) from None
            except AIO_CONNECTION_LOST as error:
                if self._channel.learn_size_limit(error):
                    # RabbitMQ closed the channel for an event over max_message_size:
                    # that one fails alone (above), the others go out again at once.
                    await self._channel.lost(generation)
                    continue
                pause = self._channel.note_outage(error)
                await self._channel.lost(generation)
                self._check_deadline(message, deadline)
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                continue
            if observability.listening():
                observability.notify(
                    Occurrence("published", message.routing_key, message.message_id)
                )
            return

    def _check_refusals(
        self, message: OutgoingMessage, error: BaseException, first_nacked: float, deadline: float
    ) -> None:
        """Raise EventRefused once refusals went on for ``NACK_GRACE`` or the deadline passed."""
        now = time.monotonic()
        if now - first_nacked >= NACK_GRACE or now >= deadline:
            raise EventRefused(
                f"RabbitMQ refused event {message.message_id} ({message.routing_key}) "
                f"on {self.masked_url}: {type(error).__name__}"
            ) from None

    def _check_size(self, message: OutgoingMessage) -> None:
        refused = self._channel.too_large(message)
        if refused is not None:
            raise refused

    def _check_deadline(self, message: OutgoingMessage, deadline: float) -> None:
        """Raise BrokerUnavailable when the connection is lost and no time is left."""
        if time.monotonic() >= deadline:
            raise self._outlasted(message) from None

    def _confirm_timed_out(self, message: OutgoingMessage) -> ConfirmTimeout:
        # aio-pika does not tell whether RabbitMQ blocks publishers (aiormq keeps
        # connection.blocked to itself): the wording names the alarm as a cause to check.
        return confirm_timed_out(
            self.masked_url, naming(message.routing_key, message.message_id), None
        )

    def _outlasted(self, message: OutgoingMessage, last_error: str = "") -> BrokerUnavailable:
        what = naming(message.routing_key, message.message_id)
        return outage_outlasted(self.masked_url, what, last_error)


async def _pause(backoff: Backoff, deadline: float) -> None:
    """The backoff's next delay, never past ``deadline``."""
    await asyncio.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
