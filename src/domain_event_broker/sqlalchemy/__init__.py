"""SQLAlchemy integration (Flask, FastAPI, scripts): the transactional outbox and the inbox.

Write events with :func:`add_event` in the session's transaction, run the relay
(``domain-events-relay --database-url ...`` or :func:`relay_events`), and make
handlers idempotent with :func:`process_once` / :func:`idempotent`.
"""

from __future__ import annotations

try:
    import sqlalchemy  # noqa: F401
except ModuleNotFoundError as error:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "domain_event_broker.sqlalchemy needs SQLAlchemy: "
        "pip install 'domain-event-broker[sqlalchemy]'"
    ) from error

from .inbox import idempotent, process_once
from .outbox import SQLAlchemyOutboxStore, add_event, relay_events
from .tables import inbox_table, metadata, outbox_table

__all__ = [
    "SQLAlchemyOutboxStore",
    "add_event",
    "idempotent",
    "inbox_table",
    "metadata",
    "outbox_table",
    "process_once",
    "relay_events",
]
