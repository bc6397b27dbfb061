"""The publisher's I/O thread: an error in a callback is reported and the loop keeps running."""

from __future__ import annotations

import threading

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
