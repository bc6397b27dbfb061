"""A message on its way to the broker, and what became of it: shared by every publisher.

The sync :class:`~domain_event_broker.Publisher`, the asyncio publisher and
the outbox relay report one :class:`PublishOutcome` per message, so that one
refused event never hides (or fails) the others of its batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BrokerUnavailable, ConfirmTimeout, EventTooLarge, PublishError
from ..events import DomainEvent, validate_routing_key
from .ordering import object_id_text
from .topology import OBJECT_ID_HEADER, VERSION_HEADER


@dataclass(frozen=True)
class OutgoingMessage:
    """An event body exactly as it goes on the wire, with its routing key and id.

    ``body`` is sent byte for byte (the outbox publishes its stored payload so).
    ``headers`` are extra AMQP headers, e.g. a trace context. ``injected``:
    they already hold what the header injectors added when the event was
    written (an outbox row), and publishers call no injector again.
    """

    routing_key: str
    body: bytes
    message_id: str | None = None
    headers: Mapping[str, Any] | None = field(default=None, compare=False)
    injected: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        validate_routing_key(self.routing_key)
        if not isinstance(self.body, bytes):
            raise TypeError(f"a message body must be bytes, not {type(self.body).__name__}")

    @classmethod
    def of_event(cls, event: DomainEvent) -> OutgoingMessage:
        """The message of ``event``: its JSON body, as 2.x-3.x write it, with the headers
        publishers then need not read from the body (object id, contract version)."""
        headers: dict[str, Any] = {}
        object_id = object_id_text(event.domain_object_id)
        if object_id is not None:
            headers[OBJECT_ID_HEADER] = object_id
        if event.version is not None:
            headers[VERSION_HEADER] = event.version
        body = event.to_json().encode("utf-8")
        return cls(event.routing_key, body, event.uuid_string, headers or None)


@dataclass(frozen=True)
class PublishOutcome:
    """What became of one message: confirmed by the broker, or the error why not."""

    message: OutgoingMessage
    error: BaseException | None = None

    @property
    def confirmed(self) -> bool:
        return self.error is None


def not_sent() -> PublishError:
    """The error of each message given to a publisher without a broker (``None``)."""
    return PublishError("no broker configured (connection_settings=None): not sent")


def naming(routing_key: str, message_id: str | None) -> str:
    """How an error names a message: by its id when it has one."""
    if message_id is None:
        return f"an event for {routing_key!r}"
    return f"event {message_id} ({routing_key})"


def outage_outlasted(masked_url: str, what: str, last_error: str = "") -> BrokerUnavailable:
    """The error of a publish whose deadline passed while the lost connection was down.

    ``last_error``: why the last reconnect failed, where that says more than "down"
    (a password rotated, a vhost deleted); it must hold no password.
    """
    why = f" The last attempt: {last_error}" if last_error else ""
    return BrokerUnavailable(
        f"lost the connection to RabbitMQ at {masked_url} and could not reconnect in time "
        f"to publish {what}; it may not have been stored. Is RabbitMQ running? Raise "
        f"publish_timeout to ride out longer outages.{why}"
    )


def confirm_timed_out(masked_url: str, what: str, blocked_reason: str | None) -> ConfirmTimeout:
    """The error of a publish whose confirm did not come in time on a live connection.

    ``blocked_reason``: what RabbitMQ said when it blocked publishers, where the
    driver can tell (a memory or disk alarm blocks them until it clears).
    """
    if blocked_reason is not None:
        return ConfirmTimeout(
            f"RabbitMQ at {masked_url} is blocking publishers ({blocked_reason}: a memory or "
            f"disk alarm), so {what} was not confirmed in time; free memory or disk on the broker"
        )
    return ConfirmTimeout(
        f"RabbitMQ at {masked_url} did not confirm {what} in time; it may or may not have "
        "been stored. A memory or disk alarm on the broker blocks publishers until it clears "
        "(rabbitmq-diagnostics alarms)."
    )


#: How RabbitMQ words a publish over ``max_message_size`` when it closes the channel
#: (406 PRECONDITION_FAILED); "configured" is missing when the limit is the built-in one.
_OVER_MAX_SIZE = re.compile(r"message size (\d+) is larger than (?:configured )?max size (\d+)")


def size_limit_in(reply_text: str) -> int | None:
    """The broker's ``max_message_size`` if ``reply_text`` says a message exceeded it.

    >>> size_limit_in("PRECONDITION_FAILED - message size 2097152 is larger than "
    ...               "configured max size 1048576")
    1048576
    """
    match = _OVER_MAX_SIZE.search(reply_text)
    return int(match.group(2)) if match else None


def over_size_limit(
    limit: int | None, body: bytes, where: str, routing_key: str, message_id: str | None
) -> EventTooLarge | None:
    """The error of a body over the broker's known max_message_size (None: it may go)."""
    if limit is None or len(body) <= limit:
        return None
    return too_large(where, naming(routing_key, message_id), len(body), limit)


def too_large(where: str, what: str, size: int, limit: int) -> EventTooLarge:
    """The error of a message the broker refuses for its size: it fails alone, at once.

    ``where``: the broker in words, "RabbitMQ at <url with the password masked>".
    """
    return EventTooLarge(
        f"{what} is {size} bytes, larger than the max_message_size of {where} "
        f"({limit} bytes): it was not sent and sending it again cannot "
        "succeed. Keep large payloads elsewhere (a blob store) and publish a reference, or "
        "raise max_message_size in rabbitmq.conf (RabbitMQ 4.x: 16 MiB by default).",
        size=size,
        limit=limit,
    )
