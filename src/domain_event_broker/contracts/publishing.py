"""``publish_event``: a typed event checked, then sent as :func:`publish_domain_event` sends.

It calls ``Publisher.publish`` underneath, the 3.x patch point, with the
event's id and its version header as properties.
"""

from __future__ import annotations

from ..events import DomainEvent
from ..publisher import Publisher, current_event_sink, shared_publisher
from ..publisher.messages import event_properties
from ..settings import ConnectionSettings, resolve_url


def publish_event(event: DomainEvent, connection_settings: ConnectionSettings = "") -> DomainEvent:
    """Send ``event`` (typed or not) to RabbitMQ; return it once the broker has stored it.

    A typed event is validated before anything is sent: invalid data raises
    :class:`~domain_event_broker.contracts.ContractViolation` naming the field.
    ``connection_settings``: as for :func:`publish_domain_event` (``None``: build, check,
    send nothing).
    """
    body = event.to_json()  # checks a typed event: nothing is sent when it fails
    sink = current_event_sink()
    if sink is not None:  # the in-memory test broker
        sink(event)
        return event
    url = resolve_url(connection_settings)
    publisher = Publisher(None) if url is None else shared_publisher(url)
    publisher.publish(body, event.routing_key, properties=event_properties(event))
    return event
