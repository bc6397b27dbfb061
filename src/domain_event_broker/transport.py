"""Import path of releases 2.x-3.x (``from domain_event_broker.transport import ...``)."""

from ._transport import Transport, requires_broker
from .errors import Retry
from .publisher import Publisher, publish_domain_event
from .subscriber import Subscriber

__all__ = [
    "Publisher",
    "Retry",
    "Subscriber",
    "Transport",
    "publish_domain_event",
    "requires_broker",
]
