"""The AMQP properties of a re-published copy of a delivery (retry, dead letter, replay)."""

from __future__ import annotations

from typing import Any, Protocol

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


class CopiedProperties(Protocol):
    """The properties a copy keeps: pika's ``BasicProperties`` and aio-pika's messages have them."""

    @property
    def content_type(self) -> str | None: ...
    @property
    def content_encoding(self) -> str | None: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def timestamp(self) -> Any: ...
    @property
    def type(self) -> str | None: ...
    @property
    def app_id(self) -> str | None: ...


def copied_fields(properties: CopiedProperties, headers: dict[str, Any]) -> dict[str, Any]:
    """The property fields of a re-published copy: persistent, with ``headers``.

    ``user_id`` is dropped (RabbitMQ refuses it unless it names our own user) and
    so is ``expiration`` (a copy must not expire in a queue).
    """
    return {
        "content_type": properties.content_type,
        "content_encoding": properties.content_encoding,
        "headers": headers,
        "delivery_mode": 2,
        "priority": properties.priority,
        "correlation_id": properties.correlation_id,
        "reply_to": properties.reply_to,
        "message_id": properties.message_id,
        "timestamp": properties.timestamp,
        "type": properties.type,
        "app_id": properties.app_id,
    }


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """The properties of a re-published copy (see :func:`copied_fields`)."""
    return pika.BasicProperties(**copied_fields(properties, headers))
