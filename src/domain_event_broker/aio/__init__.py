"""asyncio publishing and subscribing on aio-pika (``pip install domain-event-broker[asyncio]``).

The same topology, retry counting, dead letters and wire bytes as the sync
side, from the same code (:mod:`domain_event_broker.outcome`,
:mod:`domain_event_broker.topology`, :mod:`domain_event_broker.messages`), so
sync and asyncio services share one broker.
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
