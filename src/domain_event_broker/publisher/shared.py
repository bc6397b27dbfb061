"""The process-wide publishers behind :func:`publish_domain_event`, and where its events go.

One long-lived publisher per broker, exchange and exchange type, shared by every
thread of the process, forgotten in a forked child (which has a copy of the
parent's socket but none of its threads) and closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
from collections.abc import Callable
from typing import Any

from ..core.topology import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_TYPE
from ..events import DomainEvent, validate_routing_key
from ..settings import BrokerSettings, ConnectionSettings, resolve_url
from .core import Publisher, PublishExtra, publish_extra

_shared: dict[tuple[BrokerSettings, str, str], Publisher] = {}
_shared_lock = threading.Lock()


def shared_publisher(
    url: BrokerSettings,
    exchange: str = DEFAULT_EXCHANGE,
    exchange_type: str = DEFAULT_EXCHANGE_TYPE,
) -> Publisher:
    """The process-wide publisher for ``url``, created on first use."""
    key = (url, exchange, exchange_type)
    publisher = _shared.get(key)
    if publisher is not None:
        return publisher
    with _shared_lock:
        publisher = _shared.get(key)
        if publisher is None:
            publisher = Publisher(url, exchange, exchange_type)
            _shared[key] = publisher
        return publisher


def close_shared_publishers() -> None:
    """Close every process-wide publisher (done at interpreter exit)."""
    with _shared_lock:
        publishers = list(_shared.values())
        _shared.clear()
    for publisher in publishers:
        publisher.disconnect()


def _forget_shared_publishers_after_fork() -> None:
    # The child has a copy of the parent's sockets but none of its threads.
    global _shared_lock
    _shared.clear()
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_publishers_after_fork)
atexit.register(close_shared_publishers)


EventSink = Callable[[DomainEvent], object]
_event_sink: EventSink | None = None


def redirect_events(sink: EventSink | None) -> EventSink | None:
    """Hand every :func:`publish_domain_event` to ``sink`` instead of RabbitMQ; return the old one.

    For tests: :class:`domain_event_broker.testing.InMemoryBroker` uses it.
    Events are still validated and serialised first. ``None`` restores RabbitMQ.
    """
    global _event_sink
    previous, _event_sink = _event_sink, sink
    return previous


def current_event_sink() -> EventSink | None:
    """Where :func:`redirect_events` sends events now (``None``: to RabbitMQ)."""
    return _event_sink


@functools.cache
def _no_broker() -> Publisher:
    """The publisher of ``connection_settings=None``: its ``publish`` is a logged no-op.

    Built on first use, not at import: it is the one 3.x test suites patch
    (``Publisher.publish``) in set-ups without a broker.
    """
    return Publisher(None)


def publish_domain_event(
    routing_key: str,
    data: Any,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
    connection_settings: ConnectionSettings = "",
    *,
    publish_timeout: float | None = None,
) -> DomainEvent:
    """Send a domain event to RabbitMQ; return it once the broker has stored it.

    The broker dispatches it to every subscriber whose binding keys match.

    >>> publish_domain_event("user.registered", {"user_id": 7})  # doctest: +SKIP
    DomainEvent('user.registered', {'user_id': 7}, ...)

    :param routing_key: what happened, as ``<domain>.<event_type>``, e.g. ``user.registered``.
    :param data: the event's data; must be JSON-serialisable.
    :param domain_object_id: optional id of the domain object the event is about.
    :param uuid_string: the event's id; a new UUID4 when not given.
    :param timestamp: seconds since the Unix epoch (UTC); now when not given.
    :param connection_settings: an AMQP URL, ``''`` for the default broker, or
        ``None`` to build and return the event without sending it.
    :param publish_timeout: seconds to wait for the broker's confirm;
        ``settings.PUBLISH_TIMEOUT`` when not given.
    """
    event = DomainEvent(
        routing_key=routing_key,
        data=data,
        domain_object_id=domain_object_id,
        uuid_string=uuid_string,
        timestamp=timestamp,
    )
    body = event.to_json()  # serialise first: a bad event fails before any I/O
    validate_routing_key(event.routing_key)
    if _event_sink is not None:
        _event_sink(event)
        return event
    url = resolve_url(connection_settings)
    publisher = _no_broker() if url is None else shared_publisher(url)
    # publish() gets exactly the two arguments 3.x gave it (test suites patch it
    # and check them); the event's id and the timeout travel beside them.
    token = publish_extra.set(PublishExtra(event.uuid_string, publish_timeout))
    try:
        publisher.publish(body, event.routing_key)
    finally:
        publish_extra.reset(token)
    return event
