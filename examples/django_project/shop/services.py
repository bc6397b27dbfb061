"""Business code: change the database and say what happened, in one transaction."""

# --8<-- [start:place_order]
from django.db import transaction

from domain_event_broker.django import publish_on_commit

from .models import Order


def place_order(reference: str, email: str) -> Order:
    with transaction.atomic():
        order = Order.objects.create(reference=reference, email=email)
        # DOMAIN_EVENT_BROKER_OUTBOX = True: this writes an outbox row in this
        # transaction; without it the event is published after the commit.
        publish_on_commit(
            "shop.order.placed",
            {"reference": order.reference, "email": order.email},
            domain_object_id=order.reference,
        )
    return order


# --8<-- [end:place_order]
