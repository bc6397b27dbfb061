"""The bytes and properties of a message on its way, built on the caller's thread.

Every publish path (``publish``, ``publish_many``, ``publish_batch``) builds
its :class:`~..core.confirms.Pending` here: persistent JSON, the event's id, and
the headers that observability hooks inject.
"""

from __future__ import annotations

import copy
from typing import Any

import pika

from .. import observability
from .._pika import check_properties
from ..core.confirms import Pending
from ..core.messages import OutgoingMessage, naming
from ..core.ordering import object_id_text, with_object_id
from ..core.topology import OBJECT_ID_HEADER, VERSION_HEADER
from ..events import DomainEvent, validate_routing_key

#: The properties of a message with no id and no headers: shared, never changed.
PERSISTENT_JSON = pika.BasicProperties(delivery_mode=2, content_type="application/json")


def body_bytes(message: object) -> bytes:
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, bytes):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)  # a copy: the caller may change theirs meanwhile
    raise TypeError(
        f"a message body must be str or bytes-like (the serialised event), "
        f"not {type(message).__name__}"
    )


def message_properties(
    properties: pika.BasicProperties | None,
    routing_key: str,
    message_id: str | None,
    body: bytes,
) -> pika.BasicProperties:
    """The message's properties: persistent JSON, its id, the object id and injected headers."""
    headers = with_object_id(observability.outgoing_headers(routing_key, message_id), body)
    if properties is not None:
        check_properties(properties)
        if headers:
            properties = copy.copy(properties)  # the caller may reuse theirs
            properties.headers = {**headers, **(properties.headers or {})}
        return properties
    return persistent_json(message_id, headers)


def persistent_json(message_id: str | None, headers: dict[str, Any] | None) -> pika.BasicProperties:
    """The properties every event goes out with: persistent JSON, its id and headers."""
    if message_id is None and headers is None:
        return PERSISTENT_JSON
    return pika.BasicProperties(
        delivery_mode=2, content_type="application/json", message_id=message_id, headers=headers
    )


def event_properties(event: DomainEvent) -> pika.BasicProperties:
    """The properties of ``event``: its id, and its contract version when it is typed."""
    headers = None if event.version is None else {VERSION_HEADER: event.version}
    return persistent_json(event.uuid_string, headers)


def described(pending: Pending) -> str:
    """How an error names the message: by its id when it has one."""
    return naming(pending.routing_key, pending.properties.message_id)


def pending_event(event: DomainEvent) -> Pending:
    """What :func:`pending_message` makes of ``OutgoingMessage.of_event(event)``, faster:
    ``publish_many`` builds one per event, before the first is sent."""
    routing_key = validate_routing_key(event.routing_key)
    message_id = event.uuid_string
    body = event.to_json().encode("utf-8")
    headers = observability.outgoing_headers(routing_key, message_id)
    if event.version is not None:
        headers = {**(headers or {}), VERSION_HEADER: event.version}
    object_id = object_id_text(event.domain_object_id)
    if object_id is not None:
        headers = {**(headers or {}), OBJECT_ID_HEADER: object_id}
    return pending(body, routing_key, message_id, headers)


def pending_message(message: OutgoingMessage) -> Pending:
    headers = observability.message_headers(
        message.routing_key, message.message_id, message.headers, message.injected
    )
    headers = with_object_id(headers, message.body)
    return pending(message.body, message.routing_key, message.message_id, headers)


def pending(
    body: bytes, routing_key: str, message_id: str | None, headers: dict[str, Any] | None
) -> Pending:
    """A persistent JSON message on its way, as every publish path sends one."""
    return Pending(body, routing_key, persistent_json(message_id, headers))
