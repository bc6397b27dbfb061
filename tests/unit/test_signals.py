"""Stopping on signals: the handler never waits for a lock the interrupted thread holds."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from domain_event_broker import Subscriber, signals
from domain_event_broker.signals import StopFlag
from domain_event_broker.subscriber.loop import Waker


class _Connection:
    """Stands in for the connection a Waker schedules on (no broker in the unit tier)."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def add_callback_threadsafe(self, callback: Any) -> None:
        self.callbacks.append(callback)


def _installed_handler(request_stop: Any) -> tuple[Any, Any]:
    restore = signals.stop_on_signals(request_stop, stopping="stopping", at_once="at once")
    return signal.getsignal(signal.SIGTERM), restore


def test_sigterm_while_the_main_thread_holds_the_wake_lock_does_not_block() -> None:
    # The interleaving a real SIGTERM can produce: the I/O thread is inside
    # Waker.woken() (holding its lock) when the signal handler runs on it.
    subscriber = Subscriber(None)
    waker: Waker = subscriber._loop.waker
    waker.attach(_Connection())  # type: ignore[arg-type]
    handler, restore = _installed_handler(subscriber._stop.request_from_signal)
    returned = threading.Event()

    def interrupted_io_thread() -> None:
        with waker._lock:  # the lock a worker's wake-up takes
            handler(signal.SIGTERM, None)
        returned.set()

    try:
        threading.Thread(target=interrupted_io_thread, daemon=True).start()
        assert returned.wait(2), "the signal handler blocked on a lock its own thread holds"
        assert subscriber._stop.requested
    finally:
        restore()


def test_sigterm_while_the_main_thread_is_inside_an_event_wait_does_not_block() -> None:
    # threading.Event.set() takes the Event's condition lock: a handler calling it
    # could deadlock a main thread caught inside Event.wait(). StopFlag takes none.
    flag = StopFlag()
    condition_held = threading.Lock()
    handler, restore = _installed_handler(flag.request_from_signal)
    returned = threading.Event()

    def interrupted() -> None:
        with condition_held:
            handler(signal.SIGINT, None)
        returned.set()

    try:
        threading.Thread(target=interrupted, daemon=True).start()
        assert returned.wait(2)
        assert flag.requested
    finally:
        restore()


def test_a_second_signal_stops_at_once() -> None:
    flag = StopFlag()
    handler, restore = _installed_handler(flag.request_from_signal)
    try:
        handler(signal.SIGTERM, None)
        with pytest.raises(SystemExit) as stopped:
            handler(signal.SIGTERM, None)
        assert stopped.value.code == 128 + signal.SIGTERM
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is not handler


def test_a_sleep_ends_soon_after_a_stop_from_a_signal() -> None:
    flag = StopFlag()
    threading.Timer(0.2, flag.request_from_signal).start()
    started = time.monotonic()
    flag.sleep(5)
    assert time.monotonic() - started < 1


def test_stop_request_wakes_the_io_loop_but_a_signal_request_takes_no_lock() -> None:
    flag = StopFlag()
    woken: list[bool] = []
    flag.on_request = lambda: woken.append(True)
    flag.request_from_signal()
    assert woken == []
    flag.request()
    assert woken == [True]


def test_outside_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(
            signals.stop_on_signals(lambda: None, stopping="", at_once="")
        )
    )
    thread.start()
    thread.join()
    results[0]()
    assert signal.getsignal(signal.SIGTERM) is before
