"""Outbox rows keep the headers (the trace context) taken when they were written."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies: list[tuple[str, str]] = [("domain_event_broker_django", "0002_outbox_attempts")]

    operations: list[Any] = [
        migrations.AddField(
            model_name="outboxevent",
            name="headers",
            field=models.TextField(blank=True, null=True),
        ),
    ]
