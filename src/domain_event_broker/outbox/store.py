"""What the relay needs from a database, and how an event is written into an outbox.

The outbox table is the same for every framework (Django, SQLAlchemy):

=============  ==============================================================
``id``         increasing integer; the relay sends rows in this order
``routing_key`` the event's routing key (for people and indexes)
``uuid_string`` the event's id (for people looking for one event)
``payload``    the exact JSON body that goes on the wire
``created_at`` when the row was written
``sent_at``    when the broker confirmed it; ``NULL`` while pending
=============  ==============================================================

Storing the finished wire body (rather than the data alone) means a row is
validated and serialised once, in the caller's transaction, and a row sent
twice is the same event twice, with the same ``uuid_string`` and timestamp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..events import DomainEvent, validate_routing_key

#: Table names shared by the Django models and the SQLAlchemy tables, so one
#: relay can serve either.
OUTBOX_TABLE = "domain_event_outbox"
INBOX_TABLE = "domain_event_inbox"


@dataclass(frozen=True)
class PendingEvent:
    """One outbox row that the broker has not confirmed yet."""

    id: int
    payload: str

    def event(self) -> DomainEvent:
        """The stored event, with its original ``uuid_string`` and ``timestamp``."""
        return DomainEvent.from_json(self.payload)


@dataclass(frozen=True)
class OutboxEntry:
    """A validated event, ready to be written as an outbox row."""

    event: DomainEvent
    payload: str

    @property
    def routing_key(self) -> str:
        return self.event.routing_key

    @property
    def uuid_string(self) -> str:
        return self.event.uuid_string


def outbox_entry(
    routing_key: str,
    data: Any,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
) -> OutboxEntry:
    """Build, validate and serialise an event for the outbox.

    Raises :class:`~domain_event_broker.errors.InvalidRoutingKey` or
    :class:`~domain_event_broker.errors.EventNotSerializable` here, in the
    caller's transaction, so that a bad event rolls back with the change it is
    about instead of failing later in the relay.
    """
    event = DomainEvent(
        routing_key=validate_routing_key(routing_key),
        data=data,
        domain_object_id=domain_object_id,
        uuid_string=uuid_string,
        timestamp=timestamp,
    )
    return OutboxEntry(event, event.to_json())


#: Called by a store with the rows it locked; returns once the broker confirmed
#: all of them, or raises (then the store must leave them pending).
PublishBatch = Callable[[Sequence[PendingEvent]], None]


class OutboxStore(Protocol):
    """The database side of the relay, one implementation per framework."""

    #: Shown in logs, e.g. ``"django database 'default'"``.
    description: str

    def relay_batch(self, limit: int, publish: PublishBatch) -> int:
        """Send up to ``limit`` pending rows, oldest first; return how many were sent.

        In one database transaction: lock the oldest pending rows that no
        other relay holds (``SELECT ... FOR UPDATE SKIP LOCKED``), call
        ``publish(rows)``, mark them sent, commit. When ``publish`` raises, the
        transaction rolls back and the rows stay pending.
        """
        ...

    def delete_sent_before(self, cutoff: datetime) -> int:
        """Delete rows sent before ``cutoff``; return how many."""
        ...

    def count_pending(self) -> int:
        """How many rows wait to be sent."""
        ...

    def close(self) -> None:
        """Release database connections held by this thread."""
        ...
