"""The AMQP properties of a re-published copy of a delivery (retry, dead letter, replay)."""

from __future__ import annotations

from typing import Any

import pika

#: The properties a copy keeps, on the sync and asyncio sides alike. Not
#: ``user_id`` (RabbitMQ refuses it unless it names our own user), nor
#: ``expiration`` (a copy must not expire in a queue); ``headers`` and
#: ``delivery_mode`` (persistent) are the copy's own.
COPIED_PROPERTIES = (
    "content_type",
    "content_encoding",
    "priority",
    "correlation_id",
    "reply_to",
    "message_id",
    "timestamp",
    "type",
    "app_id",
)


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """The properties of a re-published copy: persistent, with ``headers``."""
    return pika.BasicProperties(
        headers=headers,
        delivery_mode=2,
        **{name: getattr(properties, name) for name in COPIED_PROPERTIES},
    )
