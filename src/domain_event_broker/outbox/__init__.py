"""Transactional outbox: events written in the business transaction, published by a relay.

Framework-neutral parts only; the tables and helpers live in
:mod:`domain_event_broker.django` and :mod:`domain_event_broker.sqlalchemy`.
"""

from ..errors import NoBroker
from .attempts import RetryPolicy
from .relay import OutboxRelay
from .running import serve_probes, stop_on_signals
from .stats import RelayStats
from .store import (
    OutboxEntry,
    OutboxStatus,
    OutboxStore,
    ParkedEvent,
    PendingEvent,
    outbox_entry,
)

__all__ = [
    "NoBroker",
    "OutboxEntry",
    "OutboxRelay",
    "OutboxStatus",
    "OutboxStore",
    "ParkedEvent",
    "PendingEvent",
    "RelayStats",
    "RetryPolicy",
    "outbox_entry",
    "serve_probes",
    "stop_on_signals",
]
