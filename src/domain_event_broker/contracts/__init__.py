"""Event contracts: typed events checked at both ends, versions, upcasting, AsyncAPI.

>>> from domain_event_broker.contracts import event_type, publish_event  # doctest: +SKIP
>>> OrderPlaced = event_type("order.placed", OrderPlacedData, version=2)  # doctest: +SKIP
>>> publish_event(OrderPlaced(OrderPlacedData("o-1", 9.5)))  # doctest: +SKIP

Untyped events (``publish_domain_event``, handlers taking a ``DomainEvent``)
work exactly as before; see ``docs/contracts.md``.
"""

from ..core.topology import VERSION_HEADER
from .handlers import TypedHandler, typed_registration
from .publishing import publish_event
from .shapes import ContractViolation
from .types import TypedEvent, event_type, is_event_type

__all__ = [
    "VERSION_HEADER",
    "ContractViolation",
    "TypedEvent",
    "TypedHandler",
    "event_type",
    "is_event_type",
    "publish_event",
    "typed_registration",
]
