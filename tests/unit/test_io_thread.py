"""The publisher's I/O thread: an error in a callback is reported and the loop keeps running."""

from __future__ import annotations

import threading
import time

from domain_event_broker.publisher import _IOThread


def test_an_error_in_a_callback_is_reported_and_the_thread_runs_on() -> None:
    errors: list[BaseException] = []
    exits: list[BaseException | None] = []
    ran = threading.Event()
    io = _IOThread("test-io", errors.append, exits.append)

    def broken() -> None:
        raise ValueError("a bug")

    io.start(broken)
    io.call_soon(io.guard(broken))
    io.call_soon(io.guard(ran.set))
    try:
        assert ran.wait(5)
        assert io.alive
        assert [str(error) for error in errors] == ["a bug", "a bug"]
        assert exits == []
    finally:
        io.call_soon(io.ioloop.stop)
        io.join(5)
    assert not io.alive
    assert exits == [None]


def test_a_loop_that_stops_on_an_error_reports_it() -> None:
    exits: list[BaseException | None] = []
    io = _IOThread("test-io", lambda error: None, exits.append)

    def escapes() -> None:
        raise KeyboardInterrupt  # not an Exception: the guard lets it through

    io.start(lambda: io.ioloop.add_callback_threadsafe(escapes))
    io.join(5)
    assert not io.alive
    assert len(exits) == 1 and isinstance(exits[0], KeyboardInterrupt)


def test_another_thread_may_take_the_lock_while_the_loop_waits_and_unregister_a_socket() -> None:
    """A caller that borrows the loop (publisher.direct) and lets pika drop a socket
    while the loop waits must not leave the loop with events for a handler gone."""
    import socket

    exits: list[BaseException | None] = []
    errors: list[BaseException] = []
    io = _IOThread("test-io", errors.append, exits.append)
    assert io.lendable
    ours, theirs = socket.socketpair()
    seen: list[int] = []
    ran = threading.Event()
    io.start(lambda: io.ioloop.add_handler(ours.fileno(), lambda fd, events: seen.append(fd), 1))
    try:
        time.sleep(0.2)  # the loop waits, the socket quiet
        assert io.lock.acquire(timeout=5)  # the loop lets go of it while it waits
        try:
            theirs.send(b"x")  # readable: the waiting loop wakes and wants the lock back
            time.sleep(0.1)
            io.ioloop.remove_handler(ours.fileno())  # as pika does when a borrower read EOF
        finally:
            io.lock.release()
        io.call_soon(io.guard(ran.set))
        assert ran.wait(5)
        assert io.alive
        assert errors == [] and exits == [] and seen == []
    finally:
        io.call_soon(io.ioloop.stop)
        io.join(5)
        ours.close()
        theirs.close()
    assert exits == [None]
