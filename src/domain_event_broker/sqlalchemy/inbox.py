"""Idempotent handlers with SQLAlchemy: remember handled events in the handler's transaction."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..events import DomainEvent
from .tables import inbox_table, utc_now

log = logging.getLogger(__name__)

Result = TypeVar("Result")


def process_once(
    session: Session, subscriber: str, event: DomainEvent, *, table: Table = inbox_table
) -> bool:
    """Record that ``subscriber`` handles ``event``; ``False`` when it already did.

    The record is written in the session's transaction. Call it before the
    handler's own writes: the record commits or rolls back with them, so a
    redelivered event is handled once, and a handler that failed is handled
    again.

    >>> with Session(engine) as session, session.begin():  # doctest: +SKIP
    ...     if process_once(session, "welcome-mailer", event):
    ...         session.add(Mail(user_id=event.data["user_id"]))
    """
    values = {
        "subscriber": subscriber,
        "uuid_string": event.uuid_string,
        "processed_at": utc_now(),
    }
    dialect = session.connection().dialect.name
    if dialect in ("postgresql", "sqlite"):
        # INSERT ... ON CONFLICT DO NOTHING: a duplicate does not abort the
        # transaction, and on PostgreSQL a concurrent duplicate waits for the
        # first to commit or roll back.
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(table)
            .values(values)
            .on_conflict_do_nothing(index_elements=["subscriber", "uuid_string"])
            .returning(table.c.id)
        )
        # A row comes back only when it was inserted (rowcount is not reliable here).
        recorded = session.execute(statement).first() is not None
    else:
        try:
            with session.begin_nested():
                session.execute(table.insert().values(values))
            recorded = True
        except IntegrityError:
            recorded = False
    if not recorded:
        log.info(
            "subscriber %s already handled event %s (%s); skipping it",
            subscriber,
            event.uuid_string,
            event.routing_key,
        )
    return recorded


def idempotent(
    session_factory: sessionmaker[Session], subscriber: str
) -> Callable[[Callable[[DomainEvent, Session], Result]], Callable[[DomainEvent], Result | None]]:
    """Turn ``handler(event, session)`` into a handler that runs at most once per event.

    Each event gets a session and a transaction of its own; the handler's
    writes and the inbox record commit together.

    >>> @idempotent(Session, "welcome-mailer")  # doctest: +SKIP
    ... def send_welcome_mail(event, session):
    ...     session.add(Mail(user_id=event.data["user_id"]))
    >>> subscriber.register(send_welcome_mail, "welcome-mailer", ["user.registered"])
    ... # doctest: +SKIP
    """

    def decorate(
        handler: Callable[[DomainEvent, Session], Result],
    ) -> Callable[[DomainEvent], Result | None]:
        @functools.wraps(handler)
        def handle_once(event: DomainEvent) -> Result | None:
            with session_factory() as session, session.begin():
                if not process_once(session, subscriber, event):
                    return None
                return handler(event, session)

        return handle_once

    return decorate
