"""What the outbox tests of Django and SQLAlchemy share: a queue that refuses, an odd payload."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pika

from support import get_all


def declare_refusing_queue(broker_url: str, queue: str, binding_key: str) -> None:
    """A queue that is always full and refuses what is routed to it (``reject-publish``).

    The broker then nacks every event with ``binding_key``: the event is refused.
    """
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(
            queue, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        channel.queue_bind(queue, "domain-events", routing_key=binding_key)


def odd_payload(routing_key: str, n: int) -> tuple[str, str]:
    """``(uuid_string, payload)``: a stored body with a field the library does not know,
    non-default spacing and key order, and non-ASCII text, as another writer might store it."""
    uuid_string = str(uuid.uuid4())
    payload = (
        f'{{ "uuid_string":"{uuid_string}" ,"routing_key": "{routing_key}",\n  '
        f'"data": {{"n":{n}, "name": "Zoë ✓"}},"timestamp":1700000000.5,   '
        '"domain_object_id":null, "schema_version": 3 }'
    )
    json.loads(payload)  # still an event
    return uuid_string, payload


def arrivals(broker_url: str, queue: str) -> list[dict[str, Any]]:
    """Every event in ``queue`` (taken out), as JSON, in arrival order."""
    return [json.loads(body) for _m, _p, body in get_all(broker_url, queue)]
