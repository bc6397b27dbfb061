"""Publish a few domain events to the local broker (or $DOMAIN_EVENT_BROKER)."""

import os

from domain_event_broker import publish_domain_event

url = os.environ.get("DOMAIN_EVENT_BROKER", "")  # '' means settings.BROKER, the local broker

for user_id in range(3):
    event = publish_domain_event("user.registered", {"user_id": user_id}, connection_settings=url)
    print("published", event)
