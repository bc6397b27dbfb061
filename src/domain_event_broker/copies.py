"""The AMQP properties of a re-published copy of a delivery (retry, dead letter, replay)."""

from __future__ import annotations

from typing import Any

import pika


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """The properties of a re-published copy: persistent, with ``headers``.

    ``user_id`` is dropped (RabbitMQ refuses it unless it names our own user) and
    so is ``expiration`` (a copy must not expire in a queue).
    """
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=2,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
    )
