"""Transactional outbox: events written in the business transaction, published by a relay.

Framework-neutral parts only; the tables and helpers live in
:mod:`domain_event_broker.django` and :mod:`domain_event_broker.sqlalchemy`.
"""

from .relay import OutboxRelay, RelayStats, stop_on_signals
from .store import OutboxEntry, OutboxStore, PendingEvent, outbox_entry

__all__ = [
    "OutboxEntry",
    "OutboxRelay",
    "OutboxStore",
    "PendingEvent",
    "RelayStats",
    "outbox_entry",
    "stop_on_signals",
]
