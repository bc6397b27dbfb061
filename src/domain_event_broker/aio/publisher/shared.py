"""The asyncio publishers behind :func:`publish_domain_event`: one per event loop and broker."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from ...core.messages import OutgoingMessage
from ...core.topology import DEFAULT_EXCHANGE
from ...events import DomainEvent
from ...publisher import current_event_sink
from ...settings import BrokerSettings, ConnectionSettings, resolve_url
from .core import AsyncPublisher

log = logging.getLogger(__package__)


# One publisher per event loop and broker, for publish_domain_event.
_SharedKey = tuple[BrokerSettings, str]
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_SharedKey, AsyncPublisher]]
_shared = weakref.WeakKeyDictionary()


def shared_publisher(url: BrokerSettings, exchange: str = DEFAULT_EXCHANGE) -> AsyncPublisher:
    """The running event loop's publisher for ``url``, created on first use."""
    publishers = _shared.setdefault(asyncio.get_running_loop(), {})
    publisher = publishers.get((url, exchange))
    if publisher is None:
        publisher = publishers[(url, exchange)] = AsyncPublisher(url, exchange)
    return publisher


async def close_shared_publishers() -> None:
    """Close the running event loop's shared publishers (e.g. in an app's shutdown)."""
    publishers = _shared.pop(asyncio.get_running_loop(), {})
    for publisher in publishers.values():
        await publisher.close()


async def publish_domain_event(
    routing_key: str,
    data: Any,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
    connection_settings: ConnectionSettings = "",
) -> DomainEvent:
    """Send a domain event to RabbitMQ; return it once the broker has stored it.

    The asyncio twin of :func:`domain_event_broker.publish_domain_event`: the
    same arguments, validation, errors and wire bytes. ``connection_settings=None``
    builds and returns the event without sending it.
    """
    event = DomainEvent(
        routing_key=routing_key,
        data=data,
        domain_object_id=domain_object_id,
        uuid_string=uuid_string,
        timestamp=timestamp,
    )
    message = OutgoingMessage.of_event(event)  # serialise first: a bad event fails before I/O
    sink = current_event_sink()
    if sink is not None:  # the in-memory test broker
        sink(event)
        return event
    url = resolve_url(connection_settings)
    if url is None:
        log.debug("no broker configured: event %s (%s) not sent", event.uuid_string, routing_key)
        return event
    await shared_publisher(url).publish_message(message)
    log.debug("published event %s (%s)", event.uuid_string, routing_key)
    return event
