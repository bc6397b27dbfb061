"""Outbox rows keep their refused attempts, last error and next attempt, and can be parked."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies: list[tuple[str, str]] = [("domain_event_broker_django", "0001_initial")]

    operations: list[Any] = [
        migrations.AddField(
            model_name="outboxevent",
            name="attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="outboxevent",
            name="last_error",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="outboxevent",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="outboxevent",
            name="parked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
