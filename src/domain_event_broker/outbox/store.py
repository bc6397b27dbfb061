"""What the relay needs from a database, and how an event is written into an outbox.

The outbox table is the same for every framework (Django, SQLAlchemy):

=============  ==============================================================
``id``         increasing integer; the relay sends rows in this order
``routing_key`` the event's routing key (for people and indexes)
``uuid_string`` the event's id (for people looking for one event)
``payload``    the exact JSON body that goes on the wire
``created_at`` when the row was written
``sent_at``    when the broker confirmed it; ``NULL`` while pending
``attempts``   how many times the broker refused the event (0 at first)
``last_error`` why the broker last refused it
``next_attempt_at`` not tried again before this time (``NULL``: at once)
``parked_at``  when the relay gave up after too many refusals (``NULL``: not parked)
``headers``    AMQP headers taken when the row was written (a JSON object: the
               W3C trace context while tracing is on), ``NULL`` when none
=============  ==============================================================

A row is *pending* while ``sent_at`` and ``parked_at`` are ``NULL``; the relay
takes it once ``next_attempt_at`` has passed. A *parked* row waits for an
operator: retry (pending again, attempts from 0) or discard (deleted).

Storing the finished wire body (rather than the data alone) means a row is
validated and serialised once, in the caller's transaction, and a row sent
twice is the same event twice, with the same ``uuid_string`` and timestamp.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .. import observability
from ..core.messages import OutgoingMessage
from ..events import DomainEvent, validate_routing_key
from .attempts import BatchResult

log = logging.getLogger(__name__)

#: Table names shared by the Django models and the SQLAlchemy tables, so one
#: relay can serve either.
OUTBOX_TABLE = "domain_event_outbox"
INBOX_TABLE = "domain_event_inbox"


@dataclass(frozen=True)
class PendingEvent:
    """One outbox row that the broker has not confirmed yet."""

    id: int
    payload: str
    routing_key: str
    uuid_string: str
    #: Refusals so far.
    attempts: int = 0
    #: The ``headers`` column: what the header injectors added when the row was written.
    headers: str | None = None

    def event(self) -> DomainEvent:
        """The stored event, with its original ``uuid_string`` and ``timestamp``."""
        return DomainEvent.from_json(self.payload)

    def message(self) -> OutgoingMessage:
        """The message to publish: the stored payload byte for byte, never re-serialised.

        Raises :class:`~domain_event_broker.errors.InvalidRoutingKey` for a
        routing key that RabbitMQ would not route as meant.
        """
        headers = decode_headers(self.headers, self.id)
        return OutgoingMessage(
            self.routing_key,
            self.payload.encode("utf-8"),
            self.uuid_string,
            headers,
            # Stored headers win: the publish continues the writer's trace, and
            # the relay adds no trace context of its own. A row written while
            # nothing injected headers (or before the column) gets the relay's.
            injected=headers is not None,
        )


def encode_headers(headers: Mapping[str, Any] | None) -> str | None:
    """The ``headers`` column's value for ``headers`` (JSON; ``None`` when empty)."""
    if not headers:
        return None
    # default=str: a header value JSON cannot hold is stored as its text.
    return json.dumps(dict(headers), separators=(",", ":"), sort_keys=True, default=str)


def decode_headers(text: str | None, row_id: int | None = None) -> dict[str, Any] | None:
    """The headers stored in a ``headers`` column; ``None`` when empty or unreadable."""
    if not text:
        return None
    try:
        headers = json.loads(text)
    except ValueError:
        headers = None
    if not isinstance(headers, dict):
        # The event still goes out (its payload is intact), without the trace context.
        log.warning("outbox row %s: stored headers are not a JSON object; ignored", row_id)
        return None
    return headers or None


@dataclass(frozen=True)
class ParkedEvent:
    """A row the relay gave up on, as an operator sees it."""

    id: int
    routing_key: str
    uuid_string: str
    attempts: int
    last_error: str | None
    created_at: datetime
    parked_at: datetime


@dataclass(frozen=True)
class OutboxStatus:
    """How the outbox is doing: what waits, what is parked, how old the oldest waiting row is."""

    #: Rows waiting to be sent (including those waiting for their next attempt).
    pending: int
    #: Of those, rows the broker refused at least once, waiting for their next attempt.
    retrying: int
    #: Rows the relay gave up on.
    parked: int
    #: When the oldest pending row was written (``None``: nothing pending).
    oldest_pending_at: datetime | None


@dataclass(frozen=True)
class OutboxEntry:
    """A validated event, ready to be written as an outbox row."""

    event: DomainEvent
    payload: str

    def headers(self) -> str | None:
        """The ``headers`` column's value, taken now, on the writer's thread.

        What the header injectors add (the trace context of the current span
        while OpenTelemetry tracing is on), as JSON; ``None`` when nothing does.
        """
        return encode_headers(observability.outbox_headers(self.routing_key, self.uuid_string))

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


#: Called by a store with the rows it locked; publishes them and says which
#: were sent, which were refused (and what to do with them) and which were not
#: tried. When it raises, the store must leave every row as it was.
PublishBatch = Callable[[Sequence[PendingEvent]], BatchResult]


class OutboxStore(Protocol):
    """The database side of the relay, one implementation per framework."""

    #: Shown in logs, e.g. ``"django database 'default'"``.
    description: str

    def relay_batch(self, limit: int, publish: PublishBatch) -> int:
        """Send up to ``limit`` due rows, oldest first; return how many rows were taken.

        In one database transaction: lock the oldest pending rows whose
        ``next_attempt_at`` has passed and that no other relay holds
        (``SELECT ... FOR UPDATE SKIP LOCKED``), call ``publish(rows)``, mark
        the sent ones sent, record each refusal (attempts, last error, next
        attempt or parked), commit. When ``publish`` raises, the transaction
        rolls back and the rows stay as they were.
        """
        ...

    def delete_sent_before(self, cutoff: datetime) -> int:
        """Delete rows sent before ``cutoff``; return how many."""
        ...

    def count_pending(self) -> int:
        """How many rows wait to be sent (parked ones excluded)."""
        ...

    def status(self) -> OutboxStatus:
        """Counts of pending and parked rows, and the oldest pending row's time."""
        ...

    def parked(self, limit: int) -> list[ParkedEvent]:
        """Up to ``limit`` parked rows, oldest first."""
        ...

    def retry_parked(self, ids: Sequence[int] | None) -> int:
        """Make parked rows (``None``: all) pending again, attempts from 0; return how many."""
        ...

    def discard_parked(self, ids: Sequence[int] | None) -> int:
        """Delete parked rows (``None``: all of them); return how many."""
        ...

    def close(self) -> None:
        """Release database connections held by this thread."""
        ...
