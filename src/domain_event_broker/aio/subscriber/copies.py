"""Storing the retry or dead-letter copy of a delivery, confirmed by the broker, before the ack.

A retry copy goes to the wait queue of its delay (declared again if it was
deleted); a dead-letter copy to the dead-letter exchange, or straight into the
dead-letter queue when the exchange has no binding for its key. A copy the
broker refuses, or one the client cannot even write, is reported as not
stored: the caller sends the event back to its queue after a pause.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ...copies import copied_fields
from ...core.outcome import Action, Outcome, failure_headers, retry_headers
from ...topology import ROUTING_KEY_HEADER
from .session import Delivery, Message, Session

log = logging.getLogger(__package__)

#: Seconds to wait for the broker's confirm of a retry or dead-letter copy.
CONFIRM_TIMEOUT = 30.0

#: Errors of a copy that cannot be written at all (never a dead worker for them).
_UNWRITABLE: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    UnicodeError,
    aiormq.exceptions.AMQPError,
)
_REFUSED_OR_UNWRITABLE: tuple[type[BaseException], ...] = (
    aiormq.exceptions.DeliveryError,
    asyncio.TimeoutError,
    *_UNWRITABLE,
)
#: Returned (no queue took it), or its exchange is gone (channel closed).
_MISROUTED = (aiormq.exceptions.PublishError, aiormq.exceptions.ChannelNotFoundEntity)


async def store_copy(session: Session, delivery: Delivery, outcome: Outcome, retries: int) -> bool:
    """Store a retry or dead-letter copy; False when the broker refused it (or it is unwritable)."""
    registration = delivery.registration
    topology = registration.topology
    message = delivery.message
    # A copy back from a wait queue arrives with the queue's name as its routing key.
    routing_key = topology.event_routing_key(message.routing_key or "", message.headers)
    channel = await session.publish_channel()
    if outcome.action is Action.RETRY:
        headers = retry_headers(message.headers, retries)
        headers[ROUTING_KEY_HEADER] = routing_key
        exchange, key = await registration.wait_queues.route(channel, _delay_ms(outcome))
    else:
        when = datetime.now(timezone.utc).isoformat()
        headers = failure_headers(message.headers, outcome, topology.name, retries, when)
        exchange, key = topology.dead_letter_exchange, routing_key
    try:
        try:
            await publish_copy(channel, exchange, key, message, headers)
        except _MISROUTED:
            await _publish_elsewhere(session, delivery, outcome, headers, routing_key)
    except _REFUSED_OR_UNWRITABLE as error:
        # Refused, or a copy the client cannot even write (e.g. a header of
        # another publisher's): the event goes back to its queue after a pause.
        log.error(
            "subscriber %s: could not store the %s copy of event %s (%s): %s; "
            "returning it to the queue",
            topology.name,
            outcome.action.value,
            message.message_id,
            routing_key,
            type(error).__name__,
        )
        return False
    return True


async def _publish_elsewhere(
    session: Session,
    delivery: Delivery,
    outcome: Outcome,
    headers: dict[str, Any],
    routing_key: str,
) -> None:
    """The second try of a copy that was returned or whose exchange is gone."""
    registration = delivery.registration
    channel = await session.publish_channel()
    if outcome.action is Action.RETRY:
        # The wait queue was deleted behind our back: declare it again.
        registration.wait_queues.forget()
        exchange, key = await registration.wait_queues.route(channel, _delay_ms(outcome))
        await publish_copy(channel, exchange, key, delivery.message, headers)
    else:
        # The dead-letter exchange has no binding for this key (binding keys
        # changed?): put it straight into the dead-letter queue.
        headers[ROUTING_KEY_HEADER] = routing_key
        queue = registration.topology.dead_letter_queue
        await publish_copy(channel, "", queue, delivery.message, headers)


def _delay_ms(outcome: Outcome) -> int:
    return round(outcome.delay * 1000)


async def publish_copy(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    original: Message,
    headers: dict[str, Any],
) -> None:
    """Publish a persistent copy of ``original`` and wait for the broker's confirm."""
    copy = aio_pika.Message(original.body, **copied_fields(original, headers))
    target = await channel.get_exchange(exchange, ensure=False) if exchange else None
    target = target or channel.default_exchange
    await asyncio.wait_for(target.publish(copy, routing_key, mandatory=True), CONFIRM_TIMEOUT)
