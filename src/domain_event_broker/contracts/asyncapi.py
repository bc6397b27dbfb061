"""An AsyncAPI 3.0 document from the code: the subscribers and event types of one module.

``domain-events asyncapi MODULE`` imports MODULE with no broker configured
(``Subscriber()`` connects nowhere, nothing is declared) and describes:

- the events exchange as a channel, with one message per event type (its JSON
  Schema, its version in the ``x-domain-event-version`` header) and a send
  operation for each typed event;
- each registered handler as a receive operation on a channel of its queue,
  with its binding keys, retry and dead-letter settings
  (``x-domain-event-broker``); an untyped registration receives the message
  ``untyped`` (data: any JSON value).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

from .. import settings
from ..core.topology import VERSION_HEADER
from ..handlers import RegisteredHandler
from ..subscriber import Subscriber
from .handlers import event_types_of
from .types import TypedEvent, is_event_type

ASYNCAPI_VERSION = "3.0.0"
#: The message of an untyped registration.
UNTYPED = "untyped"
#: Where the document keeps what AsyncAPI has no field for (binding keys, retries).
EXTENSION = "x-domain-event-broker"


class FoundSubscriber(NamedTuple):
    """A subscriber found in a module: its attribute name, exchange and registrations."""

    attribute: str
    exchange: str
    exchange_type: str
    registrations: list[RegisteredHandler]


@contextlib.contextmanager
def no_default_broker() -> Iterator[None]:
    """While importing a module to describe it: ``''`` means no broker (nothing connects)."""
    previous = settings.BROKER
    settings.BROKER = None
    try:
        yield
    finally:
        settings.BROKER = previous


def import_module(name: str) -> ModuleType:
    """Import ``name`` (a dotted name, found from the current directory too), with no broker."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # What the module prints while it is imported goes to standard error: standard output
    # holds the document and nothing else.
    with no_default_broker(), contextlib.redirect_stdout(sys.stderr):
        try:
            return importlib.import_module(name)
        except ImportError as error:
            raise ValueError(f"cannot import module {name!r}: {error}") from None


def subscribers_in(module: ModuleType) -> list[FoundSubscriber]:
    """Every ``Subscriber`` and ``AsyncSubscriber`` that ``module`` holds at its top level."""
    kinds: list[type] = [Subscriber]
    aio = sys.modules.get("domain_event_broker.aio")  # an AsyncSubscriber needs it imported
    if aio is not None:
        kinds.append(aio.AsyncSubscriber)
    found = []
    for attribute, value in vars(module).items():
        if isinstance(value, tuple(kinds)):
            subscriber: Any = value
            found.append(
                FoundSubscriber(
                    attribute,
                    subscriber.exchange,
                    subscriber.exchange_type,
                    subscriber.registrations,
                )
            )
    return found


def event_types_in(module: ModuleType, found: list[FoundSubscriber]) -> list[type[TypedEvent[Any]]]:
    """The event types of ``module`` and of its subscribers' handlers; the newest version
    of each routing key."""
    candidates = [value for value in vars(module).values() if is_event_type(value)]
    for subscriber in found:
        for registration in subscriber.registrations:
            candidates.extend(event_types_of(registration.handler))
    newest: dict[str, type[TypedEvent[Any]]] = {}
    for kind in candidates:
        known = newest.get(kind.routing_key_of_type)
        if known is None or (kind.version or 1) > (known.version or 1):
            newest[kind.routing_key_of_type] = kind
    return sorted(newest.values(), key=lambda kind: kind.routing_key_of_type)


def envelope(data_schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a message body: the 3.x wire format around ``data``."""
    return {
        "type": "object",
        "properties": {
            "routing_key": {"type": "string"},
            "data": data_schema,
            "domain_object_id": {"type": ["string", "null"]},
            "uuid_string": {"type": "string"},
            "timestamp": {"type": "number"},
        },
        "required": ["routing_key", "data", "uuid_string", "timestamp"],
    }


def message(kind: type[TypedEvent[Any]]) -> dict[str, Any]:
    version = kind.version or 1
    return {
        "name": kind.routing_key_of_type,
        "title": kind.shape.kind.__name__,
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {VERSION_HEADER: {"type": "integer", "const": version}},
        },
        "payload": envelope(kind.json_schema()),
        "x-domain-event-version": version,
    }


def untyped_message() -> dict[str, Any]:
    return {
        "name": UNTYPED,
        "title": "Untyped domain event",
        "summary": "A registration without an event type: data is any JSON value.",
        "contentType": "application/json",
        "payload": envelope({}),
    }


def _ref(*parts: str) -> dict[str, str]:
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return {"$ref": "#/" + "/".join(escaped)}


def _exchange_binding(exchange: str, exchange_type: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": exchange, "type": exchange_type, "durable": True},
            "bindingVersion": "0.3.0",
        }
    }


def document(module_name: str, module: ModuleType) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``module``'s subscribers and event types."""
    found = subscribers_in(module)
    types = event_types_in(module, found)
    by_key = {kind.routing_key_of_type: kind for kind in types}
    messages: dict[str, Any] = {kind.routing_key_of_type: message(kind) for kind in types}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    exchanges = {(s.exchange, s.exchange_type) for s in found} or {("domain-events", "topic")}
    for exchange, exchange_type in sorted(exchanges):
        channels[exchange] = {
            "address": exchange,
            "description": f"The {exchange_type} exchange the events are published to.",
            "messages": {key: _ref("components", "messages", key) for key in by_key},
            "bindings": _exchange_binding(exchange, exchange_type),
        }
    default_exchange = sorted(exchanges)[0][0]
    for key in by_key:
        operations[f"publish.{key}"] = {
            "action": "send",
            "channel": _ref("channels", default_exchange),
            "messages": [_ref("channels", default_exchange, "messages", key)],
        }
    for subscriber in found:
        for registration in subscriber.registrations:
            _describe_registration(subscriber, registration, by_key, messages, channels, operations)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": module_name,
            "version": str(getattr(module, "__version__", "0.0.0")),
            "description": f"Domain events of {module_name}, generated by domain-events asyncapi.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _describe_registration(
    subscriber: FoundSubscriber,
    registration: RegisteredHandler,
    by_key: dict[str, type[TypedEvent[Any]]],
    messages: dict[str, Any],
    channels: dict[str, Any],
    operations: dict[str, Any],
) -> None:
    topology = registration.topology
    received = [kind.routing_key_of_type for kind in event_types_of(registration.handler)]
    keys = [key for key in received if key in by_key]
    if not received or any(key not in received for key in topology.binding_keys):
        messages.setdefault(UNTYPED, untyped_message())
        keys.append(UNTYPED)
    channels[topology.queue] = {
        "address": topology.queue,
        "description": f"The queue of subscriber {topology.name}.",
        "messages": {key: _ref("components", "messages", key) for key in keys},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": topology.queue,
                    "durable": topology.durable,
                    "exclusive": topology.exclusive,
                    "autoDelete": topology.auto_delete,
                },
                "bindingVersion": "0.3.0",
            }
        },
    }
    operations[topology.name] = {
        "action": "receive",
        "channel": _ref("channels", topology.queue),
        "summary": f"{subscriber.attribute}: {_handler_name(registration.handler)}",
        "messages": [_ref("channels", topology.queue, "messages", key) for key in keys],
        EXTENSION: {
            "exchange": subscriber.exchange,
            "bindingKeys": list(topology.binding_keys),
            "maxRetries": registration.max_retries,
            "deadLetter": topology.dead_letter,
            "deadLetterQueue": topology.dead_letter_queue if topology.dead_letter else None,
            "queueType": topology.queue_type,
        },
    }


def _handler_name(handler: object) -> str:
    inner = getattr(handler, "handler", handler)
    return str(getattr(inner, "__qualname__", type(inner).__name__))
