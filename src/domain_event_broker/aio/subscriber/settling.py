"""Settling a delivery by its outcome on the channel it came from: ack, copy then ack, or nack.

Handled (and dropped) events are acked together, once the loop has run what
is ready: one ``multiple`` ack where they are in order. A retry or dead-letter
copy is stored, confirmed, before its event is acked; a refused copy sends the
event back to its queue after a pause. A delivery of a lost channel is never
settled: RabbitMQ redelivers it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ...core.outcome import Action, Outcome
from ..connection import AIO_CONNECTION_LOST
from .copies import store_copy
from .session import Delivery, Session, Sessions

log = logging.getLogger(__package__)


class Settler:
    """Acks, nacks and stores copies for the deliveries of the current session."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self._flushes: set[asyncio.Task[None]] = set()

    async def settle(self, delivery: Delivery, outcome: Outcome, retries: int | None) -> None:
        session = self.sessions.current
        if session is None or session.generation != delivery.generation:
            return  # its channel is gone; RabbitMQ redelivers the event
        message = delivery.message
        tag = message.delivery_tag or 0
        try:
            if outcome.action is Action.ACK or outcome.action is Action.DROP:
                self._ack_later(session, delivery)
                return
            if outcome.action is Action.REQUEUE:
                await message.nack(requeue=True)
            elif await store_copy(session, delivery, outcome, retries or 0):
                delivery.registration.refused.stored()
                await message.ack()
            else:
                # Refused: back to its queue, after a pause so that it is no hot loop.
                refused = delivery.registration.refused
                now = time.monotonic()
                refused.refused(now)
                await asyncio.sleep(refused.paused_until - now)
                await message.nack(requeue=True)
            session.acks.settled(tag)
        except AIO_CONNECTION_LOST as error:
            # The channel is gone: the unsettled event comes back by itself.
            log.warning(
                "subscriber %s: could not settle event %s (%s); RabbitMQ redelivers it",
                delivery.registration.topology.name,
                message.message_id,
                type(error).__name__,
            )
            session.lost.set()

    def _ack_later(self, session: Session, delivery: Delivery) -> None:
        """Acked with others, once the loop has run what is ready."""
        session.acks.handled.append((delivery.message.delivery_tag or 0, delivery.message))
        if not session.flush_scheduled:
            session.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._schedule_flush, session)

    def _schedule_flush(self, session: Session) -> None:
        session.flush_scheduled = False
        task = asyncio.get_running_loop().create_task(self._flush_acks(session))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_acks(self, session: Session) -> None:
        """Ack the handled events (one multiple ack where they are in order)."""
        async with session.ack_lock:  # a later multiple ack must not overtake these
            if not session.acks.handled or session.generation != self.sessions.generation:
                return
            try:
                channel = session.acks.handled[0][1].channel
                last, singles = session.acks.take()
                if last:
                    await channel.basic_ack(last, multiple=True)
                for tag in singles:
                    await channel.basic_ack(tag)
            except AIO_CONNECTION_LOST as error:
                log.warning(
                    "could not ack handled events (%s); RabbitMQ redelivers them",
                    type(error).__name__,
                )
                session.lost.set()

    @staticmethod
    def acks_pending(session: Session) -> bool:
        """Handled events of ``session`` not acked yet (or being acked)."""
        return bool(session.acks.handled) or session.ack_lock.locked()
