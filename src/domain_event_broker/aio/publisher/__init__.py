"""Publishing domain events from asyncio code (aio-pika): the twin of :mod:`..publisher`.

- :mod:`.core`: the public :class:`AsyncPublisher`;
- :mod:`.shared`: one publisher per event loop and broker, behind :func:`publish_domain_event`;
- :mod:`.link`: the connection and confirm-mode channel, reopened as the core's supervisor says.

Every module logs as ``domain_event_broker.aio.publisher``.
"""

from .core import WINDOW, AsyncPublisher
from .shared import close_shared_publishers, publish_domain_event, shared_publisher

__all__ = [
    "WINDOW",
    "AsyncPublisher",
    "close_shared_publishers",
    "publish_domain_event",
    "shared_publisher",
]
