"""The publisher's I/O thread: one pika I/O loop that no exception ends unnoticed."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pika.adapters.select_connection import IOLoop

from .._pika import wait_unlocked

log = logging.getLogger(__package__)

_F = TypeVar("_F", bound=Callable[..., Any])


class IOThread:
    """Runs one pika I/O loop on a daemon thread; no exception ends it unnoticed.

    Every callback handed to pika goes through :meth:`guard`: an unexpected
    exception in it is logged and given to ``on_error`` (which fails the
    affected publishes), and the loop keeps running. Should the loop itself
    stop on an error, ``on_exit`` fails every publish still waiting at once.

    The thread holds :attr:`lock` except while it waits for I/O: another thread
    that takes it may use the loop's pika objects meanwhile (a caller
    publishing on an idle connection, :mod:`.direct`).
    """

    def __init__(
        self,
        name: str,
        on_error: Callable[[BaseException], None],
        on_exit: Callable[[BaseException | None], None],
    ) -> None:
        self.ioloop = IOLoop()
        self.lock = threading.Lock()
        #: Whether other threads may use the loop's pika objects while they hold :attr:`lock`.
        self.lendable = wait_unlocked(self.ioloop, self.lock)
        self._on_error = on_error
        self._on_exit = on_exit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, first: Callable[[], None]) -> None:
        self._first = first
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the I/O thread (from any thread)."""
        self.ioloop.add_callback_threadsafe(callback)

    def join(self, timeout: float) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def guard(self, callback: _F) -> _F:
        """``callback``, made unable to kill the I/O thread."""

        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception as error:
                log.exception("unexpected error in the publisher's I/O thread (%s)", error)
                self._on_error(error)
                return None

        return guarded  # type: ignore[return-value]

    def _run(self) -> None:
        stopped_by: BaseException | None = None
        self.lock.acquire()
        try:
            self.guard(self._first)()
            self.ioloop.start()
        except BaseException as error:
            stopped_by = error
            log.exception("the publisher's I/O thread stopped on an error")
        finally:
            try:
                self._on_exit(stopped_by)
                self.ioloop.close()
            finally:
                self.lock.release()
