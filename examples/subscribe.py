"""Receive user events; retry with growing delays while a service is down; keep failures.

Run it, then `python examples/publish.py` in another terminal. Ctrl-C stops it
gracefully (in-flight events finish first).
"""

import os
import random

from domain_event_broker import DomainEvent, Retry, Subscriber


class ServiceIsDown(Exception):
    pass


def sync_user_data(event: DomainEvent) -> None:
    try:
        if random.random() < 0.5:
            raise ServiceIsDown
        print(f"synced user {event.data['user_id']} (event {event.uuid_string})")
    except ServiceIsDown:
        print(f"service down, retry #{event.retries + 1} in {5.0**event.retries:.0f} s")
        raise Retry(5.0**event.retries) from None  # 1 s, 5 s, 25 s


subscriber = Subscriber(os.environ.get("DOMAIN_EVENT_BROKER", ""))
subscriber.register(sync_user_data, "sync_data", ["user.*"], dead_letter=True, max_retries=3)
subscriber.start_consuming()
