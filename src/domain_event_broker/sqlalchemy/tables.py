"""The outbox and inbox tables for SQLAlchemy, the same as the Django models'.

Create them with ``metadata.create_all(engine)``, or let Alembic see them::

    # env.py
    from domain_event_broker.sqlalchemy import metadata as domain_event_metadata
    target_metadata = [Base.metadata, domain_event_metadata]

Or copy them into your own metadata: ``outbox_table.to_metadata(Base.metadata)``.

Upgrading an outbox table made by an earlier release: the relay now keeps,
per row, its refused attempts, last error, next attempt and when it was
parked. Add the columns (PostgreSQL; on SQLite one ``ALTER TABLE ... ADD
COLUMN`` per column, with ``DATETIME`` for the times)::

    ALTER TABLE domain_event_outbox
        ADD COLUMN attempts integer NOT NULL DEFAULT 0,
        ADD COLUMN last_error text,
        ADD COLUMN next_attempt_at timestamp with time zone,
        ADD COLUMN parked_at timestamp with time zone;

Then (any database) the column that keeps the trace context taken when a row
is written, which the relay publishes the row with::

    ALTER TABLE domain_event_outbox ADD COLUMN headers text;

(:data:`OUTBOX_UPGRADE_DDL` and :data:`OUTBOX_HEADERS_UPGRADE_DDL` hold the
statements.) Django users run ``manage.py migrate`` instead.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql.dml import Insert

from ..outbox.store import INBOX_TABLE, OUTBOX_TABLE, OutboxEntry

metadata = MetaData()

# SQLite numbers rows only for an INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


#: Events written in the business transaction; ``sent_at`` is NULL until the relay sent them.
outbox_table = Table(
    OUTBOX_TABLE,
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("routing_key", String(255), nullable=False),
    Column("uuid_string", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utc_now),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # How often the broker refused the event, why last, when to try again,
    # and when the relay gave up on it (parked).
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("parked_at", DateTime(timezone=True), nullable=True),
    # AMQP headers taken when the row was written (JSON: the trace context).
    Column("headers", Text, nullable=True),
    Index("domain_event_outbox_pending", "sent_at", "id"),
)

#: Adds the columns of this release to an outbox table made by an earlier one (PostgreSQL).
OUTBOX_UPGRADE_DDL = """\
ALTER TABLE domain_event_outbox
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN next_attempt_at timestamp with time zone,
    ADD COLUMN parked_at timestamp with time zone"""

#: Adds the ``headers`` column (the trace context taken when a row is written)
#: to an outbox table that has the columns above (any database).
OUTBOX_HEADERS_UPGRADE_DDL = "ALTER TABLE domain_event_outbox ADD COLUMN headers text"

#: Which subscriber handled which event (for idempotent handlers).
inbox_table = Table(
    INBOX_TABLE,
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("subscriber", String(255), nullable=False),
    Column("uuid_string", String(64), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, default=utc_now),
    UniqueConstraint("subscriber", "uuid_string", name="domain_event_inbox_once"),
)


def outbox_insert(table: Table, entry: OutboxEntry) -> Insert:
    """The row of ``entry``: only these columns (others, added later, have defaults)."""
    return table.insert().values(
        routing_key=entry.routing_key,
        uuid_string=entry.uuid_string,
        payload=entry.payload,
        headers=entry.headers(),
        created_at=utc_now(),
    )
