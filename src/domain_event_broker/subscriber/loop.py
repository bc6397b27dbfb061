"""The consume loop: connect, consume, settle, housekeeping; reconnect on loss.

One pass: the workers' outcomes are settled (``Session.settle``), housekeeping
when due, then ``process_data_events`` (deliveries go to the workers). Passes
run on the worker that has the I/O turn (see workers.py; "the I/O thread" in
this package is that worker, whichever it is at the time); connecting,
draining and reconnecting run on the thread that called ``start_consuming``,
while no worker has the turn. A lost connection (or a copy the broker did not
confirm in time) ends the session: the loop reconnects with backoff, declares
the topology again and resumes; outcomes of deliveries from the lost channel
are discarded, since RabbitMQ redelivers those events. On the way out it
drains: no new deliveries, in-flight handlers get the grace period to finish
and be settled.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from .._pika import abort as abort_connection
from .._pika import server_properties
from ..connection import CONNECTION_LOST
from ..core.acks import AckBook
from ..core.defaults import HOUSEKEEPING_INTERVAL
from ..core.outcome import Action, Outcome
from ..core.rabbitmq import UNKNOWN, RabbitMQVersion
from ..core.spread import Membership
from ..core.supervisor import connection_supervisor
from ..signals import StopFlag
from .copies import CopyTimeout
from .delivery import Delivery, Registration
from .history import HandOver
from .session import ConsumerCancelled, Session
from .workers import WorkerPool

log = logging.getLogger(__package__)

LOST = (*CONNECTION_LOST, pika.exceptions.ChannelClosed, ConsumerCancelled)

#: Longest a pass of the loop waits for I/O (a stop from a signal is seen within it).
SLICE = 0.5


@dataclass(frozen=True)
class LoopOptions:
    prefetch_count: int
    workers: int
    shutdown_grace_period: float
    publish_timeout: float


class Connector:
    """The subscriber's connection: opened on demand, topology declared on every (re)connect."""

    def __init__(
        self,
        connect: Callable[[], BlockingConnection],
        registrations: list[Registration],
        hand_overs: dict[str, HandOver],
    ):
        self._connect = connect
        self._registrations = registrations
        #: A registration with a hand-over from history not done declares its own topology.
        self.hand_overs = hand_overs
        self.connection: BlockingConnection | None = None
        #: The release the node of the current connection reported.
        self.rabbitmq = UNKNOWN
        self._pid = os.getpid()

    @property
    def connected(self) -> bool:
        connection = self.connection
        return connection is not None and self._pid == os.getpid() and bool(connection.is_open)

    def ensure(self) -> BlockingConnection:
        self._forget_after_fork()
        connection = self.connection
        if connection is not None and connection.is_open:
            return connection
        connection = self.connection = self._connect()
        self.rabbitmq = RabbitMQVersion.reported(server_properties(connection))
        log.info("subscriber connected to RabbitMQ %s", self.rabbitmq)
        for registration in self._registrations:
            hand_over = self.hand_overs.get(registration.name)
            if hand_over is not None and not hand_over.done:
                continue  # the order matters: see core/history.py
            registration.topology.forget_declarations()
            registration.topology.declare_on(connection, self.rabbitmq)
        return connection

    def _forget_after_fork(self) -> None:
        # A forked child (competing consumers started with multiprocessing) has a
        # copy of the parent's socket: talking on it would mix two processes'
        # frames on one AMQP connection. Drop it unclosed; open one of its own.
        if self._pid != os.getpid():
            self.connection = None
            self._pid = os.getpid()

    def close(self, abort: bool = False, why: str = "a copy was not confirmed in time") -> None:
        self._forget_after_fork()
        connection, self.connection = self.connection, None
        if connection is None or not connection.is_open:
            return
        if abort:
            abort_connection(connection, why)
            return
        with contextlib.suppress(*LOST):
            connection.close()


class Waker:
    """Makes the I/O thread's ``process_data_events`` return when a worker has an outcome.

    Only workers and ordinary threads call :meth:`wake`; a signal handler never
    does (it could interrupt the I/O thread while it holds the lock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scheduled = False
        self._connection: BlockingConnection | None = None

    def attach(self, connection: BlockingConnection | None) -> None:
        with self._lock:
            self._connection = connection
            self._scheduled = False

    def wake(self) -> None:
        with self._lock:
            connection = self._connection
            if self._scheduled or connection is None:
                return
            self._scheduled = True
        try:
            connection.add_callback_threadsafe(_nothing)
        except (pika.exceptions.ConnectionWrongStateError, *CONNECTION_LOST):
            with self._lock:
                self._scheduled = False

    def woken(self) -> None:
        """Called by the I/O thread before it takes the outcomes: later ones wake it again."""
        with self._lock:
            self._scheduled = False


def _nothing() -> None:
    pass


class ConsumeLoop:
    """Runs the subscriber's sessions until a stop, a deadline or a handler's KeyboardInterrupt."""

    def __init__(
        self,
        connector: Connector,
        registrations: list[Registration],
        options: LoopOptions,
        stop: StopFlag,
        describe: Callable[[], str],
    ) -> None:
        self.connector = connector
        self.registrations = registrations
        self.options = options
        self.stop = stop
        self._describe = describe  # where we connect, password masked, for log lines
        self.book = AckBook()
        self.waker = Waker()
        stop.on_request = self.waker.wake
        self._completions: deque[tuple[Delivery, Outcome]] = deque()
        self.pool = WorkerPool(
            options.workers, self._on_done, self.book.is_current, self._on_interrupt
        )
        self.session: Session | None = None
        self.consuming = False
        self.last_handled_at: float | None = None
        self._interrupt: BaseException | None = None
        self._releasing = False
        self._next_housekeeping = 0.0
        #: Ordered registrations' view of their members, by name (kept across sessions).
        self.memberships: dict[str, Membership] = {}

    def run(self, deadline: float | None) -> None:
        """Consume until stopped; re-raises a KeyboardInterrupt/SystemExit a handler raised."""
        self._interrupt = None
        self._completions.clear()
        self.memberships.clear()  # a new process (a forked child) is a new member
        self.pool.start()
        names = ", ".join(registration.name for registration in self.registrations)
        supervisor = connection_supervisor(log, self._describe(), then=f"consuming {names} again")
        try:
            while not self._should_stop(deadline):
                try:
                    self._open_session()
                    supervisor.connected()
                    releasing = self._consume_until(deadline)
                    self._drain(leaving=not releasing)
                    if not releasing:
                        break
                    self._release_partitions()
                except LOST as error:
                    self.consuming = False
                    delay = supervisor.lost(error)  # logged once per outage, not per attempt
                    self._close_session(abort=isinstance(error, CopyTimeout))
                    self.stop.sleep(_capped(delay, deadline))
        except KeyboardInterrupt:
            self._drain()  # without our signal handlers (not the main thread, or turned off)
        finally:
            self.consuming = False
            self.pool.stop()
            self._close_session()
            self.connector.close()
        if self._interrupt is not None:
            raise self._interrupt

    def housekeeping(self, now: float) -> None:
        """Every few seconds on the I/O thread: upkeep that needs no delivery to trigger it.

        Not while draining: our consumers are cancelled then, so another instance's
        would look like the only one (see ``wait_queues.others_may_route``).
        """
        if self.session is not None and self.consuming:
            self.session.housekeeping(now)

    # One session ------------------------------------------------------------------------
    def _open_session(self) -> None:
        connection = self.connector.ensure()
        self.waker.attach(connection)
        session = Session.open(
            connection,
            self.book,
            self.pool.submit,
            self.options.prefetch_count,
            self.options.publish_timeout,
            self.connector.hand_overs,
            self.connector.rabbitmq,
        )
        self.session = session
        session.memberships = self.memberships
        for registration in self.registrations:
            session.consume(registration)
        self.consuming = True

    def _consume_until(self, deadline: float | None) -> bool:
        """Consume until a stop (False) or until partitions must be released (True).

        The passes run on the workers, in turn (see workers.py); what one raises
        comes back here."""
        session = self.session
        assert session is not None
        self._releasing = False
        self.pool.run_io(
            functools.partial(self._pass, session, deadline),
            self.waker.wake,
            lambda: self._should_stop(deadline),
        )
        return self._releasing

    def _pass(self, session: Session, deadline: float | None) -> bool:
        """One pass of the I/O: settle, spread, then read and dispatch. False: consuming ends.

        Reading comes last: a pass that brings a delivery ends with it, so the worker
        running the pass hands the turn on and starts the handler at once."""
        if self._should_stop(deadline):
            return False
        self._settle(session)
        if session.spread(time.monotonic()):
            self._releasing = True
            return False
        session.connection.process_data_events(time_limit=_capped(SLICE, deadline))
        return True

    def _release_partitions(self) -> None:
        """Another process's share grew into ours: end the session (drained) without a
        ``basic.cancel``, so that RabbitMQ returns our unacked events ahead of the later
        ones; then consume our new share on a new one."""
        log.info("subscriber: handing partitions over to another process; consuming again")
        self._close_session()
        self.pool.draining = False

    def _settle(self, session: Session) -> None:
        self.waker.woken()
        completions = self._completions
        taken = [completions.popleft() for _ in range(len(completions))]
        now = time.monotonic()
        session.settle(taken, now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_INTERVAL
            self.housekeeping(now)

    def _drain(self, leaving: bool = True) -> None:
        """Stop taking events; let in-flight handlers finish and settle them.

        ``leaving``: the subscriber stops (not only this session ends)."""
        self.pool.draining = True
        self.consuming = False
        session = self.session
        if session is None or not session.connection.is_open:
            return
        grace_ends = time.monotonic() + self.options.shutdown_grace_period
        try:
            session.cancel_consumers(leaving)
            while True:
                self._settle(session)
                session.release_held(time.monotonic())
                self.pool.dispatch()
                if session.unsettled == 0 or time.monotonic() >= grace_ends:
                    break
                session.connection.process_data_events(time_limit=0.05)
        except LOST as error:
            log.warning(
                "connection lost while stopping (%s); unacked events are redelivered", error
            )
            return
        if session.unsettled:
            log.warning(
                "%d events still being handled after the %.0f s grace period; "
                "RabbitMQ redelivers them",
                session.unsettled,
                self.options.shutdown_grace_period,
            )

    # Worker threads report here ------------------------------------------------------------
    def _on_done(self, delivery: Delivery, outcome: Outcome) -> None:
        if outcome.action is not Action.REQUEUE:
            self.last_handled_at = time.time()
        self._completions.append((delivery, outcome))
        self.waker.wake()

    def _on_interrupt(self, raised: BaseException) -> None:
        if self._interrupt is None:
            self._interrupt = raised
        self.stop.request()

    def _close_session(self, abort: bool = False) -> None:
        session, self.session = self.session, None
        self.waker.attach(None)
        self.book.reset()  # outcomes still on their way are stale now
        if session is not None and session.hands_over_partitions:
            # pika cancels a channel's consumers before closing it: the next process
            # would take the partitions while the events left unacked here are still
            # out. Dropped, the connection returns them first, with the partitions.
            with contextlib.suppress(*LOST):
                session.connection.process_data_events(time_limit=0)  # acks out first
            session.close_hand_overs()  # history read beside: its progress saved first
            self.connector.close(abort=True, why="handing over the ordered partitions")
            return
        if session is not None and not abort:
            session.close()
        self.connector.close(abort=abort)

    def _should_stop(self, deadline: float | None) -> bool:
        return self.stop.requested or (deadline is not None and time.monotonic() >= deadline)


def _capped(seconds: float, deadline: float | None) -> float:
    if deadline is None:
        return seconds
    return max(0.0, min(seconds, deadline - time.monotonic()))
