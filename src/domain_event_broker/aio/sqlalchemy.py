"""The transactional outbox from asyncio code: ``await add_event(session, ...)``.

The row is the one :func:`domain_event_broker.sqlalchemy.add_event` writes (the
same validation and payload, from :func:`~domain_event_broker.outbox.store.outbox_entry`);
the relay (``domain-events-relay``) publishes it once the transaction commits.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..events import DomainEvent
from ..outbox.store import outbox_entry
from ..sqlalchemy.tables import outbox_insert, outbox_table

log = logging.getLogger(__name__)


async def add_event(
    session: AsyncSession | AsyncConnection,
    routing_key: str,
    data: Any = None,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
    *,
    table: Table = outbox_table,
) -> DomainEvent:
    """Write a domain event to the outbox in the async session's current transaction.

    It is published by the relay once the transaction commits, and never if it
    rolls back. A bad event (routing key, data that is not JSON) raises here,
    before anything is written.

    >>> async with AsyncSession(engine) as session, session.begin():  # doctest: +SKIP
    ...     session.add(Order(id=7))
    ...     await add_event(session, "order.placed", {"order_id": 7})
    """
    entry = outbox_entry(routing_key, data, domain_object_id, uuid_string, timestamp)
    await session.execute(outbox_insert(table, entry))
    log.debug("event %s (%s) added to the outbox", entry.uuid_string, entry.routing_key)
    return entry.event
