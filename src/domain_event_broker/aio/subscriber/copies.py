"""Storing the retry or dead-letter copy of a delivery, confirmed by the broker, before the ack.

A retry copy goes to the wait queue of its delay (declared again if it was
deleted); a dead-letter copy to the dead-letter exchange, or straight into the
dead-letter queue when the exchange has no binding for its key. A copy the
broker refuses, or one the client cannot even write, is reported as not
stored: the caller sends the event back to its queue after a pause.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ...core.copies import copied_fields, plan_copy
from ...core.defaults import PUBLISH_TIMEOUT
from ...core.outcome import Outcome
from ...errors import TopologyMismatch
from .session import Delivery, Message, Session

#: Seconds to wait for the broker's confirm of a retry or dead-letter copy (the
#: sync subscriber's ``publish_timeout`` default).
CONFIRM_TIMEOUT = PUBLISH_TIMEOUT


class CopyNotConfirmed(ConnectionError):
    """The broker did not confirm a copy in time: the connection is taken for lost.

    As on the sync side, the session ends and the original, never acked, is
    redelivered after the reconnect: a missing confirm never means "refused".
    """


#: Errors of a copy that cannot be written at all (never a dead worker for them).
_UNWRITABLE: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    UnicodeError,
    aiormq.exceptions.AMQPError,
    TopologyMismatch,  # a wait queue left with other arguments
)
#: Returned (no queue took it), or its exchange is gone (channel closed).
_MISROUTED = (aiormq.exceptions.PublishError, aiormq.exceptions.ChannelNotFoundEntity)


async def store_copy(
    session: Session, delivery: Delivery, outcome: Outcome, retries: int
) -> str | None:
    """Store a retry or dead-letter copy: None once confirmed, else why it was not stored
    (the broker refused it, or it cannot even be written).

    Raises :class:`CopyNotConfirmed` (a lost connection) when no confirm came in time.
    """
    message = delivery.message
    # A copy back from a wait queue arrives with the queue's name as its routing key.
    routing_key = delivery.registration.topology.event_routing_key(
        message.routing_key or "", message.headers
    )
    failed_at = datetime.now(timezone.utc).isoformat()
    attempt = _Attempt(session, delivery, outcome, retries, routing_key, failed_at)
    try:
        try:
            await attempt.publish(fallback=False)
        except _MISROUTED:
            await attempt.publish(fallback=True)
    except TopologyMismatch as error:
        return str(error)  # names the queue and how to migrate
    except _MISROUTED:
        return "unroutable"
    except aiormq.exceptions.DeliveryError as error:
        return f"refused by RabbitMQ ({type(error).__name__})"
    except _UNWRITABLE as error:
        # e.g. a header of another publisher's; aiormq's text may quote a URL: type only.
        return f"cannot be written ({type(error).__name__})"
    return None


@dataclass(frozen=True)
class _Attempt:
    """One copy to store: its first route, or the fallback after the first was returned."""

    session: Session
    delivery: Delivery
    outcome: Outcome
    retries: int
    routing_key: str
    failed_at: str

    async def publish(self, *, fallback: bool) -> None:
        message = self.delivery.message
        registration = self.delivery.registration
        plan = plan_copy(
            registration.topology,
            self.outcome,
            message.headers,
            self.retries,
            self.routing_key,
            failed_at=self.failed_at,
            fallback=fallback,
        )
        channel = await self.session.publish_channel()
        if plan.wait_queue_ms is not None:
            if fallback:
                registration.wait_queues.forget()  # deleted behind our back: declare again
            await registration.wait_queues.ensure(channel, plan.wait_queue_ms)
        await publish_copy(
            channel,
            plan.exchange,
            plan.routing_key,
            message,
            plan.headers,
            timeout=self.session.publish_timeout,
        )


async def publish_copy(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    original: Message,
    headers: dict[str, Any],
    *,
    timeout: float = CONFIRM_TIMEOUT,
) -> None:
    """Publish a persistent copy of ``original``; wait ``timeout`` s for the broker's confirm."""
    copy = aio_pika.Message(original.body, **copied_fields(original, headers))
    target = await channel.get_exchange(exchange, ensure=False) if exchange else None
    target = target or channel.default_exchange
    try:
        await asyncio.wait_for(target.publish(copy, routing_key, mandatory=True), timeout)
    except asyncio.TimeoutError:
        raise CopyNotConfirmed(
            f"RabbitMQ did not confirm a copy of event {original.message_id} within {timeout:g} s"
        ) from None
