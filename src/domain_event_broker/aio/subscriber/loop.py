"""The consume loop: open a session, consume until it is lost or a stop is asked, drain, repeat.

A lost connection is reopened with backoff (the topology declared again by
``Sessions.open``). While a session is live, :meth:`ConsumeLoop.housekeeping`
runs every ``HOUSEKEEPING_INTERVAL`` seconds. Connection loss and recovery are
logged in one place (:meth:`ConsumeLoop.note_outage`, :meth:`ConsumeLoop.note_recovery`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ...connection import Backoff
from ..connection import CONNECTION_LOST
from .session import Session, Sessions, log
from .workers import Workers

#: Seconds between two :meth:`ConsumeLoop.housekeeping` calls while consuming.
HOUSEKEEPING_INTERVAL = 30.0


class ConsumeLoop:
    """One :meth:`AsyncSubscriber.run`: reconnects until ``stopping`` is set, then drains."""

    def __init__(
        self,
        sessions: Sessions,
        workers: Workers,
        stopping: asyncio.Event,
        masked_url: str,
        grace_period: Callable[[], float],
    ) -> None:
        self.sessions = sessions
        self.workers = workers
        self.stopping = stopping
        self.masked_url = masked_url
        self.grace_period = grace_period  # a second signal sets it to 0 while draining
        self._outage_started: float | None = None

    async def run(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                session = await self.sessions.open(self.workers.on_message_of)
            except CONNECTION_LOST as error:
                self.note_outage(error)
                await wait_any(backoff.next_delay(), self.stopping)
                continue
            names = [registration.topology.name for registration in self.sessions.registrations]
            log.info("asyncio subscriber consuming %s on %s", ", ".join(names), self.masked_url)
            backoff.reset()
            self.note_recovery()
            await self._consume(session)
            if self.stopping.is_set():
                await self._drain(session)
            else:
                self.note_outage(None)
            await self.sessions.close(session)

    async def _consume(self, session: Session) -> None:
        """Until the session is lost or a stop is asked, with housekeeping now and then."""
        while not (session.lost.is_set() or self.stopping.is_set()):
            await wait_any(HOUSEKEEPING_INTERVAL, session.lost, self.stopping)
            if not (session.lost.is_set() or self.stopping.is_set()):
                await self.housekeeping(session)

    async def housekeeping(self, session: Session) -> None:
        """Periodic chores of a live session (none yet): the one place to add them."""

    async def _drain(self, session: Session) -> None:
        """Stop taking events; let in-flight handlers finish and settle them."""
        workers = self.workers
        workers.draining = True
        try:
            for queue, tag in session.consumers:
                await queue.cancel(tag)
        except CONNECTION_LOST as error:
            log.warning(
                "connection lost while stopping (%s); unacked events are redelivered", error
            )
            return
        grace_period = self.grace_period()
        deadline = time.monotonic() + grace_period
        while workers.busy(session) and time.monotonic() < deadline:
            if session.lost.is_set():
                return
            await asyncio.sleep(0.02)
        if workers.in_flight:
            log.warning(
                "%d events still being handled after the %.0f s grace period; "
                "RabbitMQ redelivers them",
                workers.in_flight,
                grace_period,
            )

    # Connection loss and recovery: the one place that logs them -----------------------
    def note_outage(self, error: BaseException | None) -> None:
        if self._outage_started is None:
            self._outage_started = time.monotonic()
            log.warning(
                "asyncio subscriber lost RabbitMQ at %s (%s); reconnecting",
                self.masked_url,
                type(error).__name__ if error is not None else "connection closed",
            )

    def note_recovery(self) -> None:
        if self._outage_started is not None:
            log.warning(
                "asyncio subscriber reconnected to RabbitMQ at %s after %.1f s",
                self.masked_url,
                time.monotonic() - self._outage_started,
            )
            self._outage_started = None


async def wait_any(timeout: float, *events: asyncio.Event) -> None:
    """Until one of ``events`` is set, or ``timeout`` seconds have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
