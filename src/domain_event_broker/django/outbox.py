"""The Django side of the outbox relay: the :class:`OutboxEvent` table as an outbox store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Count, DateTimeField, ExpressionWrapper, Min, Q
from django.db.models.functions import Now
from django.utils import timezone

from ..outbox.relay import OutboxRelay
from ..outbox.stats import RelayStats
from ..outbox.store import OutboxStatus, ParkedEvent, PendingEvent, PublishBatch

#: Rows the relay may still send (not sent, not parked).
PENDING = Q(sent_at__isnull=True, parked_at__isnull=True)


class DjangoOutboxStore:
    """Pending rows of :class:`~domain_event_broker.django.models.OutboxEvent` in one database.

    Rows are locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` where the
    database has it (PostgreSQL, MySQL 8, Oracle). SQLite has no row locks:
    run one relay there.
    """

    #: Django's connections belong to threads: a reader on a short-lived thread
    #: (a metrics scrape) closes its own after use.
    connections_per_thread = True

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using
        self.description = f"Django database {using!r}"

    def relay_batch(self, limit: int, publish: PublishBatch) -> int:
        from .models import OutboxEvent

        objects = OutboxEvent.objects.using(self.using)
        # The database's clock, not this host's: relays on hosts whose clocks
        # differ agree on when a row is due.
        now = Now()
        with transaction.atomic(using=self.using):
            rows = list(
                objects.filter(PENDING)
                .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
                .order_by("id")
                .select_for_update(skip_locked=True)
                .values_list("id", "payload", "routing_key", "uuid_string", "attempts", "headers")[
                    :limit
                ]
            )
            if not rows:
                return 0
            result = publish([PendingEvent(*row) for row in rows])
            if result.sent:
                objects.filter(id__in=result.sent).update(sent_at=now)
            for refusal in result.refused:
                objects.filter(id=refusal.id).update(
                    attempts=refusal.attempts,
                    last_error=refusal.error,
                    next_attempt_at=None
                    if refusal.delay is None
                    else ExpressionWrapper(
                        now + timedelta(seconds=refusal.delay), output_field=DateTimeField()
                    ),
                    parked_at=now if refusal.delay is None else None,
                )
        return len(rows)

    def delete_sent_before(self, cutoff: datetime) -> int:
        from .models import OutboxEvent

        if not django_settings.USE_TZ:
            cutoff = timezone.make_naive(cutoff)
        deleted, _ = OutboxEvent.objects.using(self.using).filter(sent_at__lt=cutoff).delete()
        return int(deleted)

    def count_pending(self) -> int:
        from .models import OutboxEvent

        return int(OutboxEvent.objects.using(self.using).filter(PENDING).count())

    def status(self) -> OutboxStatus:
        from .models import OutboxEvent

        objects = OutboxEvent.objects.using(self.using)
        pending = objects.filter(PENDING).aggregate(
            pending=Count("id"), retrying=Count("next_attempt_at"), oldest=Min("created_at")
        )
        parked = objects.filter(parked_at__isnull=False).count()
        return OutboxStatus(
            int(pending["pending"]),
            int(pending["retrying"]),
            int(parked),
            _aware(pending["oldest"]),
        )

    def parked(self, limit: int) -> list[ParkedEvent]:
        from .models import OutboxEvent

        rows = (
            OutboxEvent.objects.using(self.using)
            .filter(parked_at__isnull=False)
            .order_by("id")[:limit]
        )
        return [
            ParkedEvent(
                row.id,
                row.routing_key,
                row.uuid_string,
                row.attempts,
                row.last_error,
                _aware(row.created_at),
                _aware(row.parked_at),
            )
            for row in rows
        ]

    def retry_parked(self, ids: Sequence[int] | None) -> int:
        return int(self._parked(ids).update(attempts=0, next_attempt_at=None, parked_at=None))

    def discard_parked(self, ids: Sequence[int] | None) -> int:
        deleted, _ = self._parked(ids).delete()
        return int(deleted)

    def _parked(self, ids: Sequence[int] | None) -> Any:
        from .models import OutboxEvent

        parked = OutboxEvent.objects.using(self.using).filter(parked_at__isnull=False)
        return parked if ids is None else parked.filter(id__in=list(ids))

    def close(self) -> None:
        connections[self.using].close()


def _aware(moment: Any) -> Any:
    # Without USE_TZ Django hands back naive local times.
    if moment is None or timezone.is_aware(moment):
        return moment
    return timezone.make_aware(moment)


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
