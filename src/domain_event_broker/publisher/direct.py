"""One event on an idle connection: the caller sends it and reads its confirm itself.

Handing an event to the I/O thread and being woken with its confirm costs two
thread switches per publish, most of what a confirmed publish costs beyond the
broker's round trip. A caller that finds the connection idle (nothing in
flight, nothing waiting) therefore borrows it: holding the I/O thread's lock
(the I/O thread lets go of it only while it waits for I/O), it writes the
frames on the socket itself, takes the socket out of the I/O thread's watch,
and waits on the socket for its confirm, which it reads and dispatches through
pika under the lock. pika objects are still used by one thread at a time.

Everything else stays with the I/O thread: timers and heartbeats, reconnects,
other callers' events (they are sent by the I/O thread meanwhile, pipelined as
before), re-sending after a lost channel. Whenever the borrowed connection is
no longer the one the caller sent on, or anything but a plain write went wrong,
the caller gives the socket back and waits like any other caller.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .._pika import captured_output, read_available, set_watched, transport_socket, write_later
from ..core.confirms import ConfirmBook, Pending
from ..errors import EventRefused
from .io_thread import IOThread
from .link import Link

#: Longest single wait on the socket: a borrowing caller looks this often at
#: whether the connection it sent on is still up (the I/O thread may have lost it).
LOOK_EVERY = 0.05

_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


class DirectOwner(Protocol):
    """What :class:`DirectSend` needs of its publisher connection (a ``ConfirmingConnection``)."""

    exchange: str
    closing: bool
    book: ConfirmBook
    io: IOThread
    link: Link


class DirectSend:
    """Lets a caller that finds the publisher idle send and read its confirm itself."""

    def __init__(self, owner: DirectOwner) -> None:
        self._owner = owner
        self._lock = owner.io.lock
        self.enabled = owner.io.lendable
        #: The thread that borrows the connection now, if one does.
        self.borrower: int | None = None
        self._connection: Any = None
        self._fd = -1
        self._poll: Any = None
        self._polled_fd = -1
        # The I/O thread writes a byte here when it read a borrower's confirm itself
        # (made at the first borrow).
        self._wake_read = self._wake_write = -1

    def close(self) -> None:
        """Borrow no more; close the wake-up pipe unless a borrower may still poll it."""
        self.enabled = False
        if not self._lock.acquire(blocking=False):
            return  # the I/O thread still runs: leave the pipe (two descriptors)
        try:
            if self.borrower is None and self._wake_read >= 0:
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._wake_read = self._wake_write = -1
                self._polled_fd = -1
        finally:
            self._lock.release()

    def try_send(self, pending: Pending) -> bool:
        """Send ``pending`` now if the connection is idle; False: hand it to the I/O thread."""
        if not self.enabled or not self._lock.acquire(blocking=False):
            return False
        try:
            return self._send(pending)
        finally:
            self._lock.release()

    def _send(self, pending: Pending) -> bool:
        owner = self._owner
        link = owner.link
        if (
            self.borrower is not None
            or owner.closing
            or not link.ready
            or link.blocked_reason is not None
            or not owner.book.idle
        ):
            return False
        connection = link.connection
        sock = transport_socket(connection)
        if sock is None:
            return False
        with captured_output(connection) as frames:
            owner.book.send_new(pending, sender(link.channel, owner.exchange))
        if not frames:
            return True  # settled: refused before anything went out
        data = b"".join(frames)
        fd = sock.fileno()
        set_watched(owner.io.ioloop, fd, watched=False)
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # the I/O thread meets the error on its own write, and handles it
        if sent < len(data):
            set_watched(owner.io.ioloop, fd, watched=True)
            write_later(connection, data[sent:])
            return True
        self.borrower = threading.get_ident()
        self._connection = connection
        self._fd = fd
        return True

    def wait(self, pending: Pending, deadline: float) -> None:
        """Read the socket until ``pending`` is settled, the deadline passes or the link changes."""
        if self.borrower != threading.get_ident():
            return  # sent through pika's buffer: the I/O thread reads the confirm
        try:
            poll = self._poller()
            while not pending.settled:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                events = poll.poll(min(left, LOOK_EVERY) * 1000)
                with self._lock:
                    if not self._still_borrowed():
                        return
                    for fd, _event in events:
                        if fd == self._fd:
                            read_available(self._connection)
                        else:
                            with contextlib.suppress(OSError):
                                os.read(self._wake_read, 64)
        finally:
            with self._lock:
                self._give_back()

    def wake_borrower(self) -> None:
        """On the I/O thread: it read a confirm; the borrower may be the one waiting for it."""
        if self.borrower is not None and self.borrower != threading.get_ident():
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"x")

    def _poller(self) -> Any:
        if self._wake_read < 0:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
            self._polled_fd = -1
        if self._polled_fd != self._fd:
            self._poll = select.poll()
            self._poll.register(self._fd, _READABLE)
            self._poll.register(self._wake_read, select.POLLIN)
            self._polled_fd = self._fd
        return self._poll

    def _still_borrowed(self) -> bool:
        owner = self._owner
        link = owner.link
        return (
            not owner.closing
            and link.ready
            and link.connection is self._connection
            and transport_socket(self._connection) is not None
        )

    def _give_back(self) -> None:
        connection = self._connection
        self.borrower = None
        self._connection = None
        if connection is not None and self._owner.link.connection is connection:
            set_watched(self._owner.io.ioloop, self._fd, watched=True)


def sender(channel: Any, exchange: str) -> Callable[[Pending], bool]:
    """Send one message on ``channel``; settle it with the reason when it cannot be encoded."""
    publish = channel.basic_publish

    def send(pending: Pending) -> bool:
        try:
            publish(exchange, pending.routing_key, pending.body, pending.properties)
        except Exception as error:
            if not channel.is_open:
                raise  # the channel died: its close callback hands the message back
            # Nothing went out (pika encodes before writing); only this message fails.
            pending.settle(
                EventRefused(f"cannot send an event for {pending.routing_key!r}: {error}")
            )
            return False
        return True

    return send
