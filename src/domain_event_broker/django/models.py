"""The transactional outbox and the inbox of handled events.

Table and column names are the ones the SQLAlchemy tables use
(:mod:`domain_event_broker.sqlalchemy`), so either relay can serve either.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from ..outbox.store import INBOX_TABLE, OUTBOX_TABLE


class OutboxEvent(models.Model):
    """An event written in the business transaction, waiting for the relay (``sent_at`` NULL)."""

    id = models.BigAutoField(primary_key=True)
    routing_key = models.CharField(max_length=255)
    uuid_string = models.CharField(max_length=64)
    #: The exact JSON body that goes on the wire.
    payload = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    #: How many times the broker refused the event.
    attempts = models.PositiveIntegerField(default=0)
    #: Why the broker last refused it.
    last_error = models.TextField(null=True, blank=True)
    #: The relay does not try it again before this time.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: When the relay gave up on it (too many refusals); it waits for retry or discard.
    parked_at = models.DateTimeField(null=True, blank=True)
    #: AMQP headers taken when the row was written (JSON: the trace context), sent with it.
    headers = models.TextField(null=True, blank=True)

    class Meta:
        db_table = OUTBOX_TABLE
        verbose_name = "outbox event"
        # Serves both "pending rows in order" (sent_at IS NULL ORDER BY id) and
        # the retention clean-up (sent_at < cutoff), on every database.
        indexes = [models.Index(fields=["sent_at", "id"], name="domain_event_outbox_pending")]

    @property
    def state(self) -> str:
        """``sent``, ``parked``, ``retrying`` (refused, to be tried again) or ``pending``."""
        if self.sent_at:
            return "sent"
        if self.parked_at:
            return "parked"
        return "retrying" if self.attempts else "pending"

    def __str__(self) -> str:
        state = f"sent {self.sent_at:%Y-%m-%d %H:%M:%S}" if self.sent_at else self.state
        return f"{self.routing_key} {self.uuid_string} ({state})"


class ProcessedEvent(models.Model):
    """That subscriber ``subscriber`` handled event ``uuid_string`` (the inbox)."""

    id = models.BigAutoField(primary_key=True)
    subscriber = models.CharField(max_length=255)
    uuid_string = models.CharField(max_length=64)
    processed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = INBOX_TABLE
        verbose_name = "processed event"
        constraints = [
            models.UniqueConstraint(
                fields=["subscriber", "uuid_string"], name="domain_event_inbox_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subscriber}: {self.uuid_string}"
