"""Every exception the library raises, in one shallow hierarchy.

Catch :class:`DomainEventBrokerError` for anything that went wrong with the
broker or an event. :class:`Retry` is not an error: a handler raises it to ask
for a delayed retry.
"""

from __future__ import annotations

import math

from pika.exceptions import AMQPConnectionError

#: The longest retry delay: RabbitMQ takes a message TTL of at most 2**32 - 1 ms.
MAX_RETRY_DELAY = (2**32 - 1) // 1000


class DomainEventBrokerError(Exception):
    """Base class of the errors raised by domain-event-broker."""


class BrokerUnavailable(DomainEventBrokerError, AMQPConnectionError, ConnectionError):
    """RabbitMQ cannot be reached, or the connection was lost and not regained in time.

    Also a ``pika.exceptions.AMQPConnectionError``, which releases 2.x-3.x let
    through: code that catches that keeps catching it.
    """

    def __str__(self) -> str:
        # pika's AMQPConnectionError formats its args its own way; ours is the message.
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class PublishError(DomainEventBrokerError):
    """The broker did not confirm an event: it refused it, or no confirm came in time."""


class EventRefused(PublishError):
    """The broker refused this event (basic.nack, a queue limit), or it cannot be sent at all.

    About one event: sending it again as it is may well fail again.
    """


class EventTooLarge(EventRefused):
    """The event is larger than the broker's ``max_message_size``: it fails alone, at once.

    Sending it again cannot succeed; the other events of the publisher are not held up.
    ``size`` and ``limit`` (bytes), when known, say by how much: the outbox parks
    such a row at once with them as its reason.
    """

    def __init__(self, *args: object, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(*args)
        self.size = size
        self.limit = limit


class ConfirmTimeout(PublishError):
    """No confirm came in time: the broker is slow or blocks publishers (a memory or disk alarm).

    About the broker, not the event: it may or may not have been stored, and
    sending it again later (at-least-once) is right.
    """


class TopologyMismatch(DomainEventBrokerError):
    """A queue or exchange exists on the broker with other properties than declared."""


class AccessRefused(TopologyMismatch):
    """RabbitMQ refused the user access to one of the subscriber's queues or exchanges (403).

    The message names the queue and the permissions to grant. A retry refused so goes
    back to its queue after a pause, until the permission is granted.
    """


class PluginMissing(TopologyMismatch):
    """The broker lacks a plugin the subscriber needs; the message names the command enabling it."""


class InvalidRoutingKey(DomainEventBrokerError, ValueError):
    """A routing key (or binding key) that RabbitMQ would not route as meant."""


class EventNotSerializable(DomainEventBrokerError, TypeError):
    """Event data that cannot be written as JSON."""


class InvalidEvent(DomainEventBrokerError, ValueError):
    """A message body that is not a domain event (not JSON, or not an object)."""


class NoBroker(DomainEventBrokerError, ValueError):
    """Something that must publish was given no broker (``connection_settings=None``).

    The outbox relay refuses to run then: marking rows sent without publishing
    them would lose every event.
    """


class Retry(Exception):
    """Raise in an event handler to handle the same event again after ``delay`` seconds.

    ``event.retries`` counts the earlier deliveries of the event to this
    subscriber; once it reaches the subscriber's ``max_retries`` the event is
    dead-lettered (or dropped when the subscriber has no dead-letter queue).

    >>> def sync_user(event):
    ...     raise Retry(5.0 ** event.retries)  # 1 s, 5 s, 25 s
    """

    def __init__(self, delay: float = 10.0) -> None:
        super().__init__(delay)
        # Checked here, in the handler, so that no delay can reach the broker
        # (or the I/O thread) as a TTL it refuses.
        try:
            seconds = float(delay)
        except (TypeError, ValueError):
            raise TypeError(
                f"Retry delay must be a number of seconds, not {type(delay).__name__}"
            ) from None
        if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_RETRY_DELAY:
            raise ValueError(
                f"Retry delay must be a finite number of seconds from 0 to {MAX_RETRY_DELAY} "
                f"(RabbitMQ's longest message TTL), got {delay!r}"
            )
        self.delay = seconds
