"""Terminal 2 of the quick start: publish three domain events.

Run: `python examples/publish.py` while examples/subscribe.py runs in another
terminal (the broker is $DOMAIN_EVENT_BROKER, else the local one).
"""

from domain_event_broker import publish_domain_event

for user_id in range(3):
    # Returns once RabbitMQ has confirmed the event (stored, routed to every subscriber).
    event = publish_domain_event("user.registered", {"user_id": user_id})
    print("published", event.routing_key, event.data)
