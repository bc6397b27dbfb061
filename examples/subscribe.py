"""Terminal 1 of the quick start: receive user events, retry while a service is down.

Run: `python examples/subscribe.py` (it waits for events; the broker is
$DOMAIN_EVENT_BROKER, else amqp://guest:guest@localhost:5672/%2F), then
`python examples/publish.py` in a second terminal. Ctrl-C stops it gracefully:
events being handled finish first.
"""

import logging

from domain_event_broker import DomainEvent, Retry, Subscriber

# The library logs (it never prints): one INFO line per registration at start, and
# one line per retried, dead-lettered or dropped event.
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("pika").setLevel(logging.WARNING)  # pika narrates every channel at INFO


class ServiceIsDown(Exception):
    pass


def sync_to_crm(user_id: int, attempt: int) -> None:
    """Stands for a call to another service: it is down at the first try for odd users."""
    if user_id % 2 == 1 and attempt == 0:
        raise ServiceIsDown(f"the CRM did not answer for user {user_id}")


def sync_user_data(event: DomainEvent) -> None:
    user_id = event.data["user_id"]
    try:
        sync_to_crm(user_id, event.retries)
    except ServiceIsDown:
        delay = min(5.0**event.retries, 60.0)  # 1 s, 5 s, 25 s
        print(f"user {user_id}: service down, retry in {delay:.0f} s", flush=True)
        raise Retry(delay) from None
    print(f"synced user {user_id} (event {event.uuid_string})", flush=True)


subscriber = Subscriber()
# max_retries=3: a Retry is honoured three times per event (the default, 0, drops it);
# dead_letter=True: a failed event waits in the queue sync_data-dl (the default drops it).
subscriber.register(sync_user_data, "sync_data", ["user.*"], dead_letter=True, max_retries=3)
subscriber.start_consuming()
