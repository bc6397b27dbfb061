"""The SQLAlchemy outbox: add events to the session's transaction; relay them to RabbitMQ."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    create_engine,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from ..events import DomainEvent
from ..outbox.relay import OutboxRelay
from ..outbox.stats import RelayStats
from ..outbox.store import (
    OutboxStatus,
    ParkedEvent,
    PendingEvent,
    PublishBatch,
    outbox_entry,
)
from .tables import outbox_insert, outbox_table, utc_now

log = logging.getLogger(__name__)


def add_event(
    session: Session | Connection,
    routing_key: str,
    data: Any = None,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
    *,
    table: Table = outbox_table,
) -> DomainEvent:
    """Write a domain event to the outbox in the session's current transaction.

    It is published by the relay once the transaction commits, and never if
    it rolls back. A bad event (routing key, data that is not JSON) raises
    here, before anything is written.

    >>> with Session(engine) as session, session.begin():  # doctest: +SKIP
    ...     session.add(Order(id=7))
    ...     add_event(session, "order.placed", {"order_id": 7})

    Returns the event (its ``uuid_string`` identifies it on the wire).
    """
    entry = outbox_entry(routing_key, data, domain_object_id, uuid_string, timestamp)
    session.execute(outbox_insert(table, entry))
    log.debug("event %s (%s) added to the outbox", entry.uuid_string, entry.routing_key)
    return entry.event


class SQLAlchemyOutboxStore:
    """The outbox table of one database, as the relay sees it.

    Rows are locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL
    and MySQL 8; SQLite has no row locks, so run one relay there.
    """

    def __init__(self, engine: Engine | str, *, table: Table = outbox_table) -> None:
        self._owns_engine = isinstance(engine, str)
        self.engine = create_engine(engine) if isinstance(engine, str) else engine
        self.table = table
        self.description = f"database {self.engine.url.render_as_string(hide_password=True)}"

    def relay_batch(self, limit: int, publish: PublishBatch) -> int:
        table = self.table
        with self.engine.begin() as connection:
            now = _database_now(connection)
            rows = connection.execute(
                select(
                    table.c.id,
                    table.c.payload,
                    table.c.routing_key,
                    table.c.uuid_string,
                    table.c.attempts,
                    table.c.headers,
                )
                .where(
                    self._pending(),
                    or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
                )
                .order_by(table.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            pending = [
                PendingEvent(
                    row.id, row.payload, row.routing_key, row.uuid_string, row.attempts, row.headers
                )
                for row in rows
            ]
            result = publish(pending)
            if result.sent:
                connection.execute(
                    update(table).where(table.c.id.in_(result.sent)).values(sent_at=now)
                )
            for refusal in result.refused:
                connection.execute(
                    update(table)
                    .where(table.c.id == refusal.id)
                    .values(
                        attempts=refusal.attempts,
                        last_error=refusal.error,
                        next_attempt_at=None
                        if refusal.delay is None
                        else now + timedelta(seconds=refusal.delay),
                        parked_at=now if refusal.delay is None else None,
                    )
                )
        return len(pending)

    def delete_sent_before(self, cutoff: datetime) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(delete(self.table).where(self.table.c.sent_at < cutoff))
        return int(result.rowcount)

    def count_pending(self) -> int:
        with self.engine.connect() as connection:
            count = connection.execute(
                select(func.count()).select_from(self.table).where(self._pending())
            ).scalar_one()
        return int(count)

    def status(self) -> OutboxStatus:
        table = self.table
        with self.engine.connect() as connection:
            pending, retrying, oldest = connection.execute(
                select(
                    func.count(),
                    func.count(table.c.next_attempt_at),
                    func.min(table.c.created_at),
                ).where(self._pending())
            ).one()
            parked = connection.execute(
                select(func.count()).select_from(table).where(table.c.parked_at.is_not(None))
            ).scalar_one()
        return OutboxStatus(int(pending), int(retrying), int(parked), _aware(oldest))

    def parked(self, limit: int) -> list[ParkedEvent]:
        table = self.table
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    table.c.id,
                    table.c.routing_key,
                    table.c.uuid_string,
                    table.c.attempts,
                    table.c.last_error,
                    table.c.created_at,
                    table.c.parked_at,
                )
                .where(table.c.parked_at.is_not(None))
                .order_by(table.c.id)
                .limit(limit)
            ).all()
        return [
            ParkedEvent(
                row.id,
                row.routing_key,
                row.uuid_string,
                row.attempts,
                row.last_error,
                _utc(row.created_at),
                _utc(row.parked_at),
            )
            for row in rows
        ]

    def retry_parked(self, ids: Sequence[int] | None) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(
                update(self.table)
                .where(self._parked(ids))
                .values(attempts=0, next_attempt_at=None, parked_at=None)
            )
        return int(result.rowcount)

    def discard_parked(self, ids: Sequence[int] | None) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(delete(self.table).where(self._parked(ids)))
        return int(result.rowcount)

    def _pending(self) -> ColumnElement[bool]:
        return and_(self.table.c.sent_at.is_(None), self.table.c.parked_at.is_(None))

    def _parked(self, ids: Sequence[int] | None) -> ColumnElement[bool]:
        parked = self.table.c.parked_at.is_not(None)
        return parked if ids is None else and_(parked, self.table.c.id.in_(list(ids)))

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


def _database_now(connection: Connection) -> datetime:
    """The database's clock (``now()``: the transaction's start), so that relays on hosts
    whose clocks differ agree on when a row is due; SQLite's is this host's (a file has
    no other). Read once per batch as a value: date arithmetic in SQL differs by database."""
    if connection.dialect.name == "sqlite":
        return utc_now()
    return _utc(connection.execute(select(func.now())).scalar_one())


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time in these tables is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def relay_events(
    engine: Engine | str,
    connection_settings: str | None = "",
    *,
    once: bool = False,
    timeout: float | None = None,
    table: Table = outbox_table,
    **options: Any,
) -> RelayStats:
    """Publish the outbox rows of ``engine`` (an Engine or a database URL).

    Runs until ``timeout`` seconds passed or, with ``once``, nothing is
    pending. ``options`` go to :class:`~domain_event_broker.outbox.OutboxRelay`
    (``batch_size``, ``poll_interval``, ``retention``, ...). The command
    ``domain-events-relay`` runs this.
    """
    store = SQLAlchemyOutboxStore(engine, table=table)
    with OutboxRelay(store, connection_settings, **options) as relay:
        return relay.run(once=once, timeout=timeout)
