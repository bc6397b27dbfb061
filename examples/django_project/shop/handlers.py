"""Found by `manage.py consume_domain_events` (every installed app's handlers.py)."""

# --8<-- [start:handler]
from domain_event_broker import DomainEvent
from domain_event_broker.django import subscribe

from .models import ConfirmationMail


@subscribe("shop-confirmation-mailer", ["shop.order.placed"], dead_letter=True, idempotent=True)
def send_confirmation_mail(event: DomainEvent) -> None:
    # idempotent=True: runs in a transaction with an inbox record, so an event
    # that is delivered twice (a relay re-sent it) sends one mail.
    ConfirmationMail.objects.create(
        order_reference=event.data["reference"], email=event.data["email"]
    )
    print(f"mail sent for order {event.data['reference']} (event {event.uuid_string})")


# --8<-- [end:handler]
