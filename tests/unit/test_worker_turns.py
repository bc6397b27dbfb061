"""The worker pool's I/O turn, without a broker: passes are plain functions here.

What a subscriber relies on: one pass at a time (pika is not thread-safe); at
most ``workers`` handlers at once; passes go on (heartbeats) while every
worker is in a handler; every delivery handled once; a pass that raises
reaches the caller; and the thread whose pass brought an event handles it.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain_event_broker import DomainEvent
from domain_event_broker.core.acks import Ticket
from domain_event_broker.core.outcome import Action, Outcome
from domain_event_broker.subscriber.delivery import Delivery, Registration
from domain_event_broker.subscriber.workers import WorkerPool
from domain_event_broker.topology import SubscriberTopology


class Recorder:
    """Watches handlers and passes: how many at once, on which threads, in what order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handling = 0
        self.most_handling = 0
        self.in_pass = False
        self.overlapping_passes = 0
        self.handled: list[int] = []
        self.handled_on: dict[int, int] = {}
        self.outcomes: list[Action] = []

    def handler(self, pause: Callable[[int], float]) -> Callable[[DomainEvent], None]:
        def handle(event: DomainEvent) -> None:
            number = event.data["n"]
            with self.lock:
                self.handling += 1
                self.most_handling = max(self.most_handling, self.handling)
                self.handled_on[number] = threading.get_ident()
            time.sleep(pause(number))
            with self.lock:
                self.handling -= 1
                self.handled.append(number)

        return handle

    def on_done(self, delivery: Delivery, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome.action)


def delivery(registration: Registration, number: int) -> Delivery:
    body = DomainEvent("turns.happened", {"n": number}).to_json().encode()
    return Delivery(
        registration, Ticket(0, number + 1), "turns.happened", pika.BasicProperties(), body
    )


def pool_for(
    size: int, recorder: Recorder, pause: Callable[[int], float]
) -> tuple[WorkerPool, Registration]:
    registration = Registration(
        recorder.handler(pause), SubscriberTopology("turns", ("turns.#",)), 0
    )
    pool = WorkerPool(size, recorder.on_done, lambda ticket: True, lambda raised: None)
    return pool, registration


@contextlib.contextmanager
def started(
    size: int, recorder: Recorder, pause: Callable[[int], float]
) -> Iterator[tuple[WorkerPool, Registration]]:
    """A started pool whose handler is the recorder's (stopped on the way out)."""
    pool, registration = pool_for(size, recorder, pause)
    pool.start()
    try:
        yield pool, registration
    finally:
        pool.stop()


def run_passes(
    pool: WorkerPool,
    recorder: Recorder,
    arrivals: list[list[Delivery]],
    until: Callable[[], bool],
) -> int:
    """Run passes (the n-th submits ``arrivals[n]``) until ``until()``, or for 10 s at
    most (the caller's assertions then say what is missing); how many ran."""
    passes = 0
    give_up = time.monotonic() + 10

    def one_pass() -> bool:
        nonlocal passes
        with recorder.lock:
            if recorder.in_pass:
                recorder.overlapping_passes += 1
            recorder.in_pass = True
        try:
            if passes < len(arrivals):
                for item in arrivals[passes]:
                    pool.submit(item)
            passes += 1
            time.sleep(0.001)  # what waiting on the socket would take
            return not until() and time.monotonic() < give_up
        finally:
            with recorder.lock:
                recorder.in_pass = False

    pool.run_io(one_pass, lambda: None, lambda: False)
    return passes


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def test_the_thread_whose_pass_brought_an_event_handles_it(recorder: Recorder) -> None:
    with started(1, recorder, lambda n: 0.0) as (pool, registration):
        arrivals: list[list[Delivery]] = [[] for _ in range(5)]
        arrivals.append([delivery(registration, 0)])
        brought_by: list[int] = []
        give_up = time.monotonic() + 10

        def one_pass() -> bool:
            index = len(brought_by)
            brought_by.append(threading.get_ident())
            for item in arrivals[index] if index < len(arrivals) else []:
                pool.submit(item)
            time.sleep(0.001)
            return len(recorder.handled) < 1 and time.monotonic() < give_up

        pool.run_io(one_pass, lambda: None, lambda: False)
        assert recorder.handled == [0]
        assert recorder.handled_on[0] == brought_by[len(arrivals) - 1]
        assert recorder.outcomes == [Action.ACK]


def test_passes_go_on_while_every_worker_is_in_a_slow_handler(recorder: Recorder) -> None:
    with started(2, recorder, lambda n: 0.3) as (pool, registration):
        arrivals = [[delivery(registration, n) for n in range(6)]]
        began = time.monotonic()
        passes = run_passes(pool, recorder, arrivals, lambda: len(recorder.handled) == 6)
        elapsed = time.monotonic() - began
        assert sorted(recorder.handled) == list(range(6))
        assert recorder.most_handling == 2  # never more than ``workers`` at once
        assert recorder.overlapping_passes == 0
        assert 0.85 < elapsed < 3.0  # 3 rounds of 2 handlers of 0.3 s
        # The socket was read all along (a pass every few ms), never left for 0.3 s.
        assert passes > 100


def test_a_pass_that_raises_reaches_the_caller_and_the_pool_goes_on(recorder: Recorder) -> None:
    with started(1, recorder, lambda n: 0.0) as (pool, registration):

        def broken() -> bool:
            raise ConnectionResetError("the broker went away")

        with pytest.raises(ConnectionResetError, match="went away"):
            pool.run_io(broken, lambda: None, lambda: False)
        run_passes(
            pool, recorder, [[delivery(registration, 1)]], lambda: len(recorder.handled) == 1
        )
        assert recorder.handled == [1]


def test_an_interrupted_caller_gets_the_turn_back_before_it_goes_on(recorder: Recorder) -> None:
    woken = threading.Event()
    passes_after: list[float] = []
    with started(1, recorder, lambda n: 0.0) as (pool, _registration):

        def one_pass() -> bool:
            if woken.is_set():
                passes_after.append(time.monotonic())
            time.sleep(0.005)
            return True

        def stopping() -> bool:
            raise KeyboardInterrupt  # as Ctrl-C would, on the caller's thread

        with pytest.raises(KeyboardInterrupt):
            pool.run_io(one_pass, woken.set, stopping)
        given_back = time.monotonic()
        time.sleep(0.05)
        assert woken.is_set()
        assert all(at <= given_back for at in passes_after)  # no pass after run_io left


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(1, 4),
    arrivals=st.lists(st.integers(0, 5), min_size=1, max_size=12),
    pauses=st.lists(st.sampled_from([0.0, 0.0005, 0.003]), min_size=1, max_size=8),
)
def test_every_event_is_handled_once_by_at_most_size_workers_one_pass_at_a_time(
    size: int, arrivals: list[int], pauses: list[float]
) -> None:
    recorder = Recorder()
    with started(size, recorder, lambda n: pauses[n % len(pauses)]) as (pool, registration):
        batches: list[list[Delivery]] = []
        number = 0
        for count in arrivals:
            batches.append([delivery(registration, number + i) for i in range(count)])
            number += count
        run_passes(pool, recorder, batches, lambda: len(recorder.handled) >= number)
    assert sorted(recorder.handled) == list(range(number))
    assert recorder.most_handling <= size
    assert recorder.overlapping_passes == 0
    assert recorder.outcomes == [Action.ACK] * number


def test_when_the_passes_end_the_worker_that_ran_them_does_not_add_a_handler(
    recorder: Recorder,
) -> None:
    # A stop: the passes end while a handler runs and events wait; the freed worker
    # must not start one beside it (workers=1 means one handler at a time).
    with started(1, recorder, lambda n: 0.2) as (pool, registration):
        arrivals = [[delivery(registration, n) for n in range(3)]]
        run_passes(pool, recorder, arrivals, lambda: recorder.handling >= 1)
        deadline = time.monotonic() + 5
        while len(recorder.handled) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(recorder.handled) == [0, 1, 2]
        assert recorder.most_handling == 1


def test_a_quick_handler_that_is_slow_once_leaves_the_socket_unread_only_briefly(
    recorder: Recorder,
) -> None:
    # Events flow (one every 20 passes, for about a second) and their handlers are
    # quick: the turn is lent to them, nobody woken. The last one takes 0.3 s: it
    # must not leave the socket unread (heartbeats, other events) for long.
    pass_times: list[float] = []
    with started(1, recorder, lambda n: 0.3 if n == 60 else 0.0) as (pool, registration):
        arrivals: list[list[Delivery]] = []
        for number in range(61):
            arrivals += [[]] * 19 + [[delivery(registration, number)]]

        def all_handled() -> bool:  # asked once per pass: the times of the passes
            pass_times.append(time.monotonic())
            return len(recorder.handled) == 61

        run_passes(pool, recorder, arrivals, all_handled)
        assert sorted(recorder.handled) == list(range(61))
        gaps = [later - earlier for earlier, later in itertools.pairwise(pass_times)]
        assert max(gaps) < 0.1, f"the socket went unread for {max(gaps):.3f} s"
        assert recorder.overlapping_passes == 0
