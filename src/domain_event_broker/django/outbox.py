"""The Django side of the outbox relay: the :class:`OutboxEvent` table as an outbox store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings as django_settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from ..outbox.relay import OutboxRelay, RelayStats
from ..outbox.store import PendingEvent, PublishBatch


class DjangoOutboxStore:
    """Pending rows of :class:`~domain_event_broker.django.models.OutboxEvent` in one database.

    Rows are locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` where the
    database has it (PostgreSQL, MySQL 8, Oracle). SQLite has no row locks:
    run one relay there.
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using
        self.description = f"Django database {using!r}"

    def relay_batch(self, limit: int, publish: PublishBatch) -> int:
        from .models import OutboxEvent

        with transaction.atomic(using=self.using):
            rows = list(
                OutboxEvent.objects.using(self.using)
                .filter(sent_at__isnull=True)
                .order_by("id")
                .select_for_update(skip_locked=True)
                .values_list("id", "payload")[:limit]
            )
            if not rows:
                return 0
            pending = [PendingEvent(id=row_id, payload=payload) for row_id, payload in rows]
            publish(pending)
            OutboxEvent.objects.using(self.using).filter(id__in=[row[0] for row in rows]).update(
                sent_at=timezone.now()
            )
        return len(pending)

    def delete_sent_before(self, cutoff: datetime) -> int:
        from .models import OutboxEvent

        if not django_settings.USE_TZ:
            cutoff = timezone.make_naive(cutoff)
        deleted, _ = OutboxEvent.objects.using(self.using).filter(sent_at__lt=cutoff).delete()
        return int(deleted)

    def count_pending(self) -> int:
        from .models import OutboxEvent

        return int(OutboxEvent.objects.using(self.using).filter(sent_at__isnull=True).count())

    def close(self) -> None:
        connections[self.using].close()


def relay_outbox(
    connection_settings: str | None = "",
    *,
    using: str = DEFAULT_DB_ALIAS,
    once: bool = False,
    timeout: float | None = None,
    **options: Any,
) -> RelayStats:
    """Publish the outbox rows of database ``using``; the library side of ``relay_domain_events``.

    Runs until ``timeout`` seconds passed or, with ``once``, nothing is
    pending. ``options`` go to :class:`~domain_event_broker.outbox.OutboxRelay`
    (``batch_size``, ``poll_interval``, ``retention``, ...).
    """
    with OutboxRelay(DjangoOutboxStore(using), connection_settings, **options) as relay:
        return relay.run(once=once, timeout=timeout)
