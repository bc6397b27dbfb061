"""The worker pool: threads that run handlers and take turns at the connection's I/O.

Each worker takes a delivery, turns it into an outcome (``handling.handle``,
which returns for every input) and hands both back through ``on_done``. A
worker ends only when told to; each has an event loop of its own for
``async def`` handlers (see ``handlers.HandlerRunner``).

While the subscriber consumes, one worker at a time has the I/O turn: it runs
the loop's passes (settle, ack, read from the socket). When a pass brings a
delivery and another worker is idle, the worker with the turn gives the turn up
and handles the delivery itself: the thread the socket woke runs the handler,
with no thread wake-up between an event's arrival and its handler (a hand-off
to a waiting worker cost about 70 µs of a 0.5 ms round trip).

Given up how? If the recent handlers were quick (under ``QUICK`` on average)
and nothing else waits, the turn is only lent: nobody is woken (another 10-15
µs), and the worker takes it back when its handler returns, then settles that
outcome on the next pass without waking anyone either. Otherwise, or if a lent
turn lies unclaimed at the caller's next look (every ``WATCHING_CHECK``: a
quick handler that was slow this time), an idle worker is woken to take it, and
reads the socket beside the handler. Only a worker with another idle beside it
gives the turn up, so heartbeats flow however slow the handlers are, and at most
``size`` handlers run at once. A backlog (several deliveries in a pass, or
deliveries under ``DENSE`` apart) is throughput, not latency: the worker
reading goes on reading and waiting workers take the deliveries. If no worker
is free to take the turn (every one in a handler), the caller's thread runs
passes itself until one is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.acks import Ticket
from ..core.outcome import REQUEUE, Outcome, failure, fate, safe_text
from ..handlers import HandlerRunner
from .delivery import Delivery
from .handling import StopRequest, handle

log = logging.getLogger(__package__)

Done = Callable[[Delivery, Outcome], None]
#: One pass of the consume loop's I/O; False when consuming must end.
Pass = Callable[[], bool]

#: How often the caller's thread looks whether the I/O turn lies unclaimed (seconds)
#: while events flow: the longest a lent turn leaves the socket unread ...
WATCHING_CHECK = 0.01
#: ... and when no event came for ``ACTIVE_WINDOW`` seconds (then no turn is lent).
IDLE_CHECK = 0.5
ACTIVE_WINDOW = 1.0
#: Handlers quicker than this (on average, recently) keep the turn: no worker is woken.
QUICK = 0.001
#: Events closer together than this are a backlog: the worker reading keeps reading.
DENSE = 0.001


class _Turn:
    """Marks the job "take the I/O turn" (beside a delivery to handle, or the end)."""


TAKE_TURN = _Turn()


@dataclass(eq=False)
class _Shift:
    """One run's shared state: the deliveries waiting, the idle workers, the I/O turn."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Workers wait on it: a delivery queued, the turn free, the end.
    changed: threading.Condition = field(init=False)
    #: The caller's thread waits on it: the passes ended.
    io_over: threading.Condition = field(init=False)
    tasks: deque[Delivery] = field(default_factory=deque)
    idle: int = 0
    #: Workers in a handler (at most the pool's size, whoever has the I/O turn).
    handling: int = 0
    #: Seconds the recent handlers took (a moving average).
    recent_handling: float = 0.0
    ending: bool = False
    #: The loop wants passes run (between ``run_io`` and the end of it).
    io_wanted: bool = False
    #: Someone runs passes now (a worker, or the caller's thread as a fallback).
    io_taken: bool = False
    one_pass: Pass | None = None
    #: The caller's thread looks every ``WATCHING_CHECK``: a turn may be lent.
    watching: bool = False
    #: When a pass last brought deliveries with a worker idle (monotonic seconds).
    last_arrival: float = 0.0
    #: Why the passes ended: None (the pass said so), or what a pass raised.
    io_ended: BaseException | None = None

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)
        self.io_over = threading.Condition(self.lock)

    def passes_ended(self) -> None:
        """(Holding the lock.) Nobody runs passes any more: tell everyone."""
        self.io_wanted = self.io_taken = False
        self.changed.notify_all()
        self.io_over.notify_all()


@dataclass(eq=False)
class WorkerPool:
    """``size`` handler threads (and one more, for the I/O turn), deliveries in order."""

    size: int
    _on_done: Done
    _is_current: Callable[[Ticket], bool]
    _request_stop: StopRequest
    _shift: _Shift = field(default_factory=_Shift)
    #: While draining, deliveries not started yet go back to their queue unhandled.
    draining: bool = False

    def start(self) -> None:
        self.draining = False
        shift = self._shift = _Shift()
        for number in range(self.size + 1):
            threading.Thread(
                target=self._work, args=(shift,), name=f"domain-event-worker-{number}", daemon=True
            ).start()

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery; it is given out at the end of the pass (``dispatch``).

        Only the thread running passes submits, and a deque's append is atomic:
        no lock here (it costs a backlog about 1% of its rate)."""
        self._shift.tasks.append(delivery)

    def dispatch(self) -> None:
        """Wake idle workers for the deliveries queued (by the holder of the I/O)."""
        shift = self._shift
        with shift.lock:
            shift.changed.notify(_takers(shift, self.size))

    def stop(self) -> None:
        """Let every worker finish its delivery and end (without waiting for them)."""
        shift = self._shift
        with shift.lock:
            shift.ending = True
            shift.changed.notify_all()

    # The I/O turn ---------------------------------------------------------------------
    def run_io(
        self, one_pass: Pass, wake: Callable[[], None], stopping: Callable[[], bool]
    ) -> None:
        """Have ``one_pass`` run, by the workers in turn, until it returns False.

        Re-raises what a pass raised, on the caller's thread. ``wake`` makes a pass
        waiting for I/O return: called when the caller is interrupted, and when
        ``stopping()`` (a stop a signal handler asked for only sets a flag).
        """
        shift = self._shift
        with shift.lock:
            shift.one_pass = one_pass
            shift.io_ended = None
            shift.io_wanted = True
            shift.io_taken = False
            shift.changed.notify()
        try:
            self._until_io_ends(shift, wake, stopping)
        except BaseException:
            # A KeyboardInterrupt here: the worker with the turn must give it back
            # before the caller touches the connection.
            with shift.lock:
                shift.io_wanted = False
            wake()
            with shift.lock:
                while shift.io_taken:
                    shift.io_over.wait(WATCHING_CHECK)
            raise
        if shift.io_ended is not None:
            raise shift.io_ended

    def _until_io_ends(
        self, shift: _Shift, wake: Callable[[], None], stopping: Callable[[], bool]
    ) -> None:
        unclaimed_before = False
        while True:
            if stopping():
                wake()
            with shift.lock:
                if shift.io_wanted:
                    # Looking often costs about 1% of a core: only while events flow.
                    recently = time.monotonic() - shift.last_arrival < ACTIVE_WINDOW
                    shift.watching = recently
                    shift.io_over.wait(WATCHING_CHECK if recently else IDLE_CHECK)
                if not shift.io_wanted:
                    return
                # Unclaimed with no worker idle (every one in a handler), or for two
                # checks in a row: run passes here rather than leave the socket unread.
                unclaimed = not shift.io_taken
                claim = unclaimed and (not shift.idle or unclaimed_before)
                unclaimed_before = unclaimed
                if unclaimed and not claim:
                    shift.changed.notify()  # lent to a handler that is not quick this time
                if not claim:
                    continue
                shift.io_taken = True
            try:
                self._passes_in_place_of_a_worker(shift)
            except BaseException:  # a KeyboardInterrupt between passes: the turn is ours
                with shift.lock:
                    shift.passes_ended()
                raise
            unclaimed_before = False

    def _passes_in_place_of_a_worker(self, shift: _Shift) -> None:
        """Run passes on the caller's thread (it never handles) until a worker is idle."""
        assert shift.one_pass is not None
        while True:
            going_on = self._guarded_pass(shift, shift.one_pass)
            with shift.lock:
                if not going_on:
                    return
                takers = _takers(shift, self.size)
                shift.changed.notify(takers)
                if shift.idle > takers:
                    shift.io_taken = False
                    shift.changed.notify()
                    return

    def _guarded_pass(self, shift: _Shift, one_pass: Pass) -> bool:
        """One pass; False (the turn ended, for everyone) when it says so or raises."""
        try:
            going_on = shift.io_wanted and one_pass()
        except BaseException as error:  # handed to the caller's thread: never a dead worker
            with shift.lock:
                shift.io_ended = error
                shift.passes_ended()
            return False
        if not going_on:
            with shift.lock:
                shift.passes_ended()
        return going_on

    # A worker -----------------------------------------------------------------------------
    def _work(self, shift: _Shift) -> None:
        runner = HandlerRunner()
        try:
            job = self._next_job(shift, None)
            while job is not None:
                if isinstance(job, _Turn):
                    job = self._passes(shift)
                    if job is None:
                        job = self._next_job(shift, None)
                    continue
                started = time.perf_counter()
                try:
                    if self._is_current(job.ticket):  # else its channel is gone: redelivered
                        self._on_done(job, self._outcome(job, runner))
                finally:
                    job = self._next_job(shift, time.perf_counter() - started)
        finally:
            runner.close()

    def _next_job(self, shift: _Shift, handled_in: float | None) -> Delivery | _Turn | None:
        """The next job, after a handler that took ``handled_in`` seconds (None: none).

        The turn comes first: a turn lent for the handler that just returned and
        still unclaimed is taken back here."""
        with shift.lock:
            if handled_in is not None:
                shift.handling -= 1
                shift.recent_handling += (handled_in - shift.recent_handling) / 8
            while not shift.ending:
                if shift.io_wanted and not shift.io_taken:
                    shift.io_taken = True
                    if shift.tasks and shift.handling < self.size:
                        shift.changed.notify()  # they were left for the one that took this
                    return TAKE_TURN
                if shift.tasks and shift.handling < self.size:
                    shift.handling += 1
                    return shift.tasks.popleft()
                shift.idle += 1  # only while waiting: an idle worker can be woken
                shift.changed.wait()
                shift.idle -= 1
            return None

    def _passes(self, shift: _Shift) -> Delivery | None:
        """Run passes until one brings a delivery and an idle worker takes the turn over
        (the delivery returned, to handle here), or until the passes end (None)."""
        one_pass = shift.one_pass
        assert one_pass is not None
        while self._guarded_pass(shift, one_pass):
            with shift.lock:
                if not shift.tasks or not shift.idle or shift.handling >= self.size:
                    continue
                now = time.monotonic()
                dense = now - shift.last_arrival < DENSE
                shift.last_arrival = now
                if len(shift.tasks) > 1 or dense:
                    # A batch, or events close on each other's heels (a backlog):
                    # throughput, not one event's latency. Idle workers take them and
                    # this one keeps reading, as a pool would (passing the turn on
                    # each time cost a backlog 5-7% of its rate).
                    shift.changed.notify(_takers(shift, self.size))
                    continue
                shift.handling += 1
                delivery = shift.tasks.popleft()
                shift.io_taken = False  # the turn to an idle worker (nothing else queued)
                if shift.recent_handling >= QUICK or not shift.watching:
                    shift.changed.notify()
                # else lent: a quick handler alone takes it back when done, unless the
                # caller's thread sees it unclaimed first and wakes a worker for it.
                return delivery
        return None

    def _outcome(self, delivery: Delivery, runner: HandlerRunner) -> Outcome:
        if self.draining:
            return REQUEUE
        try:
            return handle(delivery, runner, self._request_stop)
        except BaseException as error:  # a bug of ours: never a dead worker, never a hot loop
            registration = delivery.registration
            outcome = failure(registration.policy, error, f"internal error: {safe_text(error)}")
            log.exception(
                "subscriber %s: could not handle event %s; %s",
                registration.name,
                delivery.event_id,
                fate(outcome.action, registration.topology.dead_letter_queue),
            )
            return outcome


def _takers(shift: _Shift, size: int) -> int:
    """How many idle workers can start on the deliveries queued now."""
    return max(0, min(shift.idle, len(shift.tasks), size - shift.handling))
