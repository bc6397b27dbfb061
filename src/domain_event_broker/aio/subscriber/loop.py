"""The consume loop: open a session, consume until it is lost or a stop is asked, drain, repeat.

A lost connection is reopened with backoff (the topology declared again by
``Sessions.open``). While a session is live, :meth:`ConsumeLoop.housekeeping`
runs every ``HOUSEKEEPING_INTERVAL`` seconds. Connection loss and recovery are
decided by the core's :class:`~domain_event_broker.core.supervisor.Supervisor`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...core import wait_queues
from ...core.defaults import HOUSEKEEPING_INTERVAL
from ...core.spread import TICK
from ...core.supervisor import Supervisor, connection_supervisor
from ..connection import AIO_CONNECTION_LOST
from .session import Session, Sessions
from .workers import Workers

log = logging.getLogger(__package__)


@dataclass(eq=False)
class ConsumeLoop:
    """One :meth:`AsyncSubscriber.run`: reconnects until ``stopping`` is set, then drains."""

    sessions: Sessions
    workers: Workers
    stopping: asyncio.Event
    masked_url: str
    grace_period: Callable[[], float]  # a second signal sets it to 0 while draining
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        # Logged once per outage (then at most once a minute), as every reconnect loop is.
        self.supervisor = connection_supervisor(
            log, self.masked_url, client="asyncio subscriber", error_text=False
        )

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                session = await self.sessions.open(self.workers.on_message_of, self.workers.submit)
            except AIO_CONNECTION_LOST as error:
                await wait_any(self.supervisor.lost(error), self.stopping)
                continue
            names = [registration.topology.name for registration in self.sessions.registrations]
            log.info("asyncio subscriber consuming %s on %s", ", ".join(names), self.masked_url)
            self.supervisor.connected()
            await self._consume(session)
            if self.stopping.is_set():
                await self._drain(session)
                await self.sessions.close(session)
                continue
            if session.releasing and not session.lost.is_set():
                await self._release_partitions(session)
                continue
            await self.sessions.close(session)
            # A session that lasted reconnects almost at once (a lost connection is
            # often one cut, not an outage); one lost right after opening backs off.
            await wait_any(self.supervisor.lost(ConnectionError("connection lost")), self.stopping)

    async def _consume(self, session: Session) -> None:
        """Until the session is lost, a stop is asked or partitions are to be released;
        housekeeping now and then."""
        next_housekeeping = 0.0
        while not (session.lost.is_set() or self.stopping.is_set()):
            # wait_queues.CHECK_INTERVAL is read at each pass, so that a test can shorten it.
            interval = min(HOUSEKEEPING_INTERVAL, wait_queues.CHECK_INTERVAL)
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + interval
            wait = min(next_housekeeping - now, TICK) if session.shares else interval
            await wait_any(wait, session.lost, self.stopping)
            if session.lost.is_set() or self.stopping.is_set():
                return
            if session.shares and await self._spread(session):
                return
            if time.monotonic() >= next_housekeeping:
                await self.housekeeping(session)

    async def _spread(self, session: Session) -> bool:
        """Take new partitions of this process's share; True when some must be released."""
        now = time.monotonic()
        try:
            session.releasing = any([await share.tick(now) for share in session.shares])
        except AIO_CONNECTION_LOST as error:
            log.warning("spreading the partitions failed (%s)", type(error).__name__)
            session.lost.set()
        return session.releasing

    async def _release_partitions(self, session: Session) -> None:
        """Another process's share grew into ours: end the session (drained) by closing its
        connection, which cancels no consumer, so that RabbitMQ returns our unacked events
        ahead of the later ones; then consume our new share on a new session."""
        log.info("subscriber: handing partitions over to another process; consuming again")
        await self._drain(session, leaving=False)
        await self.sessions.close(session)
        self.workers.draining = False
        self.workers.settler.resume()

    async def housekeeping(self, session: Session) -> None:
        """Periodic chores of a live session: remove the wait queues long unused (if empty);
        a registration waiting for another process's history lock tries again."""
        waiting, self.sessions.waiting = self.sessions.waiting, []
        try:
            for registration in waiting:
                await self.sessions.start(
                    session, registration, self.workers.on_message_of, self.workers.submit
                )
        except AIO_CONNECTION_LOST as error:
            log.warning("taking over a history lock failed (%s)", type(error).__name__)
            session.lost.set()
            return
        now = time.monotonic()
        for registration in self.sessions.registrations:
            try:
                await registration.wait_queues.remove_idle(session.connection, now)
            except AIO_CONNECTION_LOST as error:
                # The session's loss is run()'s to handle; a queue kept is tried later.
                log.debug("removing idle wait queues failed: %s", type(error).__name__)

    async def _drain(self, session: Session, leaving: bool = True) -> None:
        """Stop taking events; let in-flight handlers finish and settle them.

        ``leaving``: the subscriber stops (not only this session ends), so the other
        processes take its partitions now."""
        workers = self.workers
        workers.draining = True
        session.handing_over = True
        workers.settler.release_held()
        try:
            for share in session.shares if leaving else ():
                await share.leave()
            for queue, tag in session.consumers:
                await queue.cancel(tag)
        except AIO_CONNECTION_LOST as error:
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


async def wait_any(timeout: float, *events: asyncio.Event) -> None:
    """Until one of ``events`` is set, or ``timeout`` seconds have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
