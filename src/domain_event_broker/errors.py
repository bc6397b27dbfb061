"""Every exception the library raises, in one shallow hierarchy.

Catch :class:`DomainEventBrokerError` for anything that went wrong with the
broker or an event. :class:`Retry` is not an error: a handler raises it to ask
for a delayed retry.
"""

from __future__ import annotations


class DomainEventBrokerError(Exception):
    """Base class of the errors raised by domain-event-broker."""


class BrokerUnavailable(DomainEventBrokerError, ConnectionError):
    """RabbitMQ cannot be reached, or the connection was lost and not regained in time."""


class PublishError(DomainEventBrokerError):
    """The broker did not confirm an event: it refused it, or no confirm came in time."""


class TopologyMismatch(DomainEventBrokerError):
    """A queue or exchange exists on the broker with other properties than declared."""


class InvalidRoutingKey(DomainEventBrokerError, ValueError):
    """A routing key (or binding key) that RabbitMQ would not route as meant."""


class EventNotSerializable(DomainEventBrokerError, TypeError):
    """Event data that cannot be written as JSON."""


class InvalidEvent(DomainEventBrokerError, ValueError):
    """A message body that is not a domain event (not JSON, or not an object)."""


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
        if delay < 0:
            raise ValueError(f"Retry delay must be >= 0 seconds, got {delay}")
        self.delay = float(delay)
