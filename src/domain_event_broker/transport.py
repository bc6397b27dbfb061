"""Import path of releases 2.x-3.x (``from domain_event_broker.transport import ...``)."""

from .errors import Retry
from .publisher import Publisher, publish_domain_event
from .subscriber import Subscriber

__all__ = ["Publisher", "Retry", "Subscriber", "publish_domain_event"]
