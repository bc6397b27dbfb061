"""Handlers found by ``consume_domain_events`` (autodiscovered ``handlers.py``)."""

from domain_event_broker import DomainEvent
from domain_event_broker.django import subscribe

from .models import HandledEvent

#: Idempotent: records each event once, however often it is delivered.
RECORDER = "shop-recorder"
#: Not idempotent: records every delivery.
COUNTER = "shop-counter"


@subscribe(RECORDER, ["shop.#"], dead_letter=True, idempotent=True)
def record_order_event(event: DomainEvent) -> None:
    HandledEvent.objects.create(
        subscriber=RECORDER,
        uuid_string=event.uuid_string,
        routing_key=event.routing_key,
        data=event.data,
    )


@subscribe(COUNTER, ["shop.#"])
def count_order_event(event: DomainEvent) -> None:
    HandledEvent.objects.create(
        subscriber=COUNTER,
        uuid_string=event.uuid_string,
        routing_key=event.routing_key,
        data=event.data,
    )
