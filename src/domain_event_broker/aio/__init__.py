"""asyncio publishing and subscribing on aio-pika (``pip install domain-event-broker[asyncio]``).

The same topology, retry counting, dead letters and wire bytes as the sync
side, from the same core (:mod:`domain_event_broker.core`): this driver only
carries out its plans on aio-pika, so sync and asyncio services share one broker.
"""

from __future__ import annotations

try:
    import aio_pika  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "domain_event_broker.aio needs aio-pika: pip install 'domain-event-broker[asyncio]'"
    ) from error

from .publisher import AsyncPublisher, close_shared_publishers, publish_domain_event
from .subscriber import AsyncSubscriber

__all__ = [
    "AsyncPublisher",
    "AsyncSubscriber",
    "close_shared_publishers",
    "publish_domain_event",
]
