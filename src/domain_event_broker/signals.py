"""Stopping on SIGTERM and SIGINT: one handling for the subscriber and the outbox relay.

The first signal asks the process to stop gracefully; a second one stops it at
once (``SystemExit``). A signal handler runs on the main thread between two
bytecodes, possibly while that thread holds a lock (a ``threading.Event``'s
condition, a wake-up lock), so ``request_stop`` must not take one: set a plain
flag that the main thread looks at. :class:`StopFlag` is such a flag.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """A stop request that a signal handler can make without taking any lock.

    ``request()`` also calls ``on_request`` (e.g. waking an I/O loop) and is for
    ordinary threads; ``request_from_signal()`` only sets the flag, which the
    main thread sees within one :meth:`sleep` slice.
    """

    #: Longest a :meth:`sleep` goes without looking at the flag.
    SLICE = 0.1

    def __init__(self) -> None:
        self._requested = False
        self.on_request: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self._requested

    def request(self) -> None:
        self._requested = True
        callback = self.on_request
        if callback is not None:
            callback()

    def request_from_signal(self) -> None:
        self._requested = True  # one store: no lock, nothing that can block

    def clear(self) -> None:
        self._requested = False

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, returning soon after a stop is requested."""
        end = time.monotonic() + seconds
        while not self._requested:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.SLICE, left))


def stop_on_signals(
    request_stop: Callable[[], None], *, stopping: str, at_once: str
) -> Callable[[], None]:
    """On SIGTERM/SIGINT call ``request_stop()``; on a second one raise ``SystemExit``.

    ``request_stop`` runs inside the signal handler: it must not block (see the
    module's notes). ``stopping`` and ``at_once`` finish the log lines, e.g.
    ``"finishing in-flight events, then stopping"`` and ``"unacked events are
    redelivered"``. Returns a function that puts the previous handlers back.
    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    received = [False]

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received[0]:
            log.warning("second %s: stopping at once; %s", name, at_once)
            raise SystemExit(128 + signum)
        received[0] = True
        log.info("%s: %s; send it again to stop at once", name, stopping)
        request_stop()

    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, on_signal)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
