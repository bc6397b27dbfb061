"""The transport surface of releases 2.x-3.x: ``Transport``, its ``connection`` and ``channel``.

In 3.x, :class:`~domain_event_broker.Publisher` and
:class:`~domain_event_broker.Subscriber` were transports holding one blocking
connection and channel, and code used them directly, e.g. to delete a queue in
a test (``Subscriber().channel.queue_delete(queue=...)``) or to look into one
(``Transport(url).channel.basic_get(...)``). Here that connection is a separate
one, opened on first use: the publisher's confirming connection lives on an
I/O thread of its own and the subscriber's is driven by its consume loop, so
neither may be handed to callers (pika is not thread-safe).

Importable as ``domain_event_broker.transport``; this module only holds the
base class, so that :mod:`.publisher` and :mod:`.subscriber` can inherit from
it without an import cycle.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from .connection import CONNECTION_LOST, connect_blocking
from .settings import ConnectionSettings, resolve_url
from .topology import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_TYPE, declare_events_exchange

log = logging.getLogger("domain_event_broker.transport")


class _HasBroker(Protocol):
    @property
    def connection_settings(self) -> object: ...


_T = TypeVar("_T", bound=_HasBroker)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def requires_broker(
    method: Callable[Concatenate[_T, _P], _R],
) -> Callable[Concatenate[_T, _P], _R | None]:
    """Make ``method`` a logged no-op (returning ``None``) when ``connection_settings`` is None.

    For set-ups without a broker (development, tests), as in 3.x.
    """

    @functools.wraps(method)
    def wrapper(transport: _T, /, *args: _P.args, **kwargs: _P.kwargs) -> _R | None:
        if transport.connection_settings is None:
            log.debug(
                "No broker configured: %s.%s() is deactivated.",
                type(transport).__name__,
                method.__name__,
            )
            return None
        return method(transport, *args, **kwargs)

    return wrapper


class Transport:
    """A broker address and exchange, with a blocking connection and channel for direct use.

    ``connection`` and ``channel`` are a pika ``BlockingConnection`` and
    ``BlockingChannel``, opened (and the events exchange declared) on first
    use and opened again when the broker closed them; ``None`` when
    ``connection_settings`` is ``None``. Use them from one thread at a time.
    :meth:`disconnect` closes them.

    >>> transport = Transport("amqp://guest:guest@localhost:5672/%2F")  # doctest: +SKIP
    >>> transport.channel.queue_delete(queue="old-subscriber")  # doctest: +SKIP
    >>> transport.disconnect()  # doctest: +SKIP
    """

    def __init__(
        self,
        connection_settings: ConnectionSettings = "",
        exchange: str = DEFAULT_EXCHANGE,
        exchange_type: str = DEFAULT_EXCHANGE_TYPE,
    ) -> None:
        self.connection_settings = resolve_url(connection_settings)
        self.exchange = exchange
        self.exchange_type = exchange_type
        self._transport_lock = threading.RLock()
        self._transport_connection: BlockingConnection | None = None
        self._transport_channel: BlockingChannel | None = None
        self._transport_pid = os.getpid()

    @property
    def connection(self) -> BlockingConnection | None:
        """A blocking connection of this transport's own (``None`` without a broker)."""
        self._open()
        return self._transport_connection

    @connection.setter
    def connection(self, connection: BlockingConnection | None) -> None:
        # 3.x subclasses assign it in their own connect().
        self._transport_connection = connection

    @property
    def channel(self) -> BlockingChannel | None:
        """A channel on :attr:`connection` (``None`` without a broker)."""
        self._open()
        return self._transport_channel

    @channel.setter
    def channel(self, channel: BlockingChannel | None) -> None:
        self._transport_channel = channel

    @requires_broker
    def connect(self) -> None:
        """Open :attr:`connection` and :attr:`channel` unless open; declare the exchange."""
        self._open()

    def _open(self) -> None:
        # Not connect(): a 3.x subclass may override that to assign connection and channel.
        if self.connection_settings is None:
            return
        with self._transport_lock:
            if self._transport_pid != os.getpid():
                # A forked child must not use its parent's socket.
                self._transport_connection = self._transport_channel = None
                self._transport_pid = os.getpid()
            connection = self._transport_connection
            if connection is None or not connection.is_open:
                connection = connect_blocking(self.connection_settings, "transport")
                self._transport_connection = connection
                self._transport_channel = None
            channel = self._transport_channel
            if channel is None or not channel.is_open:
                # A channel the broker closed (e.g. 404 on a passive declare) is replaced.
                channel = connection.channel()
                declare_events_exchange(channel, self.exchange, self.exchange_type)
                self._transport_channel = channel

    def disconnect(self) -> None:
        """Close :attr:`connection` (it is opened again on next use)."""
        with self._transport_lock:
            connection = self._transport_connection
            self._transport_connection = self._transport_channel = None
            if connection is not None and self._transport_pid == os.getpid():
                with contextlib.suppress(*CONNECTION_LOST):
                    if connection.is_open:
                        connection.close()
