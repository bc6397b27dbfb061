"""Every use of pika's internals, in one place, each guarded.

pika has no public API for these; when a pika release changes what they rely
on, each degrades to doing nothing (or to the public path) instead of failing.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any

import pika.exceptions
import pika.frame


def coalesce_output(connection: Any) -> None:
    """Join the frames waiting to be sent, so that they go out in one ``send()``.

    pika queues each frame (three per message) on its own and its I/O loop
    sends them one system call each; joined, a flush of one event or of a
    thousand costs one. Best effort: when pika's transport looks different
    (another pika release), the frames are left as they are.
    """
    buffers = getattr(getattr(connection, "_transport", None), "_tx_buffers", None)
    if isinstance(buffers, deque) and len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)


def check_properties(properties: Any) -> None:
    """Raise TypeError now, on the caller's thread, when ``properties`` cannot be encoded.

    Encoded on the I/O thread instead, a bad header value would fail there.
    """
    if not isinstance(properties, pika.BasicProperties):
        raise TypeError(
            f"properties must be a pika.BasicProperties, not {type(properties).__name__}"
        )
    try:
        pika.frame.Header(1, 0, properties).marshal()
    except Exception as error:
        raise TypeError(f"the message properties cannot be encoded: {error}") from error


def channel_impl(channel: Any) -> Any:
    """The asynchronous channel under a ``BlockingChannel``, to publish without waiting.

    ``BlockingChannel.basic_publish`` with confirms waits for each confirm with
    no time limit; the channel underneath sends at once and reports confirms by
    callback. No fallback exists that keeps the time limit, so a pika without
    it is a clear error at once rather than a subscriber a silent broker freezes.
    """
    impl = getattr(channel, "_impl", None)
    if impl is None or not hasattr(impl, "confirm_delivery"):
        raise RuntimeError("this pika version has no channel implementation to confirm on")
    return impl


def abort(connection: Any, reason: str) -> None:
    """Drop a ``BlockingConnection`` without the closing handshake (the broker may not answer).

    RabbitMQ sees the socket close and requeues the connection's unacked
    deliveries. Without pika's stream termination, a plain close is the fallback.
    """
    terminate = getattr(getattr(connection, "_impl", None), "_terminate_stream", None)
    if terminate is None:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            connection.close()
        return
    terminate(pika.exceptions.StreamLostError(reason))
    # Let pika process the termination; it reports it as the error it is.
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        connection.process_data_events(time_limit=0)


def server_properties(connection: Any) -> Any:
    """What the node said about itself when ``connection`` opened (``version``...), or None.

    A ``BlockingConnection`` keeps them on its impl only.
    """
    return getattr(getattr(connection, "_impl", None), "server_properties", None)


def close_stream_channel(channel: Any, timeout: float = 5.0) -> None:
    """Close a channel that consumes a stream, without pika's cancel.

    ``BlockingChannel.close`` cancels its consumers first and rejects the
    deliveries it holds; a stream refuses a reject by closing the whole
    connection (540 NOT_IMPLEMENTED). Closed underneath, the channel's
    deliveries simply end with it. Without the impl, the public close is the fallback.
    """
    impl = getattr(channel, "_impl", None)
    if impl is None or not hasattr(impl, "close"):
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            channel.close()
        return
    if not impl.is_open:
        return
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        impl.close()
        waited = 0.0
        while not impl.is_closed and waited < timeout:
            channel.connection.process_data_events(time_limit=0.05)
            waited += 0.05


class _WaitUnlocked:
    """A poller's ``select.epoll``/``select.poll`` that lets go of ``lock`` while it waits.

    When another thread registered or unregistered a descriptor meanwhile (it
    read a closing socket and pika let go of it), the events are stale: they may
    name a descriptor pika no longer has a handler for, or a new socket under an
    old number. They are dropped; the poll is level-triggered and reports
    whatever is still ready on the next pass.
    """

    def __init__(self, poll: Any, lock: Any) -> None:
        self._poll = poll
        self._lock = lock
        self._changes = 0

    def poll(self, *args: Any) -> Any:
        changes = self._changes
        self._lock.release()
        try:
            events = self._poll.poll(*args)
        finally:
            self._lock.acquire()
        return events if changes == self._changes else []

    def register(self, *args: Any) -> Any:
        self._changes += 1
        return self._poll.register(*args)

    def unregister(self, *args: Any) -> Any:
        self._changes += 1
        return self._poll.unregister(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poll, name)


def wait_unlocked(ioloop: Any, lock: Any) -> bool:
    """Make ``ioloop`` release ``lock`` while it waits for I/O, and hold it otherwise.

    The thread that runs the loop takes ``lock`` before starting it; another
    thread that holds ``lock`` may then use the loop's pika objects (pika is
    not thread-safe: the lock makes their use one thread at a time). False when
    this pika's loop looks different: nothing changed then.
    """
    poller = getattr(ioloop, "_poller", None)
    create = getattr(poller, "_create_poller", None)
    if create is None or getattr(poller, "_poll", "missing") is not None:
        return False
    poller._create_poller = lambda: _WaitUnlocked(create(), lock)  # type: ignore[union-attr]
    return True


def transport_socket(connection: Any) -> Any:
    """The socket of a plain-TCP ``SelectConnection`` with nothing waiting to be written, or None.

    None too for TLS (its writes and reads are stateful) and unknown pika internals.
    """
    transport = getattr(connection, "_transport", None)
    if type(transport).__name__ != "_AsyncPlaintextTransport":
        return None
    buffers = getattr(transport, "_tx_buffers", None)
    if not isinstance(buffers, deque) or buffers:
        return None
    return getattr(transport, "_sock", None)


@contextlib.contextmanager
def captured_output(connection: Any) -> Any:
    """Collect the frames ``connection`` emits meanwhile instead of buffering them.

    The caller writes them itself (and gives pika what did not go out). pika
    counts them as sent as usual. Without pika's emit hook, nothing is collected.
    """
    frames: list[bytes] = []
    if not hasattr(connection, "_adapter_emit_data"):
        yield frames
        return
    connection._adapter_emit_data = frames.append
    try:
        yield frames
    finally:
        del connection._adapter_emit_data  # the class's method again


def write_later(connection: Any, data: bytes) -> None:
    """Hand ``data`` to pika's own buffered writing (its I/O loop sends it)."""
    connection._transport.write(data)


def read_available(connection: Any) -> None:
    """Read what the socket holds and dispatch its frames, as pika's loop would."""
    connection._transport._on_socket_readable()


def set_watched(ioloop: Any, fd: int, watched: bool) -> None:
    """Stop (or resume) the loop's watching of ``fd``, as pika's own records say.

    Errors and hang-ups are still reported to a loop that does not watch (epoll).
    """
    poller = getattr(ioloop, "_poller", None)
    poll = getattr(poller, "_poll", None)
    if poll is None:
        return
    events = 0
    if watched:
        for event, fds in poller._fd_events.items():  # type: ignore[union-attr]
            if fd in fds:
                events |= event
    with contextlib.suppress(OSError, ValueError, KeyError):
        poll.modify(fd, events)
