"""Settling a delivery by its outcome on the channel it came from: ack, copy then ack, or nack.

Handled (and dropped) events are acked together, once the loop has run what
is ready: one ``multiple`` ack where they are in order. A retry or dead-letter
copy is stored, confirmed, before its event is acked; a refused copy sends the
event back to its queue after a pause. A delivery of a lost channel is never
settled: RabbitMQ redelivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ...core.outcome import Action, Outcome
from ..connection import AIO_CONNECTION_LOST
from .copies import store_copy
from .session import Delivery, Session, Sessions, is_bug, is_live

log = logging.getLogger(__package__)


class Settler:
    """Acks, nacks and stores copies for the deliveries of the current session."""

    def __init__(self, sessions: Sessions, resubmit: Callable[[Delivery], None]) -> None:
        self.sessions = sessions
        #: Hands an ordered subscriber's next event (or a due retry) to the workers.
        self.resubmit = resubmit
        #: Ordered subscribers' retries, held unacked until due (or a stop).
        self._held: set[asyncio.Task[None]] = set()
        self._flushes: set[asyncio.Task[None]] = set()
        #: Refused events waiting out their pause before they go back to their queue.
        self._returns: set[asyncio.Task[None]] = set()
        self._released = asyncio.Event()

    async def settle(self, delivery: Delivery, outcome: Outcome, retries: int | None) -> None:
        session = self.sessions.current
        if session is None or session.generation != delivery.generation:
            return  # its channel is gone; RabbitMQ redelivers the event
        message = delivery.message
        tag = message.delivery_tag or 0
        if delivery.on_settled is not None:
            await self._settle_history(session, delivery, outcome, retries)
            return
        try:
            if outcome.action is Action.ACK or outcome.action is Action.DROP:
                self._ack_later(session, delivery)
                self._next_of(session, delivery)
                return
            if outcome.action is Action.REQUEUE:
                await self._requeue(session, delivery)
                return
            if outcome.action is Action.RETRY and delivery.registration.topology.partitions:
                self._hold_retry(session, delivery, outcome.delay)
                return
            else:
                refusal = await store_copy(session, delivery, outcome, retries or 0)
                if refusal is not None:
                    # Back to its queue after a pause, so that it is no hot loop. The
                    # pause is not the worker's: other events go on meanwhile.
                    self._return_later(session, delivery, outcome, refusal)
                    return
                delivery.registration.refused.stored()
                await message.ack()
            session.acks.settled(tag)
            self._next_of(session, delivery)
        except AIO_CONNECTION_LOST as error:
            # The channel is gone: the unsettled event comes back by itself.
            _give_up_session(
                session,
                error,
                f"subscriber {delivery.registration.topology.name}: could not settle event "
                f"{message.message_id}",
            )

    async def _settle_history(
        self, session: Session, delivery: Delivery, outcome: Outcome, retries: int | None
    ) -> None:
        """A history event: settled once handled or its copy stored (the hand-over acks it).

        A stream takes no nack: an event that would go back to its queue ends the
        session instead, and the next one reads on from the saved progress.
        """
        assert delivery.on_settled is not None and delivery.offset is not None
        try:
            if outcome.action is not Action.ACK and outcome.action is not Action.DROP:
                if outcome.action is Action.REQUEUE:
                    # Stopping: left in flight, so the progress saved at the close stays
                    # before it, and the drain keeps its grace period for the other
                    # handlers. Otherwise the session ends and history is read on.
                    if not session.handing_over:
                        session.lost.set()
                    return
                refusal = await store_copy(session, delivery, outcome, retries or 0)
                if refusal is not None:
                    log.error(
                        "subscriber %s: could not store the %s copy of history event %s: %s; "
                        "reading history again from the saved progress",
                        delivery.registration.topology.name,
                        outcome.action.value,
                        delivery.message.message_id,
                        refusal,
                    )
                    session.lost.set()
                    return
            delivery.on_settled(delivery)  # acked with others on the archive's channel
        except AIO_CONNECTION_LOST as error:
            _give_up_session(session, error, "could not settle a history event")

    def _return_later(
        self, session: Session, delivery: Delivery, outcome: Outcome, refusal: str
    ) -> None:
        refused = delivery.registration.refused
        now = time.monotonic()
        if refused.refused(now):  # logged once per burst of refusals, as on the sync side
            message = delivery.message
            topology = delivery.registration.topology
            log.error(
                "subscriber %s: could not store the %s copy of event %s (%s): %s; the event "
                "goes back to its queue after a pause (up to %.0f s while copies are refused)",
                topology.name,
                outcome.action.value,
                message.message_id,
                topology.event_routing_key(message.routing_key or "", message.headers),
                refusal,
                refused.maximum,
            )
        pause = refused.paused_until - now
        task = asyncio.get_running_loop().create_task(self._return(session, delivery, pause))
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)

    async def _return(self, session: Session, delivery: Delivery, pause: float) -> None:
        """Send a refused event back to its queue once its pause is over (or at a stop)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._released.wait(), pause)
        if session.generation != self.sessions.generation:
            return  # its channel is gone; RabbitMQ redelivers the event
        message = delivery.message
        try:
            await self._requeue(session, delivery)
        except AIO_CONNECTION_LOST as error:
            _give_up_session(
                session,
                error,
                f"subscriber {delivery.registration.topology.name}: could not return event "
                f"{message.message_id} to its queue",
            )

    async def _requeue(self, session: Session, delivery: Delivery) -> None:
        """Back to its queue, and those waiting behind it too, in order (none started)."""
        for returned in (delivery, *session.line.withdraw(delivery.object_key)):
            if session.handing_over and returned.registration.topology.partitions:
                continue  # left unsettled, so that no multiple ack covers it
            message = returned.message
            await message.nack(requeue=True)
            session.acks.settled(message.delivery_tag or 0)

    def _next_of(self, session: Session, delivery: Delivery) -> None:
        if delivery.object_key is not None:
            following = session.line.done(delivery.object_key)
            if following is not None:
                self.resubmit(following)

    def _hold_retry(self, session: Session, delivery: Delivery, delay: float) -> None:
        """An ordered subscriber's retry stays here, unacked: the later events of its
        object wait behind it; a process that dies meanwhile gives it back first."""
        delivery.held_retries += 1
        task = asyncio.get_running_loop().create_task(
            self._retry_when_due(session, delivery, delay)
        )
        self._held.add(task)
        task.add_done_callback(self._held.discard)

    async def _retry_when_due(self, session: Session, delivery: Delivery, delay: float) -> None:
        released = self._released  # the release of this session's stop
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(released.wait(), delay)
        if not released.is_set() and session.generation == self.sessions.generation:
            self.resubmit(delivery)
        else:  # stopping: left for the next consumer (or its channel is gone)
            await self._return(session, delivery, 0.0)

    def release_held(self) -> None:
        """Stopping: events waiting out a refusal pause go back to their queue now."""
        self._released.set()

    def resume(self) -> None:
        """A new session after partitions were released: later retries are held again."""
        self._released = asyncio.Event()

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
                _give_up_session(session, error, "could not ack handled events")

    def acks_pending(self, session: Session) -> bool:
        """Events of ``session`` not acked yet (or being acked), or waiting to go back."""
        return bool(session.acks.handled or self._returns or self._held) or (
            session.ack_lock.locked()
        )


def _give_up_session(session: Session, error: BaseException, what: str) -> None:
    """Settling failed: end the session, so that RabbitMQ redelivers what it did not settle.

    A lost channel is an outage (WARNING). A RuntimeError on a live connection is
    a bug, not an outage (aio-pika raises RuntimeError for a gone connection too):
    it gets an ERROR with its traceback, so that a reconnect, paced by the
    supervisor's backoff, never hides it.
    """
    if is_bug(error) and is_live(session.connection):
        log.error(
            "%s: %s: %s (a bug, not an outage); reconnecting so that RabbitMQ redelivers the event",
            what,
            type(error).__name__,
            error,
            exc_info=error,
        )
    else:
        log.warning("%s (%s); RabbitMQ redelivers what was not settled", what, type(error).__name__)
    session.lost.set()
